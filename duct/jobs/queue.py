"""JobQueue: runs jobs at most ``concurrency`` at a time, each for at most ``max_exec_time``."""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.jobs.job import (
    CANCELLED,
    FAILED_TO_RUN,
    FINISHED,
    KILLED,
    RUNNING,
    WAITING,
    Job,
    JobResult,
)
from duct.lib.process import ProcessTimeout
from duct.stats.declare import Stat, counter, gauge

DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_EXEC_TIME = 300.0


class CannotRun(Exception):
    """A job that could not be started (its command is not there, say)."""


QUEUE_STATS: tuple[Stat, ...] = (
    gauge("waiting", "sum", lambda q: len(q.waiting), "queue_waiting", "jobs waiting to run"),
    gauge("running", "sum", lambda q: len(q.running), "queue_running", "jobs running"),
    gauge("concurrency", "sum", "concurrency", "queue_concurrency", "jobs run at once at most"),
    counter("submitted", "submitted", "queue_submitted", "jobs submitted"),
    counter("done", "done", "queue_done", "jobs that ran to their end"),
    counter("failed_to_run", "failedToRun", "queue_failed_to_run", "jobs that could not run"),
    counter("killed", "killed", "queue_killed", "jobs killed past max_exec_time"),
    counter("cancelled", "cancelled", "queue_cancelled", "jobs cancelled"),
    counter("skipped", "skipped", "queue_skipped", "runs skipped: the previous had not ended"),
    counter("wait_seconds", "waitSeconds", "queue_wait_seconds", "seconds jobs spent waiting"),
    counter("run_seconds", "runSeconds", "queue_run_seconds", "seconds jobs spent running"),
    gauge("last_wait", "max", "lastWait", "queue_last_wait_seconds", "the last job's wait"),
    gauge("last_run", "max", "lastRun", "queue_last_run_seconds", "the last job's run time"),
)
"""What ``/stats`` shows of each queue, under ``queues``."""


class JobQueue:
    """A named queue: jobs wait in order and run ``concurrency`` at a time.

    A job running longer than ``maxExecTime`` seconds is cancelled, which
    kills its command (and the command's descendants), and ends ``killed``.

    :param clock: times waits, runs and ``maxExecTime`` (an IReactorTime).
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        clock: Any,
        concurrency: int = DEFAULT_CONCURRENCY,
        maxExecTime: float = DEFAULT_MAX_EXEC_TIME,
    ) -> None:
        self.name = name
        self.clock = clock
        self.concurrency = concurrency
        self.maxExecTime = maxExecTime
        self.waiting: deque[Job] = deque()
        self.running: dict[Job, Deferred[JobResult]] = {}
        self.submitted = self.done = self.failedToRun = 0
        self.killed = self.cancelled = self.skipped = 0
        self.waitSeconds = self.runSeconds = 0.0
        self.lastWait: float | None = None
        self.lastRun: float | None = None
        self._expiring: set[Job] = set()
        self._cancelling: set[Job] = set()
        self._timers: dict[Job, Any] = {}

    def submit(self, job: Job) -> Job:
        """Queue ``job``; it starts now if a place is free."""
        self.submitted += 1
        self.waiting.append(job)
        self.pump()
        return job

    def skip(self) -> None:
        """Count a run not submitted because the previous one has not ended."""
        self.skipped += 1

    def cancel(self, job: Job) -> bool:
        """Cancel ``job``: out of the queue if waiting, killed if running; False if it had ended."""
        if job.state == WAITING and job in self.waiting:
            self.waiting.remove(job)
            self.cancelled += 1
            job.end(
                CANCELLED, JobResult("cancelled", reason="cancelled while waiting"), self._now()
            )
            return True
        running = self.running.get(job)
        if running is None:
            return False
        self._cancelling.add(job)
        running.cancel()
        return True

    def _now(self) -> float:
        now: float = self.clock.seconds()
        return now

    def pump(self) -> None:
        """Start waiting jobs while places are free."""
        while self.waiting and len(self.running) < self.concurrency:
            self._start(self.waiting.popleft())

    def _start(self, job: Job) -> None:
        now = self._now()
        job.state, job.startTime = RUNNING, now
        self.lastWait = now - job.submitTime
        self.waitSeconds += self.lastWait
        d = maybeDeferred(job.work, job)
        if d.called:  # ended at once: no timer to set
            self.running[job] = d
            d.addBoth(self._ended, job)
            return
        self.running[job] = d
        if self.maxExecTime:
            self._timers[job] = self.clock.callLater(self.maxExecTime, self._expire, job)
        d.addBoth(self._ended, job)

    def _expire(self, job: Job) -> None:
        self._timers.pop(job, None)
        running = self.running.get(job)
        if running is None:
            return
        self.log.warn(
            "queue {queue}: job {job} ({name}) ran longer than {limit}s, killing it",
            queue=self.name,
            job=job.id,
            name=job.name,
            limit=self.maxExecTime,
        )
        self._expiring.add(job)
        running.cancel()

    def _ended(self, outcome: JobResult | Failure, job: Job) -> None:
        timer = self._timers.pop(job, None)
        if timer is not None and timer.active():
            timer.cancel()
        self.running.pop(job, None)
        expired = job in self._expiring
        cancelled = job in self._cancelling
        self._expiring.discard(job)
        self._cancelling.discard(job)
        now = self._now()
        self.lastRun = now - (job.startTime if job.startTime is not None else now)
        self.runSeconds += self.lastRun
        state, result = self._classify(outcome, expired, cancelled)
        counts = {FINISHED: "done", KILLED: "killed", CANCELLED: "cancelled"}
        name = counts.get(state, "failedToRun")
        setattr(self, name, getattr(self, name) + 1)
        job.end(state, result, now)
        self.pump()

    def _classify(
        self, outcome: JobResult | Failure, expired: bool, cancelled: bool
    ) -> tuple[str, JobResult]:
        from duct.lib.sshhostkeys import SSHError

        if isinstance(outcome, JobResult):
            return FINISHED, outcome
        error = outcome.value
        out = getattr(error, "stdout", "") or ""
        err = getattr(error, "stderr", "") or ""
        if expired or isinstance(error, ProcessTimeout):
            limit = self.maxExecTime if expired else None
            why = f"killed after running longer than {limit:g}s" if limit else str(error)
            return KILLED, JobResult("killed", None, out, err, why)
        if cancelled and isinstance(error, CancelledError):
            return CANCELLED, JobResult("cancelled", None, out, err, "cancelled while running")
        if isinstance(error, SSHError):
            return FAILED_TO_RUN, JobResult("transport_error", None, out, err, str(error))
        why = str(error) or type(error).__name__
        if not isinstance(error, (CannotRun, OSError)):
            why = f"{type(error).__name__}: {why}"
        return FAILED_TO_RUN, JobResult("error", None, out, err, why)

    def stats(self) -> dict[str, Any]:
        from duct.stats.snapshot import read

        return read(QUEUE_STATS, self)
