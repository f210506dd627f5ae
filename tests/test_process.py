"""duct.sources.linux.process: real processes the tests start, here and over SSH."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_twisted
from sshserver import SSHD

from duct.objects import Event
from duct.sources.linux.process import PS_COMMAND, Process, ProcessCount, ProcessStats, parsePS
from duct.testing import FakeDuct, SourceHarness, configure, waitFor


@pytest.fixture
def sleeper() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``sleep 60 0.NNNN``: one process, with a fraction no other has for a marker."""
    marker = f"0.{random.randrange(10**8):08d}"
    process = subprocess.Popen(["sleep", "60", marker])
    try:
        yield process, marker
    finally:
        process.kill()
        process.wait()


def harness(reactor: Any, cls: type, **config: Any) -> SourceHarness:
    return SourceHarness(cls, {"service": "svc", **config}, duct=FakeDuct(reactor=reactor))


def byService(events: list[Event]) -> dict[str, Event]:
    return {event.service: event for event in events}


async def running(reactor: Any, check: SourceHarness, count: int) -> dict[str, Event]:
    """Poll until ``svc.running`` is ``count`` (a child appears once it has exec'd)."""

    async def poll() -> dict[str, Event] | None:
        events = byService(await check.poll())
        return events if events["svc.running"].metric == count else None

    found: dict[str, Event] = await waitFor(reactor, poll, f"{count} running")
    return found


@pytest_twisted.ensureDeferred
async def test_a_process_by_its_command_line(reactor: Any, sleeper: Any) -> None:
    process, marker = sleeper
    check = harness(reactor, Process, cmdline=rf"^sleep 60 {marker}$")
    events = await running(reactor, check, 1)
    assert events["svc.running"].state == "ok"
    assert f"pid {process.pid}" in events["svc.running"].description
    assert events["svc.rss"].metric > 0 and events["svc.threads"].metric == 1
    assert events["svc.files"].metric >= 3  # stdin, stdout, stderr
    assert 0 <= events["svc.uptime"].metric < 60 and events["svc.cpu"].metric >= 0

    process.kill()
    process.wait()
    [gone] = await check.poll()
    assert (gone.service, gone.metric, gone.state) == ("svc.running", 0, "critical")
    assert gone.description == f"no process runs for cmdline '^sleep 60 {marker}$'"


@pytest_twisted.ensureDeferred
async def test_a_process_by_pidfile_and_name(reactor: Any, sleeper: Any, tmp_path: Path) -> None:
    process, _ = sleeper
    pidfile = tmp_path / "sleep.pid"
    pidfile.write_text(f"{process.pid}\n")
    await running(reactor, harness(reactor, Process, pidfile=str(pidfile), name="sleep"), 1)
    [other] = await harness(reactor, Process, pidfile=str(pidfile), name="nginx").poll()
    assert other.state == "critical"

    [missing] = await harness(reactor, Process, pidfile=str(tmp_path / "none.pid")).poll()
    assert missing.state == "critical" and "none.pid" in missing.description


