"""A job's result tells apart a check that failed, one that could not run, a kill and a cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from localservers import freePort
from sshserver import SSHD

from duct.sources.command import Command
from duct.testing import FakeDuct, SourceHarness, waitFor


def harness(reactor: Any, queues: Any = None, **config: Any) -> SourceHarness:
    duct = FakeDuct(reactor=reactor, config={"queues": queues or {}})
    return SourceHarness(Command, {"service": "svc", **config}, duct=duct)


async def ended(reactor: Any, check: SourceHarness) -> Any:
    source: Any = check.source
    job = source.submit()
    await waitFor(reactor, lambda: job.ended, "the job to end", timeout=30)
    return job, source.eventsOf(job)


@pytest_twisted.ensureDeferred
async def test_a_check_that_ran_and_failed_over_ssh(
    reactor: Any, sshd: SSHD, tmp_path: Path
) -> None:
    options = sshd.options(sshd.knownHosts(tmp_path / "known_hosts"))
    check = harness(reactor, command="echo 'DISK CRITICAL - full'; exit 2", shell=True,
                    ssh_host="127.0.0.1", **options)  # fmt: skip
    try:
        job, events = await ended(reactor, check)
    finally:
        await check.duct.ssh.stopService()
    assert job.state == "finished"
    assert (job.result.outcome, job.result.code) == ("failed", 2)
    assert job.result.stdout == "DISK CRITICAL - full\n"
    assert [(e.state, e.description) for e in events] == [("critical", "DISK CRITICAL - full")]


@pytest_twisted.ensureDeferred
async def test_an_unreachable_ssh_host_is_a_transport_error(reactor: Any) -> None:
    check = harness(reactor, command="true", use_ssh=True, ssh_host="127.0.0.1",
                    ssh_port=freePort(), ssh_username="nobody", ssh_password="x",
                    timeout=5)  # fmt: skip
    try:
        job, events = await ended(reactor, check)
    finally:
        await check.duct.ssh.stopService()
    assert job.state == "failed-to-run"
    assert job.result.outcome == "transport_error" and job.result.code is None
    assert "127.0.0.1" in job.result.reason
    assert events[0].state == "critical" and "failed-to-run" in events[0].description


@pytest_twisted.ensureDeferred
async def test_killed_and_cancelled_are_told_apart(reactor: Any, tmp_path: Path) -> None:
    hang = f"echo started; while [ ! -e {tmp_path / 'never'} ]; do sleep 0.02; done"
    killed, events = await ended(
        reactor,
        harness(reactor, {"q": {"max_exec_time": 0.5}}, command=hang, shell=True, queue="q"),
    )
    assert (killed.state, killed.result.outcome) == ("killed", "killed")
    assert "longer than 0.5s" in killed.result.reason
    assert events[0].state == "critical" and "killed" in events[0].description
    check = harness(reactor, command=hang, shell=True)
    source: Any = check.source
    job = source.submit()
    await waitFor(reactor, lambda: job.last >= 1, "the job's first line")
    assert source.jobs.cancel(job)
    await waitFor(reactor, lambda: job.ended, "the cancel")
    assert (job.state, job.result.outcome) == ("cancelled", "cancelled")
    assert [line for _, line in job.lines] == ["started"]
