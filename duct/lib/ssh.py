"""The SSH connections of remote checks (``use_ssh``), shared per host.

`SSHPool` is a service the agent owns (``duct.ssh``).  It keeps one
connection per target (`SSHTarget.identity`: the account, the
credentials and the host-key rules), opened the first time a source
needs it, kept open between polls, and reopened with backoff when it
drops (`duct.lib.sshhost`).  A connection no command has used for
`IDLE_CLOSE` seconds is closed (its sources were removed by a reload,
say); the next command opens it again.  A server limits the channels open at once on
one connection (OpenSSH: ``MaxSessions``, 10); at most `MAX_CHANNELS`
commands run at once on each connection, each in a channel of its own;
the others wait their turn.  Stopping the service closes the connections.

twisted.conch is imported only when the first connection is made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.logger import Logger

from duct.lib.sshconfig import SSHTarget

MAX_CHANNELS = 8
"""Commands run at once on one connection (OpenSSH allows 10 channels; one kills a command)."""

IDLE_CLOSE = 900.0
"""Seconds a connection is kept with no command on it: longer than any usual poll interval."""

if TYPE_CHECKING:
    from duct.lib.sshcommand import CommandResult
    from duct.lib.sshhost import SSHHost


class SSHPool(Service):
    """The shared SSH connections, by `SSHTarget.identity`.

    :param reactor: connects with it.
    :param clock: times command limits, reconnection backoff and idle
        connections (default: the reactor).
    :param retryPolicy: seconds to wait before reconnection attempt N, as
        `twisted.application.internet.backoffPolicy` makes them (default:
        its own, from about 1.5 s growing to 60 s).
    :param idleClose: seconds after which a connection no command uses is closed.
    """

    name = "ssh"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        clock: Any = None,
        retryPolicy: Any = None,
        idleClose: float = IDLE_CLOSE,
    ) -> None:
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.retryPolicy = retryPolicy
        self.idleClose = idleClose
        self.hosts: dict[tuple[Any, ...], SSHHost] = {}
        self.closed = False
        self.idleClosed = 0
        """Connections closed because nothing used them for ``idleClose`` seconds."""
        self._busy: Counter[tuple[Any, ...]] = Counter()
        self._idle: dict[tuple[Any, ...], Any] = {}

    def host(self, target: SSHTarget) -> SSHHost:
        """The shared connection for ``target``, made if there is none yet."""
        host = self.hosts.get(target.identity)
        if host is None:
            from duct.lib.sshhost import SSHHost

            host = SSHHost(target, self.reactor, self.clock, self.retryPolicy)
            host.channels = DeferredSemaphore(MAX_CHANNELS)
            self.hosts[target.identity] = host
        return host

    def run(
        self,
        target: SSHTarget,
        command: bytes,
        timeout: float | None,
        onOutput: Callable[[str, bytes], None] | None = None,
    ) -> Deferred[CommandResult]:
        """Run ``command`` (a remote shell command line) on ``target``.

        ``timeout`` bounds the wait for the connection, then the command
        itself, which is killed when it runs over (`duct.lib.sshcommand`).
        ``onOutput`` gets each piece of output as it comes.
        """
        return Deferred.fromCoroutine(self._run(target, command, timeout, onOutput))

    async def _run(
        self,
        target: SSHTarget,
        command: bytes,
        timeout: float | None,
        onOutput: Callable[[str, bytes], None] | None,
    ) -> Any:
        from duct.lib.sshcommand import execute
        from duct.lib.sshhostkeys import SSHError

        if self.closed:
            raise SSHError(f"ssh {target}: the agent is stopping")
        started = self.clock.seconds()
        host = self.host(target)
        identity = target.identity
        self._busy[identity] += 1
        try:
            await host.channels.acquire()
            try:
                connection = await host.connection(timeout)
                remaining = None
                if timeout:
                    remaining = max(timeout - (self.clock.seconds() - started), 0.001)
                return await execute(
                    connection, command, remaining, self.clock, str(target), timeout, onOutput
                )
            finally:
                host.channels.release()
        finally:
            self._done(identity, host)

    def _done(self, identity: tuple[Any, ...], host: SSHHost) -> None:
        """A command on ``host`` ended: once none is left, close it if none comes for a while."""
        self._busy[identity] -= 1
        if self._busy[identity] > 0 or self.closed:
            return
        del self._busy[identity]
        call = self._idle.get(identity)
        if call is not None and call.active():
            call.reset(self.idleClose)
        else:
            self._idle[identity] = self.clock.callLater(
                self.idleClose, self._closeIdle, identity, host
            )

    def _closeIdle(self, identity: tuple[Any, ...], host: SSHHost) -> None:
        self._idle.pop(identity, None)
        if self._busy[identity] or self.hosts.get(identity) is not host:
            return
        del self.hosts[identity]
        self.idleClosed += 1
        self.log.info(
            "ssh {target}: closed, no command used it for {seconds:g}s",
            target=str(host.target),
            seconds=self.idleClose,
        )
        host.stop()

    def stopService(self) -> Deferred[Any]:
        """Close every connection; the Deferred fires once they are closed."""
        super().stopService()
        self.closed = True
        calls, self._idle = self._idle, {}
        for call in calls.values():
            if call.active():
                call.cancel()
        stopping = [host.stop() for host in self.hosts.values()]
        if not stopping:
            return succeed(None)
        return DeferredList(stopping, consumeErrors=True)

    def startService(self) -> None:
        super().startService()
        self.closed = False
