"""duct.sources.prometheus.Scrape: on a recorded node exporter page, against duct's own
/metrics and against a real prometheus-node-exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from localservers import freePort
from silentserver import listenSilently

from duct.service import DuctService
from duct.sources.prometheus import Scrape
from duct.testing import SourceHarness, StubHTTP, recordingService, waitFor

RECORDED = (Path(__file__).parent / "data" / "node-exporter.txt").read_bytes()


def test_a_recorded_node_exporter_page_gives_one_event_per_sample() -> None:
    http = StubHTTP({"/metrics": RECORDED})
    config = {"service": "node", "interval": 10, "url": "http://host:9100/metrics"}
    harness = SourceHarness(Scrape, config, http=http, pipeline=True)
    harness.start()
    info = harness.latest("node.go_info")
    assert (info.metric, info.attributes) == (1, {"version": "go1.19.8"})
    quantile = [e for e in harness.events if e.service == "node.go_gc_duration_seconds"]
    assert {e.attributes["quantile"] for e in quantile if e.attributes} >= {"0", "0.5", "1"}
    assert not any(e.service == "node.go_memstats_alloc_bytes_total" for e in harness.events)
    grown = RECORDED.replace(b"go_memstats_alloc_bytes_total 936976",
                             b"go_memstats_alloc_bytes_total 946976")  # fmt: skip
    http.routes["/metrics"] = grown
    harness.advance(10)
    assert harness.latest("node.go_memstats_alloc_bytes_total").metric == 1000.0  # per second
    assert harness.latest("node.state").state == "ok" and harness.errors == []


def test_max_samples_bounds_a_scrape_and_counts_the_rest() -> None:
    http = StubHTTP({"/metrics": RECORDED})
    config = {"service": "node", "url": "http://host/metrics", "max_samples": 20}
    harness = SourceHarness(Scrape, config, http=http)
    harness.start()
    assert len(harness.events) == 21  # the state and 20 samples
    assert harness.source.dropped > 400


def test_a_page_that_does_not_parse_or_an_error_is_critical() -> None:
    http = StubHTTP({"/metrics": "this is { not exposition"})
    harness = SourceHarness(Scrape, {"service": "x", "interval": 5, "url": "http://h/metrics"},
                            http=http)  # fmt: skip
    harness.start()
    assert harness.latest("x.state").state == "critical"
    http.routes["/metrics"] = (500, "no")
    harness.advance(5)
    assert [e.state for e in harness.events] == ["critical", "critical"]


async def scrape(reactor: Any, url: str, done: Any, **more: Any) -> list[Any]:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.prometheus.Scrape", "service": "scraped",
                     "interval": 0.3, "url": url, **more}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)
    service.startService()
    try:
        await waitFor(reactor, lambda: done(output.written), "the samples", 30)
    finally:
        await service.stopService()
    return output.written


@pytest_twisted.ensureDeferred
async def test_a_silent_endpoint_is_critical_within_the_timeout(reactor: Any) -> None:
    port = listenSilently(reactor)
    url = f"http://127.0.0.1:{port.getHost().port}/metrics"
    events = await scrape(reactor, url, lambda e: e, timeout=0.3)
    await port.stopListening()
    assert [(e.service, e.state) for e in events] == [("scraped.state", "critical")]


@pytest_twisted.ensureDeferred
async def test_duct_scrapes_its_own_metrics(reactor: Any) -> None:
    port = freePort()
    agent = DuctService({"stagger": 0, "web": {"listen": f"tcp:{port}:interface=127.0.0.1"},
                         "sources": [], "outputs": []}, reactor=reactor)  # fmt: skip
    agent.startService()
    try:

        def twice(written: list[Any]) -> bool:
            return len([e for e in written if e.service == "scraped.state"]) >= 2

        events = await scrape(reactor, f"http://127.0.0.1:{port}/metrics", twice)
    finally:
        await agent.stopService()
    names = {e.service for e in events}
    assert all(e.state == "ok" for e in events if e.service == "scraped.state")
    assert any(name.startswith("scraped.duct_") for name in names), sorted(names)[:20]


@pytest_twisted.ensureDeferred
async def test_duct_scrapes_a_real_node_exporter(reactor: Any, node_exporter: Any) -> None:
    url = f"http://127.0.0.1:{node_exporter.port}/metrics"

    def rated(events: list[Any]) -> bool:
        return any(e.service == "scraped.node_cpu_seconds_total" for e in events)

    events = await scrape(reactor, url, rated)
    cpu = [e for e in events if e.service == "scraped.node_cpu_seconds_total"]
    assert {"cpu", "mode"} <= set(cpu[0].attributes)
    assert all(e.state == "ok" for e in events if e.service == "scraped.state")
    assert any(e.service == "scraped.node_load1" for e in events)
