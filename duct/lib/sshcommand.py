"""Running one command on an open SSH connection, with a time limit.

`execute` opens a session channel and asks the server to run the command
through the remote user's shell, as ``ssh host command`` does.  The
command is a simple command line (one program and its quoted arguments):
it runs as ``echo "<marker> $$" >&2; exec <command>``, so the shell first
says its process id on standard error (that line is taken out of what the
caller sees) and then becomes the command.  sshd starts each session in a
new session and process group, led by that shell, so the id is also the
command's process group.  Standard input is closed at once; standard
output, standard error and the exit status are collected, and each piece
of output is also given to ``onOutput`` as it comes, if one is given.

When the command runs longer than its ``timeout``, a second channel on the
same connection runs ``kill -s KILL -- -<group>``: the command and every
process it started in its group die, whoever the remote user is.  (The SSH
``signal`` request would do the same, but OpenSSH's sshd refuses it for a
root login, and older servers ignore it.)  The call then fails with
`duct.lib.process.ProcessTimeout` once the server has closed the channel,
or after ``closeGrace`` seconds if it does not (the channel is closed
then; a command that escaped its group runs on until it next writes).
"""

from __future__ import annotations

import signal
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR, SSHConnection
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from duct.lib.process import ProcessTimeout
from duct.lib.quietlog import quietLogger
from duct.lib.sshhostkeys import SSHError

GROUP_MARKER = b"duct-ssh-process-group"
"""Starts the line of standard error where the remote shell says its process id."""


class CommandResult(NamedTuple):
    """What a command left: its exit status (minus the signal number if killed), its output."""

    code: int
    stdout: bytes
    stderr: bytes


class SSHCommandLost(SSHError):
    """The connection went away while a command ran: its outcome is unknown."""


def wrapped(command: bytes) -> bytes:
    """``command`` as sent: the shell says its process id, then becomes the command."""
    return b'echo "' + GROUP_MARKER + b' $$" >&2; exec ' + command


class _Channel(SSHChannel):
    """A session channel on an `SSHConnection`, with the logging of conch's kept quiet."""

    name = b"session"
    _log = quietLogger("duct.lib.sshcommand")

    @property
    def _conn(self) -> Any:
        return self.conn


class _KillChannel(_Channel):
    """Runs ``kill`` on a process group, and forgets about it."""

    def __init__(self, group: int, conn: SSHConnection) -> None:
        super().__init__(conn=conn)
        self.group = group

    def channelOpen(self, specificData: bytes) -> None:
        line = b"kill -s KILL -- -%d" % self.group
        d = self._conn.sendRequest(self, b"exec", NS(line), wantReply=True)
        if d is not None:
            d.addErrback(lambda _: self.loseConnection())

    def openFailed(self, reason: Any) -> None:
        pass  # the connection is going: so is the command


class CommandChannel(_Channel):
    """A session channel running one command; ``finished`` fires with its `CommandResult`."""

    closeGrace = 2.0
    """Seconds to wait for the server to close a killed command's channel."""

    def __init__(
        self,
        command: bytes,
        timeout: float | None,
        clock: Any,
        where: str,
        conn: SSHConnection,
        limit: float | None = None,
        onOutput: Callable[[str, bytes], None] | None = None,
    ) -> None:
        super().__init__(conn=conn)
        self.onOutput = onOutput
        self.command = command
        self.timeout = timeout
        self.limit = limit if limit is not None else timeout
        """The time limit as the caller set it (``timeout`` is what was left of it)."""
        self.clock = clock
        self.where = where
        self.finished: Deferred[CommandResult] = Deferred(lambda _: self._kill())
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.group: int | None = None
        """The remote process group of the command, once its shell has said it."""
        self._prelude = b""
        self._seeking = True
        self.status: int | None = None
        self.signalName: str | None = None
        self.timedOut = False
        self._abandoned = False
        self._timer: Any = None

    # -- the channel's life -----------------------------------------------------------

    def channelOpen(self, specificData: bytes) -> None:
        if self._abandoned:  # cancelled while opening
            self.loseConnection()
            return
        if self.timeout:
            self._timer = self.clock.callLater(self.timeout, self._expired)
        d = self._conn.sendRequest(self, b"exec", NS(wrapped(self.command)), wantReply=True)
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
        if self.onOutput is not None:
            self.onOutput("stdout", data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        if dataType != EXTENDED_DATA_STDERR:
            return
        if self._seeking:
            self._prelude += data
            data = self._takeGroup()
        if data:
            self._stderr(data)

    def _stderr(self, data: bytes) -> None:
        self.stderr.append(data)
        if self.onOutput is not None:
            self.onOutput("stderr", data)

    def _takeGroup(self) -> bytes:
        """Find the process group line in what came first on stderr; return the rest."""
        prelude = self._prelude
        start = prelude.find(GROUP_MARKER)
        end = prelude.find(b"\n", start) if start >= 0 else -1
        if end < 0:
            if len(prelude) > 4096:  # no marker: a shell that did not run our line
                self._prelude, self._seeking = b"", False
                return prelude
            return b""
        self._seeking = False
        try:
            self.group = int(prelude[start + len(GROUP_MARKER) : end].strip())
        except ValueError:
            self.group = None
        self._prelude = b""
        return prelude[:start] + prelude[end + 1 :]

    def request_exit_status(self, data: bytes) -> int:
        (self.status,) = struct.unpack(">L", data[:4])
        return 1

    def request_exit_signal(self, data: bytes) -> int:
        name, _ = getNS(data)
        self.signalName = name.decode("ascii", errors="replace")
        return 1

    def closed(self) -> None:
        self._cancelTimer()
        if self._prelude:  # stderr that never held the marker
            prelude, self._prelude = self._prelude, b""
            self._stderr(prelude)
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
            timeout=self.limit,
        )
        self._kill()

    def _kill(self) -> None:
        """Kill the command's process group; give up waiting for it after closeGrace."""
        if self.localClosed:
            return
        if self not in self._conn.channelsToRemoteChannel:  # not open yet
            self._abandoned = True
            return
        if self.group is not None and self.group > 1:
            self._conn.openChannel(_KillChannel(self.group, self._conn))
        else:  # it has not started: closing the channel is all there is to do
            self.loseConnection()
        self._cancelTimer()
        self._timer = self.clock.callLater(self.closeGrace, self._gaveUp)

    def _gaveUp(self) -> None:
        self._timer = None
        self.loseConnection()
        if self.timedOut:
            self._timeoutFailure(b"".join(self.stdout), b"".join(self.stderr))

    def _timeoutFailure(self, stdout: bytes, stderr: bytes) -> None:
        message = f"ssh {self.where}: command killed after running longer than {self.limit}s"
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
    limit: float | None = None,
    onOutput: Callable[[str, bytes], None] | None = None,
) -> Deferred[CommandResult]:
    """Run ``command`` on ``connection``; cancelling the Deferred kills the command.

    ``timeout`` is the seconds it may run; ``limit``, if given, is the
    whole time limit it is part of, which the timeout message names.
    ``onOutput`` is called with ``("stdout" or "stderr", bytes)`` as the
    output comes.
    """
    channel = CommandChannel(command, timeout, clock, where, connection, limit, onOutput)
    connection.openChannel(channel)
    return channel.finished
