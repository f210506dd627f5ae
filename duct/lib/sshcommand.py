"""Running one command on an open SSH connection, with a time limit.

`execute` opens a session channel, asks the server to run the command
(through the remote user's shell, as ``ssh host command`` does), closes
its standard input, and collects its standard output and error and its
exit status.

When the command runs longer than its ``timeout``, the channel is sent the
``KILL`` signal (the SSH ``signal`` request) and closed.  OpenSSH's sshd
(7.9 and later) delivers the signal to the command's process group, so
the command and the children it started in that group die.  A server that
ignores signal requests only closes the command's pipes: a command that
reads or writes them then dies of SIGPIPE or EOF, one that does neither
(``sleep``) runs on to its end.  Either way the call fails with
`duct.lib.process.ProcessTimeout` once the server has closed the channel,
or after ``closeGrace`` seconds if it does not.
"""

from __future__ import annotations

import signal
import struct
from typing import Any, NamedTuple

from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR, SSHConnection
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from duct.lib.process import ProcessTimeout
from duct.lib.quietlog import quietLogger
from duct.lib.sshhostkeys import SSHError


class CommandResult(NamedTuple):
    """What a command left: its exit status (minus the signal number if killed), its output."""

    code: int
    stdout: bytes
    stderr: bytes


class SSHCommandLost(SSHError):
    """The connection went away while a command ran: its outcome is unknown."""


class CommandChannel(SSHChannel):
    """A session channel running one command; ``finished`` fires with its `CommandResult`."""

    name = b"session"
    _log = quietLogger("duct.lib.sshcommand.CommandChannel")
    closeGrace = 2.0
    """Seconds to wait for the server to close a killed command's channel."""

    def __init__(
        self, command: bytes, timeout: float | None, clock: Any, where: str, conn: SSHConnection
    ) -> None:
        super().__init__(conn=conn)
        self.command = command
        self.timeout = timeout
        self.clock = clock
        self.where = where
        self.finished: Deferred[CommandResult] = Deferred(lambda _: self._kill())
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.status: int | None = None
        self.signalName: str | None = None
        self.timedOut = False
        self._abandoned = False
        self._timer: Any = None

    @property
    def _conn(self) -> Any:
        return self.conn

    # -- the channel's life -----------------------------------------------------------

    def channelOpen(self, specificData: bytes) -> None:
        if self._abandoned:  # cancelled while opening
            self.loseConnection()
            return
        if self.timeout:
            self._timer = self.clock.callLater(self.timeout, self._expired)
        d = self._conn.sendRequest(self, b"exec", NS(self.command), wantReply=True)
        if d is None:  # closed in the meantime
            return
        d.addCallbacks(self._started, self._refused)

    def _started(self, _: Any) -> None:
        self._conn.sendEOF(self)  # the command reads nothing from us

    def _refused(self, failure: Failure) -> None:
        self._fail(SSHError(f"ssh {self.where}: the server refused to run the command"))
        self.loseConnection()

    def openFailed(self, reason: Any) -> None:
        why = reason.value if isinstance(reason, Failure) else reason
        self._fail(SSHError(f"ssh {self.where}: cannot open a session: {why}"))

    def dataReceived(self, data: bytes) -> None:
        self.stdout.append(data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        if dataType == EXTENDED_DATA_STDERR:
            self.stderr.append(data)

    def request_exit_status(self, data: bytes) -> int:
        (self.status,) = struct.unpack(">L", data[:4])
        return 1

    def request_exit_signal(self, data: bytes) -> int:
        name, _ = getNS(data)
        self.signalName = name.decode("ascii", errors="replace")
        return 1

    def closed(self) -> None:
        self._cancelTimer()
        stdout, stderr = b"".join(self.stdout), b"".join(self.stderr)
        if self.timedOut:
            self._timeoutFailure(stdout, stderr)
        elif self.status is not None:
            self._succeed(CommandResult(self.status, stdout, stderr))
        elif self.signalName is not None:
            number = getattr(signal, f"SIG{self.signalName}", 0)
            self._succeed(CommandResult(-int(number), stdout, stderr))
        else:
            self._fail(SSHCommandLost(f"ssh {self.where}: connection lost while the command ran"))

    # -- time limit ---------------------------------------------------------------------

    def _expired(self) -> None:
        self._timer = None
        self.timedOut = True
        self._log.warn(
            "ssh {where}: command ran longer than {timeout}s, killing it",
            where=self.where,
            timeout=self.timeout,
        )
        self._kill()

    def _kill(self) -> None:
        """Send KILL to the command and close the channel; give up waiting after closeGrace."""
        if self.localClosed:
            return
        if self not in self._conn.channelsToRemoteChannel:  # not open yet
            self._abandoned = True
            return
        self._conn.sendRequest(self, b"signal", NS(b"KILL"), wantReply=False)
        self.loseConnection()
        self._cancelTimer()
        self._timer = self.clock.callLater(self.closeGrace, self._gaveUp)

    def _gaveUp(self) -> None:
        self._timer = None
        if self.timedOut:
            self._timeoutFailure(b"".join(self.stdout), b"".join(self.stderr))

    def _timeoutFailure(self, stdout: bytes, stderr: bytes) -> None:
        message = f"ssh {self.where}: command killed after running longer than {self.timeout}s"
        out, err = (text.decode("utf-8", errors="replace") for text in (stdout, stderr))
        self._fail(ProcessTimeout(message, out, err))

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _succeed(self, result: CommandResult) -> None:
        if not self.finished.called:
            self.finished.callback(result)

    def _fail(self, error: Exception) -> None:
        self._cancelTimer()
        if not self.finished.called:
            self.finished.errback(Failure(error))


def execute(
    connection: SSHConnection,
    command: bytes,
    timeout: float | None,
    clock: Any,
    where: str,
) -> Deferred[CommandResult]:
    """Run ``command`` on ``connection``; cancelling the Deferred kills the command."""
    channel = CommandChannel(command, timeout, clock, where, connection)
    connection.openChannel(channel)
    return channel.finished
