"""duct.sources.command: real commands and the Debian monitoring-plugins, unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from localservers import debianBinary, freePort

from duct.event import Event
from duct.sources.command import Command, commandArgv
from duct.testing import FakeDuct, SourceHarness, configure

PLUGINS = "/usr/lib/nagios/plugins"


def harness(reactor: Any, **config: Any) -> SourceHarness:
    return SourceHarness(Command, {"service": "svc", **config}, duct=FakeDuct(reactor=reactor))


def plugin(name: str) -> str:
    path = debianBinary(f"{PLUGINS}/{name}", "monitoring-plugins")
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/test-deps.sh (as root) or make test")
    return path


def byService(events: list[Event]) -> dict[str, Event]:
    return {event.service: event for event in events}


def test_command_forms() -> None:
    assert commandArgv("echo 'a b' c", False) == ["echo", "a b", "c"]
    assert commandArgv("echo $HOME | wc", True) == ["/bin/sh", "-c", "echo $HOME | wc"]
    assert commandArgv(["echo", "a b"], True) == ["/bin/sh", "-c", "echo 'a b'"]
    with pytest.raises(ValueError):
        configure(Command, {"service": "x", "command": 3})
    with pytest.raises(ValueError, match="format"):
        configure(Command, {"service": "x", "command": "true", "format": "xml"})


@pytest_twisted.ensureDeferred
async def test_check_load(reactor: Any) -> None:
    check = harness(reactor, command=[plugin("check_load"), "-w", "1000,1000,1000", "-c",
                                      "2000,2000,2000"])  # fmt: skip
    events = byService(await check.poll())
    assert events["svc"].state == "ok"
    assert events["svc"].description.startswith("LOAD OK")
    assert {"svc.load1", "svc.load5", "svc.load15"} <= set(events)
    assert events["svc.load1"].state == "ok" and events["svc.load1"].metric >= 0
    assert events["svc.load1"].attributes["warn"] == "1000.000"


@pytest_twisted.ensureDeferred
async def test_check_disk_unit_attribute(reactor: Any) -> None:
    check = harness(reactor, command=f"{plugin('check_disk')} -w 0% -c 0% -p /")
    events = byService(await check.poll())
    assert events["svc"].state == "ok", events["svc"].description
    assert events["svc./"].attributes["unit"] in ("B", "MB", "MiB")
    assert events["svc./"].metric > 0


@pytest_twisted.ensureDeferred
async def test_check_procs_warning(reactor: Any) -> None:
    check = harness(reactor, command=[plugin("check_procs"), "-w", "0", "-c", "100000"])
    events = byService(await check.poll())
    assert events["svc"].state == "warning"
    assert events["svc"].metric == 1.0
    assert events["svc.procs"].state == "warning"


@pytest_twisted.ensureDeferred
async def test_check_tcp_refused_is_critical(reactor: Any) -> None:
    port = freePort()
    check = harness(reactor, command=[plugin("check_tcp"), "-H", "127.0.0.1", "-p", str(port)])
    events = byService(await check.poll())
    assert events["svc"].state == "critical"
    assert "refused" in events["svc"].description.lower()


@pytest_twisted.ensureDeferred
async def test_nonstandard_status_is_unknown_with_the_reason(reactor: Any) -> None:
    check = harness(reactor, command="echo hello; exit 7", shell=True)
    (event,) = await check.poll()
    assert event.state == "unknown"
    assert event.description == "hello (exit status 7 is not a Nagios plugin status (0-3))"


@pytest_twisted.ensureDeferred
async def test_json_format(reactor: Any) -> None:
    out = json.dumps([{"service": "a", "metric": 2, "state": "ok", "attributes": {"k": "v"}},
                      {"description": "whole", "ttl": 5}])  # fmt: skip
    check = harness(reactor, command=["printf", "%s", out], format="json")
    events = byService(await check.poll())
    assert events["svc.a"].metric == 2 and events["svc.a"].attributes == {"k": "v"}
    assert events["svc"].description == "whole" and events["svc"].ttl == 5.0
    bad = harness(reactor, command=["echo", "nope"], format="json")
    (event,) = await bad.poll()
    assert event.state == "critical" and "not JSON" in event.description


@pytest_twisted.ensureDeferred
async def test_metric_format(reactor: Any) -> None:
    check = harness(reactor, command="echo 42.5", format="metric")
    (event,) = await check.poll()
    assert (event.state, event.metric) == ("ok", 42.5)
    failed = harness(reactor, command="echo 3; exit 1", shell=True, format="metric")
    (event,) = await failed.poll()
    assert event.state == "critical" and "exited with 1" in event.description


@pytest_twisted.ensureDeferred
async def test_a_missing_command_is_critical(reactor: Any) -> None:
    check = harness(reactor, command="/nonexistent/check_nothing")
    (event,) = await check.poll()
    assert event.state == "critical"
    assert "failed-to-run" in event.description and "not found" in event.description
