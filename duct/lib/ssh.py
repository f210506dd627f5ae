"""The SSH connections of remote checks (``use_ssh``), shared per host.

`SSHPool` is a service the agent owns (``duct.ssh``).  It keeps one
connection per ``(host, port, username)``, opened the first time a source
needs it, kept open between polls, and reopened with backoff when it
drops (`duct.lib.sshhost`).  A server limits the channels open at once on
one connection (OpenSSH: ``MaxSessions``, 10); at most `MAX_CHANNELS`
commands run at once on each connection, each in a channel of its own;
the others wait their turn.  Stopping the service closes the connections.

twisted.conch is imported only when the first connection is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed

from duct.lib.sshconfig import SSHTarget

MAX_CHANNELS = 8
"""Commands run at once on one connection (OpenSSH allows 10 channels; one kills a command)."""

if TYPE_CHECKING:
    from duct.lib.sshcommand import CommandResult
    from duct.lib.sshhost import SSHHost


class SSHPool(Service):
    """The shared SSH connections, by ``(host, port, username)``.

    :param reactor: connects with it.
    :param clock: times command limits and reconnection backoff (default: the reactor).
    :param retryPolicy: seconds to wait before reconnection attempt N, as
        `twisted.application.internet.backoffPolicy` makes them (default:
        its own, from about 1.5 s growing to 60 s).
    """

    name = "ssh"

    def __init__(self, reactor: Any, clock: Any = None, retryPolicy: Any = None) -> None:
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.retryPolicy = retryPolicy
        self.hosts: dict[tuple[str, int, str], SSHHost] = {}
        self.closed = False

    def host(self, target: SSHTarget) -> SSHHost:
        """The shared connection for ``target``, made if there is none yet."""
        host = self.hosts.get(target.key)
        if host is None:
            from duct.lib.sshhost import SSHHost

            host = SSHHost(target, self.reactor, self.clock, self.retryPolicy)
            host.channels = DeferredSemaphore(MAX_CHANNELS)
            self.hosts[target.key] = host
        return host

    def run(
        self, target: SSHTarget, command: bytes, timeout: float | None
    ) -> Deferred[CommandResult]:
        """Run ``command`` (a remote shell command line) on ``target``.

        ``timeout`` bounds the wait for the connection, then the command
        itself, which is killed when it runs over (`duct.lib.sshcommand`).
        """
        return Deferred.fromCoroutine(self._run(target, command, timeout))

    async def _run(self, target: SSHTarget, command: bytes, timeout: float | None) -> Any:
        from duct.lib.sshcommand import execute
        from duct.lib.sshhostkeys import SSHError

        if self.closed:
            raise SSHError(f"ssh {target}: the agent is stopping")
        started = self.clock.seconds()
        host = self.host(target)
        await host.channels.acquire()
        try:
            connection = await host.connection(timeout)
            remaining = None
            if timeout:
                remaining = max(timeout - (self.clock.seconds() - started), 0.001)
            return await execute(connection, command, remaining, self.clock, str(target), timeout)
        finally:
            host.channels.release()

    def stopService(self) -> Deferred[Any]:
        """Close every connection; the Deferred fires once they are closed."""
        super().stopService()
        self.closed = True
        stopping = [host.stop() for host in self.hosts.values()]
        if not stopping:
            return succeed(None)
        return DeferredList(stopping, consumeErrors=True)

    def startService(self) -> None:
        super().startService()
        self.closed = False
