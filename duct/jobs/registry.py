"""Jobs: an agent's queues, and the jobs it has run lately, by id."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from duct.jobs.job import Job, Work
from duct.jobs.queue import DEFAULT_CONCURRENCY, DEFAULT_MAX_EXEC_TIME, JobQueue

DEFAULT_QUEUE = "default"
RETENTION_COUNT = 1000
RETENTION_AGE = 3600.0


class UnknownQueue(KeyError):
    """A job sent to a queue that ``queues:`` does not declare."""


class Jobs:
    """The queues of ``queues:`` (and ``default``), and the recent jobs.

    Ended jobs are kept for ``retention`` (``count`` and ``age`` in
    seconds, whichever is reached first); waiting and running ones always.

    :param queues: ``{name: {concurrency, max_exec_time}}``, validated.
    :param allowed: the commands ``jobs: {allow: [...]}`` lets a client run, by name.
    """

    def __init__(
        self,
        clock: Any,
        queues: Mapping[str, Mapping[str, Any]] | None = None,
        retention: Mapping[str, Any] | None = None,
        allowed: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.clock = clock
        self.queues: dict[str, JobQueue] = {}
        self.keepCount, self.keepAge = RETENTION_COUNT, RETENTION_AGE
        self.allowed: dict[str, Mapping[str, Any]] = {}
        self.configure(queues, retention, allowed)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._config: Any = None
        self.checks: dict[str, Any] = {}
        """The sources that can run a job on demand, by service name."""

    def configure(
        self,
        queues: Mapping[str, Mapping[str, Any]] | None,
        retention: Mapping[str, Any] | None = None,
        allowed: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Take (new) settings: queues are added or changed, never removed while in use.

        A queue whose ``concurrency`` grows starts its waiting jobs at once;
        a new ``max_exec_time`` applies to the jobs that start from now.
        """
        declared = dict(queues or {})
        declared.setdefault(DEFAULT_QUEUE, {})
        for name, settings in declared.items():
            concurrency = int(settings.get("concurrency") or DEFAULT_CONCURRENCY)
            limit = float(settings.get("max_exec_time") or DEFAULT_MAX_EXEC_TIME)
            queue = self.queues.get(name)
            if queue is None:
                self.queues[name] = JobQueue(name, self.clock, concurrency, limit)
            elif (queue.concurrency, queue.maxExecTime) != (concurrency, limit):
                queue.concurrency, queue.maxExecTime = concurrency, limit
                queue.pump()
        retention = retention or {}
        self.keepCount = int(retention.get("count") or RETENTION_COUNT)
        self.keepAge = float(retention.get("age") or RETENTION_AGE)
        self.allowed = dict(allowed or {})

    def queue(self, name: str) -> JobQueue:
        try:
            return self.queues[name]
        except KeyError:
            known = ", ".join(sorted(self.queues))
            raise UnknownQueue(f"no queue named {name!r} (queues: {known})") from None

    def submit(self, name: str, queue: str, work: Work) -> Job:
        """A new job running ``work`` in ``queue``, queued now."""
        target = self.queue(queue)
        job = Job(name, queue, work, self.clock.seconds())
        self.prune()
        self.jobs[job.id] = job
        target.submit(job)
        return job

    def get(self, jobId: str) -> Job | None:
        self.prune()
        return self.jobs.get(jobId)

    def cancel(self, job: Job) -> bool:
        return self.queues[job.queue].cancel(job)

    def prune(self) -> None:
        """Forget ended jobs past the retention's age, then the oldest past its count."""
        horizon = self.clock.seconds() - self.keepAge
        ended = [j for j in self.jobs.values() if j.ended]
        excess = len(ended) - self.keepCount
        for job in ended:
            if excess > 0 or (job.endTime or 0.0) < horizon:
                del self.jobs[job.id]
                excess -= 1

    def stats(self) -> dict[str, Any]:
        return {name: queue.stats() for name, queue in self.queues.items()}


def jobsOf(duct: Any) -> Jobs:
    """The agent's `Jobs`: made from its configuration at first, updated after a reload."""
    config = getattr(duct, "config", None) or {}
    allow = (config.get("jobs") or {}).get("allow") or []
    settings = (
        config.get("queues"),
        config.get("job_retention"),
        {entry["name"]: entry for entry in allow if isinstance(entry, Mapping)},
    )
    jobs = getattr(duct, "jobs", None)
    if not isinstance(jobs, Jobs):
        jobs = duct.jobs = Jobs(duct.clock, *settings)
    elif getattr(jobs, "_config", None) is not config:  # reloaded: take the new settings
        jobs.configure(*settings)
    jobs._config = config
    return jobs
