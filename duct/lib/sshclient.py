"""One SSH client connection: host key check, authentication, then the connection service.

`SSHClientFactory` builds an `SSHClient` transport for an
`duct.lib.sshconfig.SSHTarget`.  Its
``ready`` Deferred fires with the `SSHConnection` once the server's host
key has been checked (`duct.lib.sshhostkeys`) and the user authenticated,
with a private key, a password or an SSH agent, in that order.  It fails
with `HostKeyError` or `AuthenticationFailed` when the connection ends
before that, and with `SSHError` for any other reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.conch.ssh.agent import SSHAgentClient
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.conch.ssh.userauth import SSHUserAuthClient
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.lib.quietlog import quietLogger
from duct.lib.sshconfig import SSHTarget
from duct.lib.sshhostkeys import HostKeyError, HostKeyPolicy, SSHError


class AuthenticationFailed(SSHError):
    """The server accepted none of the ways offered to log in."""


class _UserAuth(SSHUserAuthClient):
    """Offers the target's keys, then the agent's, then its password."""

    _log = quietLogger("duct.lib.sshclient._UserAuth")

    def __init__(self, target: SSHTarget, agent: SSHAgentClient | None, instance: Any) -> None:
        super().__init__(target.username.encode("utf-8"), instance)
        self.target = target
        self.agent = agent
        self._own = list(target.keys)
        self._agentKeys: list[Key] = []
        self._current: Key | None = None
        self._fromAgent = False
        self._passwordSent = False
        self.tried: list[str] = []

    def setAgentKeys(self, keys: list[Key]) -> None:
        self._agentKeys = keys

    def getPublicKey(self) -> Key | None:
        if self._own:
            self._current, self._fromAgent = self._own.pop(0), False
        elif self._agentKeys:
            self._current, self._fromAgent = self._agentKeys.pop(0), True
        else:
            return None
        self.tried.append("agent key" if self._fromAgent else "key")
        return self._current.public()

    def signData(self, publicKey: Key, signData: bytes) -> Deferred[bytes] | None:
        if self._fromAgent and self.agent is not None:
            signed: Deferred[bytes] = self.agent.signData(publicKey.blob(), signData)
            return signed
        return super().signData(publicKey, signData)

    def getPrivateKey(self) -> Deferred[Key]:
        if self._current is None or self._fromAgent:
            return fail(SSHError("no private key"))
        return succeed(self._current)

    def getPassword(self, prompt: bytes | None = None) -> Deferred[bytes] | None:
        if self.target.password is None or self._passwordSent:
            return None
        self._passwordSent = True
        self.tried.append("password")
        return succeed(self.target.password.encode("utf-8"))


class _Ready(SSHConnection):
    """The connection service; tells the transport once the server has started it."""

    _log = quietLogger("duct.lib.sshclient.SSHConnection")

    def __init__(self, client: SSHClient) -> None:
        super().__init__()
        self.client = client

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.client.connectionReady(self)


class SSHClient(SSHClientTransport):
    """A client transport for one target: ``ready`` fires with the authenticated connection."""

    log = Logger()
    _log = quietLogger("duct.lib.sshclient.SSHClient")

    def __init__(self, target: SSHTarget, policy: HostKeyPolicy, reactor: Any) -> None:
        self.target = target
        self.policy = policy
        self.reactor = reactor
        self.ready: Deferred[SSHConnection] = Deferred()
        self.closed: Deferred[None] = Deferred()
        """Fires once the TCP connection has closed."""
        self.connection: SSHConnection | None = None
        self.onLost: Callable[[Failure], None] | None = None
        """Called when the connection drops after it was ready."""
        self._failure: Failure | None = None
        self._userauth: _UserAuth | None = None
        self._agent: SSHAgentClient | None = None

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        try:
            self.policy.check(self.target.host, self.target.port, Key.fromString(hostKey))
        except HostKeyError:
            self._failure = Failure()
            return fail(self._failure)
        except Exception as e:  # a key conch cannot read, a known_hosts it cannot parse
            error = HostKeyError(f"ssh {self.target}: cannot check the host key: {e}")
            self._failure = Failure(error)
            return fail(self._failure)
        return succeed(True)

    def connectionSecure(self) -> None:
        d: Deferred[Any] = succeed(None)
        if self.target.agentSocket:
            d = self._connectAgent(self.target.agentSocket)
        d.addBoth(self._authenticate)

    def _connectAgent(self, path: str) -> Deferred[Any]:
        factory = Factory.forProtocol(SSHAgentClient)

        async def connect() -> list[Key]:
            agent = await UNIXClientEndpoint(self.reactor, path).connect(factory)
            self._agent = agent
            identities = await agent.requestIdentities()
            return [Key.fromString(blob) for blob, _comment in identities]

        return Deferred.fromCoroutine(connect())

    def _authenticate(self, agentKeys: Any) -> None:
        self._userauth = _UserAuth(self.target, self._agent, _Ready(self))
        if isinstance(agentKeys, list):
            self._userauth.setAgentKeys(agentKeys)
        elif isinstance(agentKeys, Failure):
            self.log.warn(
                "ssh {target}: the SSH agent at {path} cannot be used: {error}",
                target=str(self.target),
                path=self.target.agentSocket,
                error=agentKeys.getErrorMessage(),
            )
        self.requestService(self._userauth)

    @property
    def loggedInWith(self) -> str | None:
        """How the server let us in: ``key``, ``agent key`` or ``password``."""
        tried = self._userauth.tried if self._userauth is not None else []
        return tried[-1] if self.connection is not None and tried else None

    def connectionReady(self, connection: SSHConnection) -> None:
        self.connection = connection
        self._closeAgent()
        if not self.ready.called:
            self.ready.callback(connection)

    def _closeAgent(self) -> None:
        agent: Any = self._agent
        if agent is not None and agent.transport is not None:
            agent.transport.loseConnection()
        self._agent = None

    def connectionLost(self, reason: Failure | None = None) -> None:
        why = reason if reason is not None else Failure(SSHError("closed"))
        if self.ready.called and self.connection is not None:
            # First, so that no one is handed this connection while its channels close.
            self.log.info(
                "ssh {target}: connection lost: {why}",
                target=str(self.target),
                why=why.getErrorMessage(),
            )
            if self.onLost is not None:
                self.onLost(why)
        super().connectionLost(reason)
        self._closeAgent()
        if not self.closed.called:
            self.closed.callback(None)
        if self.ready.called:
            return
        if self._failure is not None:
            failure = self._failure
        elif self._userauth is not None:
            tried = ", ".join(self._userauth.tried) or "nothing to offer"
            failure = Failure(
                AuthenticationFailed(f"ssh {self.target}: authentication failed (tried: {tried})")
            )
        else:
            message = why.getErrorMessage()
            failure = Failure(
                SSHError(f"ssh {self.target}: connection lost while opening: {message}")
            )
        self.ready.errback(failure)


class SSHClientFactory(Factory):
    """Builds an `SSHClient` for each connection attempt to ``target``."""

    def __init__(self, target: SSHTarget, policy: HostKeyPolicy, reactor: Any) -> None:
        self.target = target
        self.policy = policy
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> SSHClient:
        client = SSHClient(self.target, self.policy, self.reactor)
        client.factory = self
        return client
