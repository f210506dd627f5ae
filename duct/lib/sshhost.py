"""One shared SSH connection to a target, kept open and reopened with backoff.

`SSHHost` opens the connection the first time a caller asks for it, and
keeps it.  When it drops, or an attempt to open it fails, the next attempt
comes after the delay the ``retryPolicy`` gives for the number of
failures in a row (`twisted.application.internet.backoffPolicy`: from
about 1.5 s, growing to 60 s).  A caller that asks meanwhile waits for
that attempt if it comes within the caller's timeout, and is told the
last error at once if not.

(ClientService is not used: when its ``prepareConnection`` step fails,
which is what a refused host key or login is here, the connection's
close then finds its state machine waiting, and it raises.)
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.conch.ssh.connection import SSHConnection
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.lib.process import Timeout
from duct.lib.sshclient import SSHClient, SSHClientFactory
from duct.lib.sshconfig import SSHTarget
from duct.lib.sshhostkeys import HostKeyError, HostKeyPolicy, SSHError

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
        self.retryPolicy = retryPolicy if retryPolicy is not None else backoffPolicy()
        self.policy = HostKeyPolicy(target.knownHosts, target.acceptUnknown)
        self.connects = 0
        self.failures = 0
        self.hostKeyFailures = 0
        self.client: SSHClient | None = None
        """The transport of the open connection, or None."""
        self.lastError: Failure | None = None
        self.channels: Any = None
        """A DeferredSemaphore bounding the commands running at once (set by the pool)."""
        self._endpoint: Any = HostnameEndpoint(
            reactor, target.host, target.port, timeout=CONNECT_TIMEOUT
        )
        self._factory: Any = SSHClientFactory(target, self.policy, reactor)
        self._attempt: Deferred[Any] | None = None
        self._opening: SSHClient | None = None
        self._retry: Any = None  # the IDelayedCall of the next attempt
        self._failedInARow = 0
        self._waiters: list[Deferred[SSHConnection]] = []
        self._stopped = False

    # -- asking for the connection ----------------------------------------------------

    def connection(self, timeout: float | None = None) -> Deferred[SSHConnection]:
        """The open connection; or the outcome of the attempt to open it."""
        if self._stopped:
            return fail(SSHError(f"ssh {self.target}: closed, the agent is stopping"))
        client = self.client
        if client is not None and client.connection is not None:
            return succeed(client.connection)
        if self._retry is not None and timeout:
            wait = self._retry.getTime() - self.clock.seconds()
            if wait > timeout:
                why = self.lastError.getErrorMessage() if self.lastError else "not connected"
                return fail(SSHError(f"{why} (next attempt in {wait:.0f}s)"))
        d: Deferred[SSHConnection] = Deferred(self._forget)
        self._waiters.append(d)
        if self._attempt is None and self._retry is None:
            self._connect()
        if timeout:
            d.addTimeout(timeout, self.clock, self._timedOut)
        return d

    def _forget(self, waiter: Deferred[SSHConnection]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _timedOut(self, result: Any, timeout: float) -> Any:
        raise Timeout(f"ssh {self.target}: not connected after {timeout}s")

    # -- opening ------------------------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None

        def secure(client: SSHClient) -> Deferred[SSHConnection]:
            self._opening = client
            return client.ready

        attempt: Deferred[Any] = self._endpoint.connect(self._factory)
        self._attempt = attempt
        attempt.addCallback(secure)
        attempt.addCallbacks(self._opened, self._failed)

    def _opened(self, connection: SSHConnection) -> None:
        client, self._opening, self._attempt = self._opening, None, None
        assert client is not None
        if self._stopped:
            client.loseConnection()
            return
        self.client = client
        client.onLost = self._lost
        self.connects += 1
        self._failedInARow = 0
        self.log.info("ssh {target}: connected", target=str(self.target))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(connection)

    def _failed(self, failure: Failure) -> None:
        self._attempt, self._opening = None, None
        waiters, self._waiters = self._waiters, []
        if self._stopped:
            for waiter in waiters:
                waiter.errback(Failure(SSHError(f"ssh {self.target}: closed")))
            return
        self.failures += 1
        if failure.check(HostKeyError):
            self.hostKeyFailures += 1
        elif not failure.check(SSHError):  # refused, unreachable, ...: name the host
            why = failure.getErrorMessage() or type(failure.value).__name__
            failure = Failure(SSHError(f"ssh {self.target}: cannot connect: {why}"))
        self.lastError = failure
        self._failedInARow += 1
        self._scheduleRetry()
        for waiter in waiters:
            waiter.errback(failure)

    def _lost(self, reason: Failure) -> None:
        """The open connection dropped: open it again after the first backoff step."""
        self.client = None
        if not self._stopped:
            self._scheduleRetry()

    def _scheduleRetry(self) -> None:
        delay = float(self.retryPolicy(max(self._failedInARow, 1)))
        self.log.debug(
            "ssh {target}: next attempt in {delay:.1f}s", target=str(self.target), delay=delay
        )
        self._retry = self.clock.callLater(delay, self._connect)

    # -- closing ------------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """Close the connection and stop reopening it; fires once it is closed."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        closing = [c for c in (self.client, self._opening) if c is not None]
        self.client = self._opening = None
        if not closing:
            return succeed(None)
        done: list[Deferred[None]] = []
        for client in closing:
            done.append(client.closed)
            client.loseConnection()
        d = done[0] if len(done) == 1 else Deferred.fromCoroutine(_all(done))
        return d


async def _all(deferreds: list[Deferred[None]]) -> None:
    for d in deferreds:
        await d
