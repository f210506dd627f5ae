"""duct.sources.docker.ContainerStats against Debian's dockerd, and on answers built by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from dockerserver import BUSY, MARATHON_APP

from duct.sources.docker import ContainerStats, containerName, cpuTimes, figures
from duct.testing import FakeDuct, SourceHarness, waitFor


def harness(reactor: Any, url: str) -> SourceHarness:
    duct = FakeDuct(clock=reactor, reactor=reactor)
    return SourceHarness(ContainerStats, {"service": "docker", "url": url}, duct=duct)


@pytest_twisted.ensureDeferred
async def test_containers_give_memory_cpu_and_their_marathon_names(
    reactor: Any, docker_engine: Any
) -> None:
    h = harness(reactor, f"unix:{docker_engine.socket}")
    first = await h.poll()
    got = {e.service: e for e in first}
    app = MARATHON_APP.lstrip("/")
    for name in (app, BUSY):
        assert got[f"docker.{name}.mem_used"].metric > 0
        assert got[f"docker.{name}.mem_limit"].metric >= got[f"docker.{name}.mem_used"].metric
    assert not any(e.service.endswith(".cpu") for e in first)  # a rate needs two polls

    async def busy() -> float:
        events = await h.poll()
        cpu = [e.metric for e in events if e.service == f"docker.{BUSY}.cpu"]
        return bool(cpu and cpu[0] > 0)

    await waitFor(reactor, busy, "CPU time spent by the busy container", 30, interval=0.5)
    assert h.source.skipped == 0


@pytest_twisted.ensureDeferred
async def test_a_container_that_is_gone_is_skipped_and_counted(
    reactor: Any, docker_engine: Any
) -> None:
    h = harness(reactor, f"unix:{docker_engine.socket}")
    cid, times, events = await h.source._container({"Id": "0" * 64, "Names": ["/gone"]})
    assert (times, events, h.source.skipped) == (None, [], 1)


@pytest_twisted.ensureDeferred
async def test_an_engine_that_cannot_be_reached_is_critical(reactor: Any, tmp_path: Path) -> None:
    h = harness(reactor, f"unix:{tmp_path / 'no.sock'}")
    [event] = await h.poll()
    assert (event.service, event.state) == ("docker.state", "critical")
    assert "Error reading containers" in (event.description or "")


def test_figures_from_a_cgroup_v1_answer_sum_devices_and_lower_op_names() -> None:
    stats = {
        "memory_stats": {"usage": 2048, "limit": 8192},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 8, "minor": 0, "op": "Read", "value": 100},
            {"major": 8, "minor": 16, "op": "Read", "value": 50},
            {"major": 8, "minor": 0, "op": "Write", "value": 7},
            {"major": 8, "minor": 0, "op": "Total", "value": 157}]},
        "cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 100},
    }  # fmt: skip
    assert figures(stats) == {"mem_used": 2048, "mem_limit": 8192, "io_read": 150,
                              "io_write": 7, "io_total": 157}  # fmt: skip
    assert cpuTimes(stats) == (100.0, 5.0)
    assert figures({"blkio_stats": {"io_service_bytes_recursive": None}}) == {}
    assert cpuTimes({"cpu_stats": {}}) is None


def test_a_container_is_named_by_marathon_or_by_its_first_name() -> None:
    container = {"Id": "abc", "Names": ["/web", "/other/alias"]}
    assert containerName(container, {"Config": {"Env": ["A=1"]}}) == "web"
    assert containerName(container, {"Config": {"Env": ["MARATHON_APP_ID=/a/b"]}}) == "a/b"
    assert containerName({"Id": "0123456789abcdef"}, None) == "0123456789ab"


@pytest_twisted.ensureDeferred
async def test_an_answer_past_the_size_limit_is_refused_over_http(
    reactor: Any, monkeypatch: Any
) -> None:
    from fakeapis import Served
    from twisted.web import resource

    import duct.sources.docker

    class Containers(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            return b"[" + b",".join([b'{"Id": "abc"}'] * 500) + b"]"

    served = Served(reactor, Containers())
    monkeypatch.setattr(duct.sources.docker, "MAX_BODY", 1000)
    try:
        [event] = await harness(reactor, served.url).poll()
        assert (event.service, event.state) == ("docker.state", "critical")
        assert "larger than 1000 bytes" in (event.description or "")
    finally:
        await served.stop()