@pytest_twisted.ensureDeferred
async def test_a_process_by_systemd_unit(
    reactor: Any, sleeper: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit's main pid comes from ``systemctl show``: here a stand-in that prints it."""
    process, _ = sleeper
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(
        '#!/bin/sh\n[ "$*" = "show -p MainPID --value sleeper.service" ] && '
        f"echo {process.pid} || echo 0\n"
    )
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    await running(reactor, harness(reactor, Process, unit="sleeper.service"), 1)
    [stopped] = await harness(reactor, Process, unit="other.service").poll()
    assert stopped.state == "critical" and "unit 'other.service'" in stopped.description


def test_a_process_check_needs_something_to_select_by() -> None:
    with pytest.raises(ValueError, match="give at least one of name, cmdline, pidfile or unit"):
        configure(Process, {"service": "svc"})
    with pytest.raises(ValueError, match="cmdline: not a valid regular expression"):
        configure(Process, {"service": "svc", "cmdline": "(unclosed"})


@pytest_twisted.ensureDeferred
async def test_process_count(reactor: Any) -> None:
    [event] = await harness(reactor, ProcessCount).poll()
    assert event.service == "svc" and abs(event.metric - len(psutil.pids())) < 20


@pytest_twisted.ensureDeferred
async def test_process_stats_names_programs_and_users(reactor: Any, sleeper: Any) -> None:
    check = harness(reactor, ProcessStats)
    events = byService(await check.poll())
    user = psutil.Process().username().lower()
    for name in ("proc.sleep.cpu", "proc.sleep.mem", "proc.sleep.age",
                 f"user.{user}.cpu", f"user.{user}.mem"):  # fmt: skip
        assert f"svc.{name}" in events, name
    assert events["svc.proc.sleep.mem"].metric > 0
    assert not any(".kthreadd." in service for service in events)  # kernel threads left out
    assert all(e.service.rsplit(".", 1)[1] in ("cpu", "mem", "age") for e in events.values())


def test_ps_output_reads_as_psutil_does() -> None:
    output = (
        "    1 root       9000   12400   6.50   12 systemd  /sbin/init splash\n"
        "    2 root       9000       0   0.00    1 kthreadd [kthreadd]\n"
        "  812 www-data    100    2048   1.00    2 nginx    nginx: worker process\n"
        "  999 me            0     900   0.00    1 ps       " + " ".join(PS_COMMAND) + "\n"
    )
    init, kthreadd, nginx = parsePS(output, now=10_000.0)
    assert init.argv == ("/sbin/init", "splash") and init.rss == 12400 * 1024
    assert (init.cpu, init.started, init.threads, init.files) == (6.5, 1000.0, 12, None)
    assert kthreadd.kernel and not nginx.kernel and nginx.user == "www-data"


@pytest_twisted.ensureDeferred
async def test_the_process_checks_over_ssh(
    reactor: Any, sleeper: Any, sshd: SSHD, tmp_path: Path
) -> None:
    process, marker = sleeper
    duct = FakeDuct(reactor=reactor)
    remote = {"ssh_host": "127.0.0.1", **sshd.options(sshd.knownHosts(tmp_path / "known"))}
    try:
        check = SourceHarness(Process, {"service": "svc", "cmdline": marker, **remote},
                              duct=duct)  # fmt: skip
        events = await running(reactor, check, 1)
        assert "svc.files" not in events and events["svc.rss"].metric > 0
        assert events["svc.running"].hostname == "127.0.0.1"
        stats = SourceHarness(ProcessStats, {"service": "svc", **remote}, duct=duct)
        services = {e.service for e in await stats.poll()}
        assert {"svc.proc.sleep.mem", f"svc.user.{sshd.user.lower()}.cpu"} <= services
        assert not any(".ps." in s or s.startswith("svc.proc.ps.") for s in services)
        [count] = await SourceHarness(ProcessCount, {"service": "svc", **remote},
                                      duct=duct).poll()  # fmt: skip
        assert count.metric > 1
    finally:
        await duct.ssh.stopService()


def test_cpu_is_measured_between_polls_and_over_a_life_at_first() -> None:
    from duct.sources.linux.process import CPUMeter, ProcInfo

    def proc(pid: int, cpu: float, started: float = 1000.0) -> ProcInfo:
        return ProcInfo(pid, "me", "work", ("work",), 0, cpu, started, 1, None)

    meter = CPUMeter()
    assert meter.percent([proc(7, 5.0)], now=1100.0) == {7: 5.0}  # 5 s in 100 s of life
    assert meter.percent([proc(7, 8.0)], now=1110.0) == {7: 30.0}  # 3 s in the last 10 s
    assert meter.percent([proc(7, 1.0, started=1105.0)], now=1115.0) == {7: 10.0}  # a new 7
