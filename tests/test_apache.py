"""duct.sources.apache.Apache: on a recorded mod_status page, and against a real apache2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from silentserver import listenSilently

from duct.sources.apache import Apache
from duct.testing import SourceHarness, StubHTTP, recordingService, waitFor

RECORDED = (Path(__file__).parent / "data" / "apache-status.txt").read_bytes()


def test_the_recorded_status_page_gives_the_original_metrics() -> None:
    http = StubHTTP({"/server-status": RECORDED})
    harness = SourceHarness(Apache, {"service": "apache", "url": "http://web/server-status?auto"},
                            http=http)  # fmt: skip
    harness.start()
    got = {e.service: e.metric for e in harness.events}
    assert got["apache.state"] == 1 and harness.latest("apache.state").state == "ok"
    assert got["apache.accesses"] == 3 and got["apache.total_kbytes"] == 1
    assert (got["apache.workers.busy"], got["apache.workers.idle"]) == (1, 7)
    assert got["apache.bytes_req"] == 341.333 and got["apache.request_rate"] == 3.0
    assert got["apache.conns.active"] == 0 and got["apache.conns.keep_alive"] == 0
    assert len(got) == 14 and harness.errors == []


def test_an_error_or_another_page_is_critical() -> None:
    http = StubHTTP({"/server-status": (500, "broken")})
    config = {"service": "apache", "interval": 5, "stats_url": "http://web/server-status?auto"}
    harness = SourceHarness(Apache, config, http=http)
    harness.start()
    assert harness.latest("apache.state").state == "critical"
    http.routes["/server-status"] = "<html>It works!</html>"
    harness.advance(5)
    state = harness.latest("apache.state")
    assert state.state == "critical" and "not a mod_status" in (state.description or "")
    assert harness.errors == []


@pytest_twisted.ensureDeferred
async def test_a_server_that_does_not_answer_is_critical_within_the_timeout(reactor: Any) -> None:
    port = listenSilently(reactor)
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.apache.Apache", "service": "apache", "interval": 60,
                     "timeout": 0.3, "url": f"http://127.0.0.1:{port.getHost().port}/x?auto"}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)
    service.startService()
    try:
        [state] = await waitFor(reactor, lambda: output.written, "the state event", 10)
    finally:
        await service.stopService()
        await port.stopListening()
    assert (state.service, state.state) == ("apache.state", "critical")
    assert "timed out" in state.description


@pytest_twisted.ensureDeferred
async def test_duct_polls_a_real_apache(reactor: Any, apache: Any) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.apache.Apache", "service": "apache",
                     "interval": 0.3, "url": f"http://127.0.0.1:{apache.port}/server-status?auto"}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def accesses() -> list[float]:
        return [e.metric for e in output.written if e.service == "apache.accesses"]

    service.startService()
    try:
        await waitFor(reactor, accesses, "a first poll", 30)
        before = accesses()[-1]
        for _ in range(5):
            await (await treq.get(f"http://127.0.0.1:{apache.port}/index.html")).text()
        await waitFor(reactor, lambda: accesses()[-1] >= before + 6, "the requests counted", 30)
    finally:
        await service.stopService()
    states = {e.state for e in output.written if e.service == "apache.state"}
    assert states == {"ok"}, apache.output()
    busy = [e for e in output.written if e.service == "apache.workers.busy"]
    assert busy[-1].metric >= 1  # the worker answering the poll
