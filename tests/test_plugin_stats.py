"""Statistics a plugin declares next to its options reach /stats, /metrics and self events."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.task import Clock

from duct.objects import Event, Source
from duct.outputs.store import Store
from duct.service import DuctService
from duct.sources.linux.basic import CPU, DiskFree
from duct.sources.riemann import RiemannTCP, RiemannUDP
from duct.stats import (
    SOURCE_STATS,
    combine,
    counter,
    declaredStats,
    flatten,
    gauge,
    read,
    snapshot,
)
from duct.testing import FakeDuct
from duct.web.metrics import SnapshotCollector

HERE = __name__


class Fetching(Source):
    """Counts its own failed fetches: every other poll fails to fetch."""

    stats = (counter("http_errors", "httpErrors", "http_errors", "fetches that failed"),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.httpErrors = 0

    def get(self) -> Event:
        if self.polls % 2 == 0:
            self.httpErrors += 1
        return self.createEvent("ok", None, float(self.polls))


class FetchingMore(Fetching):
    stats = (gauge("last_status", "max", "lastStatus", "last_status", "last HTTP status"),)
    lastStatus = 200


def keys(cls: type) -> list[str]:
    return [stat.key for stat in declaredStats(cls)]


def test_declared_stats_merge_over_the_class_hierarchy() -> None:
    base = [stat.key for stat in SOURCE_STATS]
    assert keys(Fetching) == [*base, "http_errors"]
    assert keys(FetchingMore) == [*base, "http_errors", "last_status"]
    # A listener's counters belong to the listeners, not to every source.
    assert "malformed" not in keys(CPU) and "connections" not in keys(CPU)
    assert {"messages", "malformed", "held", "connections"} <= set(keys(RiemannTCP))
    assert "shed" in keys(RiemannUDP) and "connections" not in keys(RiemannUDP)
    assert "unreadable" in keys(DiskFree)
    assert {"points_written", "series_removed", "cleanups"} <= set(keys(Store))


def running(clock: Clock) -> DuctService:
    service = DuctService(
        {
            "hostname": "h",
            "stagger": 0,
            "sources": [
                {"source": f"{HERE}.FetchingMore", "service": "web", "interval": 1.0},
                {"source": "duct.sources.linux.basic.LoadAverage", "service": "load"},
            ],
            "outputs": [{"output": "duct.testing.RecordingOutput", "name": "out"}],
        },
        reactor=clock,
    )
    service.startService()
    for _ in range(4):
        clock.advance(1.0)
    return service


def test_a_plugins_own_counter_is_in_the_snapshot_totals_metrics_and_self_events() -> None:
    clock = Clock()
    service = running(clock)
    snap = snapshot(service)
    web = snap["sources"]["web"]
    assert web["polls"] == 4 and web["http_errors"] == 2 and web["last_status"] == 200
    assert "http_errors" not in snap["sources"]["load"]
    assert snap["totals"]["sources"]["http_errors"] == 2

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(service))
    text = generate_latest(registry).decode()
    assert 'duct_source_http_errors_total{source="web"} 2.0' in text
    assert 'duct_source_last_status{source="web"} 200.0' in text
    assert "# HELP duct_source_http_errors_total fetches that failed" in text

    flat = dict(flatten(snap))
    assert flat["source.web.http_errors"] == 2
    assert flat["total.source.http_errors"] == 2


def test_combining_snapshots_keeps_a_plugins_counters() -> None:
    snaps = [snapshot(running(Clock())) for _ in range(2)]
    merged = combine(snaps)
    assert merged["sources"]["web"]["http_errors"] == 4
    assert merged["totals"]["sources"]["http_errors"] == 4
    # An entry of a class this process cannot import keeps what every source has.
    alien = {**snaps[0]}
    alien["sources"] = {"x": {"class": "no.such.Plugin", "polls": 3, "widgets": 9}}
    assert combine([alien])["sources"]["x"] == {"class": "no.such.Plugin", "polls": 3}


def test_the_stores_cleanup_counters_are_reported() -> None:
    store = Store({"name": "s", "path": "unused"}, FakeDuct())
    store._cleaned((5, 2))
    entry = read(declaredStats(Store), store)
    assert (entry["points_removed"], entry["series_removed"], entry["cleanups"]) == (5, 2, 1)
