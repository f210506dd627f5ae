"""The agent as a user runs it: a real twistd process on a real config."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import error, protocol
from twisted.internet.defer import Deferred

from duct import testing

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent

DEADLINE = 30.0  # seconds a real process may take before the test gives up


class Collect(protocol.ProcessProtocol):
    """Keeps a process's output and fires ``ended`` with its exit code."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        code = (
            value.exitCode
            if isinstance(value, (error.ProcessDone, error.ProcessTerminated))
            else None
        )
        self.ended.callback(code)


def writeConfig(tmp_path: Path, events: Path) -> Path:
    config = tmp_path / "duct.yml"
    config.write_text(
        f"""
interval: 0.2
stagger: 0
outputs:
  - output: duct.outputs.file.JSONLines
    path: {events}
    flush_interval: 0.1
sources:
  - service: load
    source: duct.sources.linux.basic.LoadAverage
  - service: memory
    source: duct.sources.linux.basic.Memory
"""
    )
    return config


def spawn(reactor: Any, argv: list[str]) -> tuple[Collect, Any]:
    proto = Collect()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    transport = reactor.spawnProcess(proto, argv[0], argv, env=env, path=str(ROOT))
    return proto, transport


def waitFor(reactor: Any, check: Any, what: str) -> Deferred[Any]:
    """Poll ``check`` on the real reactor (no blocking sleep) until it is true."""
    return testing.waitFor(reactor, check, what, DEADLINE, interval=0.1)


def readEvents(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def runAndStop(reactor: Any, argv: list[str], events: Path) -> tuple[Collect, int | None]:
    proto, transport = spawn(reactor, argv)
    try:
        await waitFor(
            reactor,
            lambda: {e["service"] for e in readEvents(events)} >= {"load", "memory"},
            "events in the output file",
        )
        transport.signalProcess("TERM")
        code = await proto.ended
    finally:
        if not proto.ended.called:
            transport.signalProcess("KILL")
    return proto, code


@pytest_twisted.ensureDeferred
async def test_twistd_runs_writes_events_and_stops_cleanly(reactor: Any, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = writeConfig(tmp_path, events)
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "--config", str(config)]

    proto, code = await runAndStop(reactor, argv, events)

    assert code == 0, proto.output.decode()
    lines = readEvents(events)
    load = [e for e in lines if e["service"] == "load"]
    assert load and all(e["metric"] >= 0 and e["ttl"] == 60.0 for e in load)
    assert all(isinstance(e["time"], float) for e in lines)
    log = proto.output.decode()
    assert "duct stopped; 0 events undelivered" in log
    assert "Traceback" not in log


@pytest_twisted.ensureDeferred
async def test_duct_run_is_the_same_service(reactor: Any, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = writeConfig(tmp_path, events)
    argv = [str(BIN / "duct"), "run", "-c", str(config)]

    proto, code = await runAndStop(reactor, argv, events)

    assert code == 0, proto.output.decode()
    assert "duct stopped" in proto.output.decode()


@pytest_twisted.ensureDeferred
async def test_sighup_reopens_the_output_file(reactor: Any, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    rotated = tmp_path / "events.jsonl.1"
    config = writeConfig(tmp_path, events)
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "--config", str(config)]
    proto, transport = spawn(reactor, argv)
    try:
        await waitFor(reactor, lambda: readEvents(events), "first events")
        events.rename(rotated)
        transport.signalProcess("HUP")
        await waitFor(reactor, lambda: readEvents(events), "events in the reopened file")
        transport.signalProcess("TERM")
        code = await proto.ended
    finally:
        if not proto.ended.called:
            transport.signalProcess("KILL")
    assert code == 0, proto.output.decode()
    assert readEvents(rotated) and readEvents(events)


@pytest_twisted.ensureDeferred
async def test_invalid_config_exits_nonzero_without_traceback(reactor: Any, tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text(
        "sources:\n  - service: cpu\n    source: duct.sources.linux.basic.CPU\n    colour: red\n"
    )
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "--config", str(config)]
    proto, _ = spawn(reactor, argv)
    code = await proto.ended
    output = proto.output.decode()
    assert code == 1
    assert f"{config}: sources[0] (service: cpu): colour: unknown key" in output
    assert "Traceback" not in output


@pytest_twisted.ensureDeferred
async def test_an_output_that_cannot_be_built_stops_startup_cleanly(
    reactor: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = tmp_path / "duct.yml"
    config.write_text(
        "outputs:\n"
        "  - output: duct.outputs.null.Null\n"
        f"    buffer: {{type: disk, path: {blocker / 'spool'}}}\n"
    )
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "--config", str(config)]
    proto, _ = spawn(reactor, argv)
    code = await proto.ended
    output = proto.output.decode()
    assert code == 1
    # Found by the loader, as `duct check` finds it, with the key at fault.
    item = "outputs[0] (output: duct.outputs.null.Null)"
    assert f"{config}: {item}: buffer.path: cannot make the directory" in output
    assert "Traceback" not in output
