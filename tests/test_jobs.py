"""duct.jobs: queues hold their concurrency, kill past max_exec_time, count skips."""

from __future__ import annotations

import os
from typing import Any

import psutil
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from duct.jobs.job import Job, JobResult
from duct.jobs.queue import JobQueue
from duct.jobs.registry import Jobs
from duct.sources.command import Command
from duct.testing import FakeDuct, SourceHarness, waitFor


def pending() -> tuple[list[Deferred[JobResult]], Any]:
    started: list[Deferred[JobResult]] = []

    def work(job: Job) -> Deferred[JobResult]:
        d: Deferred[JobResult] = Deferred()
        started.append(d)
        return d

    return started, work


def test_concurrency_is_held() -> None:
    clock = Clock()
    queue = JobQueue("q", clock, concurrency=2, maxExecTime=100)
    started, work = pending()
    jobs = [queue.submit(Job(f"j{i}", "q", work, clock.seconds())) for i in range(5)]
    assert [j.state for j in jobs] == ["running"] * 2 + ["waiting"] * 3
    clock.advance(3)
    started[0].callback(JobResult("ok", 0))
    assert jobs[0].state == "finished" and jobs[2].state == "running"
    assert len(queue.running) == 2 and len(queue.waiting) == 2
    stats = queue.stats()
    assert stats["done"] == 1 and stats["waiting"] == 2 and stats["running"] == 2
    assert stats["last_wait"] == 3 and stats["run_seconds"] == 3


def test_max_exec_time_on_clock() -> None:
    clock = Clock()
    queue = JobQueue("q", clock, concurrency=1, maxExecTime=10)
    started, work = pending()
    job = queue.submit(Job("j", "q", work, 0))
    clock.advance(9.9)
    assert job.state == "running"
    clock.advance(0.2)
    assert job.state == "killed"
    assert job.result is not None and job.result.outcome == "killed"
    assert "longer than 10s" in (job.result.reason or "")
    assert queue.stats()["killed"] == 1


def test_cancel_waiting_and_running() -> None:
    clock = Clock()
    queue = JobQueue("q", clock, concurrency=1, maxExecTime=10)
    started, work = pending()
    first = queue.submit(Job("a", "q", work, 0))
    second = queue.submit(Job("b", "q", work, 0))
    assert queue.cancel(second) and second.state == "cancelled"
    assert queue.cancel(first) and first.state == "cancelled"
    assert first.result is not None and first.result.outcome == "cancelled"
    assert not queue.cancel(first)
    assert queue.stats()["cancelled"] == 2 and not queue.running


def test_retention_is_bounded() -> None:
    clock = Clock()
    jobs = Jobs(clock, {"default": {"concurrency": 10}}, {"count": 3, "age": 100})
    started, work = pending()
    made = [jobs.submit("x", "default", work) for _ in range(6)]
    for d in started:
        d.callback(JobResult("ok", 0))
    jobs.prune()
    assert [j.id for j in jobs.jobs.values()] == [j.id for j in made[3:]]
    clock.advance(101)
    assert jobs.get(made[5].id) is None and not jobs.jobs


def test_a_run_is_skipped_while_the_last_is_running() -> None:
    clock = Clock()
    duct = FakeDuct(clock=clock)
    check = SourceHarness(Command, {"service": "svc", "command": "true", "interval": 1}, duct=duct)
    source: Any = check.source
    started, work = pending()
    source.work = work
    check.start()
    clock.advance(1)
    clock.advance(1)
    assert source.runsSkipped == 2
    assert duct.jobs.stats()["default"]["skipped"] == 2
    started[0].callback(JobResult("ok", 0))
    clock.advance(1)
    assert len(started) == 2


def sleeperChild(parent: int) -> int | None:
    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.Error:
        return None
    found = [c.pid for c in children if c.name() == "sleep"]
    return found[0] if found else None


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest_twisted.ensureDeferred
async def test_max_exec_time_kills_the_process_group(reactor: Any) -> None:
    duct = FakeDuct(reactor=reactor, config={"queues": {"slow": {"max_exec_time": 1.0}}})
    config = {"service": "svc", "command": "trap '' TERM; sleep 60 & wait", "shell": True,
              "queue": "slow"}  # fmt: skip
    check = SourceHarness(Command, config, duct=duct)
    source: Any = check.source
    job = source.submit()
    child: int = await waitFor(
        reactor, lambda: sleeperChild(os.getpid()), "the sleeping grandchild", timeout=10
    )
    await waitFor(reactor, lambda: job.ended, "the job to be killed", timeout=20)
    assert job.state == "killed"
    assert "longer than 1s" in job.result.reason
    await waitFor(reactor, lambda: gone(child), f"process {child} to be gone", timeout=10)
    assert duct.jobs.stats()["slow"]["killed"] == 1


def test_the_job_keys_are_checked_with_the_key_named() -> None:
    import pytest

    from duct.configuration import ConfigFile, ConfigurationError

    good = ConfigFile.fromDict(
        {
            "queues": {"slow": {"concurrency": 2, "max_exec_time": "5m"}},
            "jobs": {"allow": [{"name": "up", "command": "uptime", "queue": "slow"}]},
            "job_retention": {"count": 10},
        }
    )
    assert good.get("queues")["slow"] == {"concurrency": 2, "max_exec_time": 300.0}
    assert good.get("jobs")["allow"][0]["shell"] is False
    assert good.get("job_retention") == {"count": 10, "age": 3600.0}
    bad = {
        "queues": {"slow": {"concurrency": 0, "speed": 1}},
        "jobs": {"allow": [{"name": "x", "command": "true", "queue": "nowhere"}, {"name": "y"}]},
        "job_retention": {"count": "many"},
    }
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile.fromDict(bad)
    text = "\n".join(str(p) for p in raised.value.problems)
    assert "queues.slow: concurrency: must be at least 1" in text
    assert "queues.slow: speed: unknown key" in text
    assert "jobs.allow[0]: queue: no queue named 'nowhere'" in text
    assert "jobs.allow[1]: command: missing required key" in text
    assert "job_retention: count: expected an integer" in text


def test_a_command_source_names_a_declared_queue() -> None:
    import pytest

    from duct.configuration import ConfigFile, ConfigurationError

    source = {"source": "duct.sources.command.Command", "service": "c", "command": "true"}
    ConfigFile.fromDict({"queues": {"q": {}}, "sources": [{**source, "queue": "q"}]})
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile.fromDict({"sources": [{**source, "queue": "q"}]})
    assert "sources[0] (service: c): queue: no queue named 'q'" in str(raised.value.problems[0])


def test_new_queue_settings_apply_after_a_reload() -> None:
    clock = Clock()
    duct = FakeDuct(clock=clock, config={"queues": {"q": {"concurrency": 1}}})
    from duct.jobs.registry import jobsOf

    jobs = jobsOf(duct)
    started, work = pending()
    made = [jobs.submit("x", "q", work) for _ in range(3)]
    assert [j.state for j in made] == ["running", "waiting", "waiting"]
    duct.config = {"queues": {"q": {"concurrency": 3}, "new": {}}}
    assert jobsOf(duct) is jobs
    assert [j.state for j in made] == ["running"] * 3
    assert set(jobs.queues) == {"default", "q", "new"}
