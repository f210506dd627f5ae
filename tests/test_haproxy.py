"""duct.sources.haproxy.HAProxy: on recorded stats, and against a real haproxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from silentserver import listenSilently

from duct.sources.haproxy import HAProxy
from duct.testing import SourceHarness, StubHTTP, recordingService, waitFor

RECORDED = (Path(__file__).parent / "data" / "haproxy-stats.csv").read_bytes()


def test_the_recorded_stats_name_frontends_backends_and_servers() -> None:
    http = StubHTTP({"/haproxy": RECORDED})
    config = {"service": "lb", "interval": 10, "url": "http://lb/haproxy?stats;csv"}
    harness = SourceHarness(HAProxy, config, http=http, pipeline=True)
    harness.start()
    assert harness.latest("lb.state").state == "ok"
    assert harness.latest("lb.frontends.web.sessions").metric == 1
    app, dead = harness.latest("lb.backends.app.active"), harness.latest("lb.backends.dead.active")
    assert (app.metric, app.state) == (1, "ok")
    assert (dead.metric, dead.state) == (0, "critical")
    assert harness.latest("lb.nodes.app.up.up").state == "ok"
    down = harness.latest("lb.nodes.app.down.up")
    assert (down.metric, down.state) == (0, "critical")
    assert harness.latest("lb.nodes.app.up.sessions").metric == 0
    http.routes["/haproxy"] = RECORDED.replace(
        b"web,FRONTEND,,,1,1,9984,5,", b"web,FRONTEND,,,1,1,9984,25,"
    )
    harness.advance(10)
    assert harness.latest("lb.frontends.web.session_rate").metric == 2.0  # 20 more in 10 s
    assert harness.errors == []


def test_an_unreachable_haproxy_is_critical() -> None:
    http = StubHTTP({"/haproxy": (503, "no")})
    harness = SourceHarness(HAProxy, {"service": "lb", "url": "http://lb/haproxy?stats;csv"},
                            http=http)  # fmt: skip
    harness.start()
    [state] = harness.events
    assert (state.service, state.state) == ("lb.state", "critical")


def test_a_socket_that_is_not_there_is_critical(tmp_path: Path) -> None:
    config = {"service": "lb", "socket": str(tmp_path / "nothing")}
    harness = SourceHarness(HAProxy, config, duct=None)
    harness.start()
    # the MemoryReactor records the connection; the timeout fires on its clock
    harness.advance(11)
    [state] = harness.events
    assert (state.service, state.state) == ("lb.state", "critical")


@pytest_twisted.ensureDeferred
async def test_a_silent_stats_page_is_critical_within_the_timeout(reactor: Any) -> None:
    port = listenSilently(reactor)
    url = f"http://127.0.0.1:{port.getHost().port}/haproxy?stats;csv"
    events = await run(reactor, {"url": url, "timeout": 0.3}, lambda e: e)
    await port.stopListening()
    assert [(e.service, e.state) for e in events] == [("lb.state", "critical")]


async def run(reactor: Any, source: dict[str, Any], done: Any) -> list[Any]:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.haproxy.HAProxy", "service": "lb", "interval": 0.3,
                     **source}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)
    service.startService()
    try:
        await waitFor(reactor, lambda: done(output.written), "the events", 30)
    finally:
        await service.stopService()
    return output.written


def _states(events: list[Any]) -> dict[str, Any]:
    return {e.service: e for e in events}


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_haproxy_over_http_and_its_socket(
    reactor: Any, haproxy: Any
) -> None:
    def settled(events: list[Any]) -> bool:
        latest = _states(events)
        down = latest.get("lb.nodes.app.down.up")
        return down is not None and down.state == "critical" and "lb.backends.dead.active" in latest

    url = f"http://127.0.0.1:{haproxy.port}/haproxy?stats;csv"
    for source in ({"url": url}, {"socket": str(haproxy.root / "sock")}):
        latest = _states(await run(reactor, source, settled))
        assert latest["lb.state"].state == "ok", haproxy.output()
        assert latest["lb.backends.app.active"].metric == 1
        assert latest["lb.backends.app.active"].state == "ok"
        assert latest["lb.backends.dead.active"].state == "critical"
        assert latest["lb.nodes.app.up.up"].state == "ok"
        assert "lb.frontends.web.sessions" in latest
