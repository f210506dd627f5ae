"""duct.sources.database.memcache.Memcache: on a recorded memcached, and a real one."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from dbservers import Server
from replay import RefusingEndpoint, ReplayEndpoint, SilentEndpoint, recorded

from duct.sources.database.memcache import Memcache
from duct.testing import SourceHarness, recordingService, waitFor

STATS = b"stats\r\n"


def test_stats_from_a_recorded_memcached_1_6_with_the_original_names() -> None:
    harness = SourceHarness(Memcache, {"service": "memcache", "interval": 10}, pipeline=True)
    endpoint = ReplayEndpoint({STATS: recorded("memcached-1.6-stats.txt")})
    harness.source.endpoint = lambda: endpoint  # type: ignore[method-assign]
    harness.start()
    assert harness.latest("memcache.state").metric == 1
    assert harness.latest("memcache.curr.items").metric == 1
    assert harness.latest("memcache.curr.connections").metric >= 1
    harness.advance(10)
    assert harness.latest("memcache.get.hits").metric == 0.0  # a rate, from the second poll
    assert harness.latest("memcache.get.hits").description == "Get hits"
    services = {e.service for e in harness.events}
    assert {"memcache.cmd.get", "memcache.bytes.read", "memcache.hash.bytes",
            "memcache.bytes", "memcache.evictions"} <= services  # fmt: skip
    assert endpoint.transports[0].closed and harness.errors == []


def test_refused_and_silent_servers_are_critical() -> None:
    for endpoint in (RefusingEndpoint(), SilentEndpoint()):
        harness = SourceHarness(Memcache, {"service": "mc", "timeout": 3})
        harness.source.endpoint = lambda e=endpoint: e  # type: ignore[method-assign]
        harness.start()
        harness.advance(3)
        [state] = harness.events
        assert (state.service, state.state, state.metric) == ("mc.state", "critical", 0)
        assert state.description.startswith("Connection refused")


def test_an_error_line_is_critical() -> None:
    harness = SourceHarness(Memcache, {"service": "mc"})
    harness.source.endpoint = lambda: ReplayEndpoint({STATS: b"ERROR\r\n"})  # type: ignore[method-assign]
    harness.start()
    assert harness.latest("mc.state").state == "critical"


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_memcached(reactor: Any, memcached_server: Server) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.database.memcache.Memcache", "service": "mc",
                     "interval": 0.3, "port": memcached_server.port}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def latest(name: str) -> Any:
        return next((e for e in reversed(output.written) if e.service == name), None)

    service.startService()
    try:
        await waitFor(reactor, lambda: latest("mc.cmd.set"), "a first rate", 30)
        with socket.create_connection(("127.0.0.1", memcached_server.port)) as s:
            s.sendall(b"set duct 0 0 2\r\nhi\r\n")
            assert s.recv(100) == b"STORED\r\n"
        await waitFor(reactor, lambda: (e := latest("mc.cmd.set")) and e.metric > 0, "sets", 30)
    finally:
        await service.stopService()
    assert latest("mc.state").metric == 1 and latest("mc.curr.items").metric >= 1
    assert service.sources[0].errors == 0
