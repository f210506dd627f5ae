"""Running a child process with a time limit: `fork`.

``reactor`` may be None so that plugins written for the original duct keep
working; the global reactor is then used.  Duct's own code passes its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psutil
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ProcessProtocol", "ProcessTimeout", "Timeout", "fork"]

# mypy cannot check zope interfaces without a plugin, so these are Any.
Reactor = Any  # an IReactorProcess and IReactorTime: what fork spawns with and times by
Clock = Any  # an IReactorTime: the reactor, or a task.Clock in tests


class Timeout(Exception):
    """An operation took longer than it was allowed to."""


class ProcessTimeout(Timeout):
    """A child killed for running too long; ``stdout``/``stderr`` hold what it printed."""

    def __init__(self, message: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


# -- processes -------------------------------------------------------------


class ProcessProtocol(protocol.ProcessProtocol):
    """Collects a child's output and fires ``deferred`` once it has ended.

    The result is ``(stdout, stderr, code)``, where ``code`` is the exit
    status, or minus the signal number if a signal killed the child.  After
    ``timeout`` seconds the child and its descendants are sent SIGKILL, and
    ``deferred`` fails with `ProcessTimeout` once the child has been reaped,
    so it never outlives the Deferred.  A falsy ``timeout`` means no limit.
    """

    log = Logger()
    closeGrace = 1.0
    """Seconds after a timed-out child exits before we stop waiting for its pipes."""

    def __init__(
        self,
        deferred: Deferred[tuple[str, str, int]],
        timeout: float | None,
        reactor: Clock | None = None,
        name: str = "process",
        onOutput: Callable[[str, bytes], None] | None = None,
    ) -> None:
        if reactor is None:
            # Compatibility path for plugins that build this protocol themselves.
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.deferred = deferred
        self.timeout = timeout
        self.clock: Clock = reactor
        self.name = name
        self.onOutput = onOutput
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.timedOut = False
        self.killed = False
        self.exited = False
        self._timer: Any = None  # an IDelayedCall

    def connectionMade(self) -> None:
        if self.timeout:
            self._timer = self.clock.callLater(self.timeout, self._timeoutExpired)

    def outReceived(self, data: bytes) -> None:
        self.stdout.append(data)
        if self.onOutput is not None:
            self.onOutput("stdout", data)

    def errReceived(self, data: bytes) -> None:
        self.stderr.append(data)
        if self.onOutput is not None:
            self.onOutput("stderr", data)

    def abort(self) -> None:
        """SIGKILL the child and its descendants; stop waiting for its pipes soon after."""
        self._cancelTimer()
        self.killed = True
        transport: Any = self.transport
        pid = getattr(transport, "pid", None)  # None once reaped
        if pid is not None:
            try:  # collected first: once the child dies they are re-parented
                descendants = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                descendants = []
            with contextlib.suppress(ProcessExitedAlready, OSError):
                transport.signalProcess("KILL")
            for child in descendants:
                with contextlib.suppress(psutil.Error):
                    child.kill()
        if self.exited:
            self._closePipesSoon()

    def _timeoutExpired(self) -> None:
        self._timer = None
        self.timedOut = True
        self.log.warn(
            "{name} ran longer than {timeout}s, killing it", name=self.name, timeout=self.timeout
        )
        self.abort()

    def _closePipesSoon(self) -> None:
        # Killed descendants close our pipes as they die.  One that escaped
        # the kill may hold them open: after a grace period we close our ends,
        # so processEnded comes now rather than whenever that one exits.
        transport: Any = self.transport
        self._timer = self.clock.callLater(self.closeGrace, transport.loseConnection)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def processExited(self, reason: Failure) -> None:
        self.exited = True
        if self.killed:
            self._closePipesSoon()

    def processEnded(self, reason: Failure) -> None:
        self._cancelTimer()
        if self.deferred.called:
            return  # cancelled by its caller
        stdout, stderr = (
            b"".join(out).decode("utf-8", errors="replace") for out in (self.stdout, self.stderr)
        )
        if self.timedOut:
            message = f"{self.name} killed after running longer than {self.timeout}s"
            self.deferred.errback(ProcessTimeout(message, stdout, stderr))
            return
        code = getattr(reason.value, "exitCode", None)
        if code is None:
            code = -(getattr(reason.value, "signal", None) or 0)
        self.deferred.callback((stdout, stderr, code))


def fork(
    executable: str,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    path: str | None = None,
    timeout: float | None = 3600,
    reactor: Reactor | None = None,
    onOutput: Callable[[str, bytes], None] | None = None,
) -> Deferred[tuple[str, str, int]]:
    """Run ``executable`` with ``args`` and return a Deferred of ``(stdout, stderr, code)``.

    :param env: the child's complete environment; ``None`` (the default)
        gives it an empty one, as the original duct did.  Pass
        ``dict(os.environ)`` to inherit ours.
    :param path: the child's working directory; ``None`` keeps ours.
    :param timeout: seconds before the child is killed and the Deferred
        fails with `ProcessTimeout`; ``None`` or 0 for no limit.
    :param reactor: the reactor to spawn on.  ``None`` uses the global
        reactor: the compatibility path for plugins written for the
        original duct.  Duct's own code passes its reactor.
    :param onOutput: called with ``("stdout" or "stderr", bytes)`` as the
        child writes, for a caller that follows the output as it comes.

    Cancelling the Deferred kills the child.
    """
    spawner: Reactor = reactor
    if spawner is None:
        from twisted.internet import reactor as _reactor

        spawner = _reactor
    d: Deferred[tuple[str, str, int]] = Deferred(lambda _: proto.abort())
    proto = ProcessProtocol(d, timeout, reactor=spawner, name=executable, onOutput=onOutput)
    try:
        spawner.spawnProcess(proto, executable, [executable, *args], env=dict(env or {}), path=path)
    except Exception:
        proto._cancelTimer()
        d.errback()
    return d
