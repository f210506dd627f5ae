"""One shared SSH connection to a target, kept open and reopened with backoff.

`SSHHost` wraps a `twisted.application.internet.ClientService`: the
connection is opened on first use, and when it drops (or cannot be
opened) it is tried again after a delay that grows with each failure, as
the ``retryPolicy`` says.  A caller waits for the connection with
`connection`; while it is down, the caller's wait ends at the next
attempt's outcome.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import ClientService
from twisted.conch.ssh.connection import SSHConnection
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.lib.process import Timeout
from duct.lib.sshclient import SSHClient, SSHClientFactory
from duct.lib.sshconfig import SSHTarget
from duct.lib.sshhostkeys import HostKeyError, HostKeyPolicy

CONNECT_TIMEOUT = 30.0
"""Seconds a TCP connection to the server may take to open."""


class SSHHost:
    """The connection to one ``(host, port, username)``, shared by every source using it.

    Counts ``connects`` (connections opened), ``failures`` (attempts that
    failed) and ``hostKeyFailures`` (of those, the host key did not check).
    """

    log = Logger()

    def __init__(
        self, target: SSHTarget, reactor: Any, clock: Any, retryPolicy: Any = None
    ) -> None:
        self.target = target
        self.clock = clock
        self.policy = HostKeyPolicy(target.knownHosts, target.acceptUnknown)
        self.connects = 0
        self.failures = 0
        self.hostKeyFailures = 0
        self.client: SSHClient | None = None
        """The transport of the latest connection opened."""
        endpoint: Any = HostnameEndpoint(reactor, target.host, target.port, timeout=CONNECT_TIMEOUT)
        kwargs: dict[str, Any] = {"clock": clock, "prepareConnection": self._prepare}
        if retryPolicy is not None:
            kwargs["retryPolicy"] = retryPolicy
        factory: Any = SSHClientFactory(target, self.policy, reactor)
        self.service = ClientService(endpoint, factory, **kwargs)

    def _prepare(self, client: SSHClient) -> Deferred[SSHConnection]:
        """ClientService's hook: the connection counts once it is authenticated."""

        def opened(connection: SSHConnection) -> SSHConnection:
            self.connects += 1
            self.client = client
            self.log.info("ssh {target}: connected", target=str(self.target))
            return connection

        def failed(failure: Failure) -> Failure:
            self.failures += 1
            if failure.check(HostKeyError):
                self.hostKeyFailures += 1
            return failure

        return client.ready.addCallbacks(opened, failed)

    def connection(self, timeout: float | None = None) -> Deferred[SSHConnection]:
        """The open connection; or the failure of the next attempt to open it."""
        if not self.service.running:
            self.service.startService()
        d: Deferred[Any] = self.service.whenConnected(failAfterFailures=1)
        if timeout:
            d.addTimeout(timeout, self.clock, self._timedOut)
        return d.addCallback(lambda client: client.connection)

    def _timedOut(self, result: Any, timeout: float) -> Any:
        """addTimeout's hook: the wait for a connection ran out."""
        raise Timeout(f"ssh {self.target}: not connected after {timeout}s")

    def stop(self) -> Deferred[None]:
        """Close the connection and stop reopening it."""
        if not self.service.running:
            return succeed(None)
        d: Deferred[None] = self.service.stopService()
        return d
