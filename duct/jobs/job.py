"""Job: one run of a command, its numbered output and its result."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed

WAITING = "waiting"
RUNNING = "running"
FINISHED = "finished"
"""It ran to its end: its result says whether the check passed (exit status and output)."""
CANCELLED = "cancelled"
KILLED = "killed"
"""Killed for running longer than its queue's ``max_exec_time``."""
FAILED_TO_RUN = "failed-to-run"
"""It could not run where it was sent: an SSH host unreachable, a command not found."""

ENDED = frozenset({FINISHED, CANCELLED, KILLED, FAILED_TO_RUN})

MAX_LINES = 10000
"""Lines of output a job keeps; past them the output is cut short (and says so)."""
MAX_LINE_BYTES = 65536
"""The longest line kept; a longer one is cut."""


@dataclass
class JobResult:
    """How a job ended.

    :param outcome: ``ok`` (ran, exit status 0), ``failed`` (ran, another
        status), ``transport_error`` (could not reach where it was to run),
        ``error`` (could not be started), ``killed`` or ``cancelled``.
    """

    outcome: str
    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    reason: str | None = None
    events: list[Any] = field(default_factory=list)
    """The `duct.event.Event`s the job's output made (a check's)."""

    def toJSON(self) -> dict[str, Any]:
        data: dict[str, Any] = {"outcome": self.outcome, "code": self.code}
        if self.reason is not None:
            data["reason"] = self.reason
        data["stdout"], data["stderr"] = self.stdout, self.stderr
        if self.events:
            data["events"] = [event.asDict() for event in self.events]
        return data


Work = Callable[["Job"], "Deferred[JobResult]"]
"""What a job runs: given the job (to report output to), fires with its result."""


class Job:
    """One run of ``work``, named ``name``, in queue ``queue``.

    Each line of output gets the next number, from 1: a follower asks for
    the lines after the last number it saw.  ``listeners`` are called with
    no argument whenever a line is added or the job ends.
    """

    def __init__(self, name: str, queue: str, work: Work, now: float) -> None:
        self.id = str(uuid.uuid4())
        self.name = name
        self.queue = queue
        self.work = work
        self.state = WAITING
        self.submitTime = now
        self.startTime: float | None = None
        self.endTime: float | None = None
        self.result: JobResult | None = None
        self.lines: list[tuple[str, str]] = []
        """``(stream, text)``: line number ``n`` is ``lines[n - 1]``."""
        self.truncated = 0
        """Lines not kept (past `MAX_LINES`)."""
        self.listeners: list[Callable[[], None]] = []
        self._partial = {"stdout": b"", "stderr": b""}
        self._waiting: list[Deferred[Job]] = []

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def last(self) -> int:
        """The number of the last line so far (0 before any)."""
        return len(self.lines)

    def output(self, stream: str, data: bytes) -> None:
        """Take output the command wrote on ``stream`` (``stdout`` or ``stderr``)."""
        if self.ended:
            return
        pieces = (self._partial[stream] + data).split(b"\n")
        self._partial[stream] = pieces.pop()[: MAX_LINE_BYTES + 1]
        for piece in pieces:
            self._add(stream, piece)
        if pieces:
            self._notify()

    def _add(self, stream: str, piece: bytes) -> None:
        if len(self.lines) >= MAX_LINES:
            self.truncated += 1
            return
        self.lines.append((stream, piece[:MAX_LINE_BYTES].decode("utf-8", errors="replace")))

    def lineData(self, number: int) -> dict[str, Any]:
        stream, text = self.lines[number - 1]
        return {"seq": number, "stream": stream, "line": text}

    def end(self, state: str, result: JobResult, now: float) -> None:
        """Record the end (once): flush partial lines, tell listeners and waiters."""
        if self.ended:
            return
        for stream, rest in self._partial.items():
            if rest:
                self._add(stream, rest)
        self._partial = {"stdout": b"", "stderr": b""}
        self.state, self.result, self.endTime = state, result, now
        if self.truncated:
            result.reason = (result.reason + "; " if result.reason else "") + (
                f"{self.truncated} lines of output not kept (more than {MAX_LINES})"
            )
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self)
        self._notify()

    def whenEnded(self) -> Deferred[Job]:
        """Fires with this job once it has ended."""
        if self.ended:
            return succeed(self)
        d: Deferred[Job] = Deferred()
        self._waiting.append(d)
        return d

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def toJSON(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "state": self.state,
            "submit_time": self.submitTime,
            "start_time": self.startTime,
            "end_time": self.endTime,
            "lines": self.last,
            "result": self.result.toJSON() if self.result is not None else None,
        }
