"""``/metrics``: the statistics in Prometheus's text format.

A collector on a registry of its own (never prometheus_client's global
one) turns each `duct.stats.snapshot` into metric families, named from
the declarations in `duct.stats` and in each plugin class's ``stats``:
``duct_source_<metric>{source=...}``, ``duct_output_<metric>{output=...}``,
``duct_plugin_<metric>{plugin=...}`` and ``duct_process_<metric>``.
Counters are counters (``_total``), gauges are gauges, true is 1; drops
carry their reason: ``duct_output_events_dropped_total{output, reason}``.
The parent of workers labels every sample with its ``worker``
(`duct.workers.stats.labelled`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.web.server import NOT_DONE_YET, Request

from duct import __version__
from duct.stats import (
    OUTPUT_STATS,
    PLUGIN_STATS,
    PROCESS_STATS,
    SOURCE_STATS,
    Stat,
    entryStats,
    snapshot,
)
from duct.web.responses import LeafResource

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which generate_latest writes and every Prometheus reads."""


def _family(name: str, stat: Stat, labels: list[str]) -> CounterMetricFamily | GaugeMetricFamily:
    make = CounterMetricFamily if stat.kind == "counter" else GaugeMetricFamily
    return make(name, stat.doc, labels=labels)


def _entries(
    scope: str, stats: Iterable[Stat], entries: Mapping[str, Mapping[str, Any]]
) -> Iterator[Metric]:
    """One family per statistic, one sample per entry (per reason, for drops)."""
    for stat in stats:
        labels = [scope] + ([stat.label] if stat.label else [])
        family = _family(f"duct_{scope}_{stat.metric}", stat, labels)
        for name, entry in entries.items():
            value = entry.get(stat.key)
            if value is None:
                continue
            if stat.label is not None:
                for key, count in sorted(value.items()):
                    family.add_metric([name, key], float(count))
            else:
                family.add_metric([name], float(value))
        if family.samples:
            yield family


def families(snap: Mapping[str, Any]) -> Iterator[Metric]:
    """The metric families of a snapshot."""
    info = GaugeMetricFamily("duct_info", "duct's version and host", labels=["version", "hostname"])
    info.add_metric([__version__, str(snap.get("hostname") or "")], 1.0)
    yield info
    process = snap.get("process") or {}
    for stat in PROCESS_STATS:
        if stat.key in process and stat.key != "pid":
            family = _family(f"duct_process_{stat.metric}", stat, [])
            family.add_metric([], float(process[stat.key]))
            yield family
    for scope, base, part in (
        ("source", SOURCE_STATS, "sources"),
        ("output", OUTPUT_STATS, "outputs"),
    ):
        entries = snap.get(part) or {}
        yield from _entries(scope, entryStats(base, entries.values()), entries)
    yield from _entries("plugin", PLUGIN_STATS, snap.get("plugins") or {})


class SnapshotCollector:
    """A prometheus_client collector that reads the service at each scrape."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        yield from families(snapshot(self.service))


class MetricsResource(LeafResource):
    """Answers GET with the exposition of a private registry holding one `SnapshotCollector`."""

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(service))

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        if getattr(self.service, "workers", None) is None:
            return generate_latest(self.registry)
        from duct.web.stats import failed, finish
        from duct.workers.stats import gatherFamilies

        d = Deferred.fromCoroutine(gatherFamilies(self.service))
        d.addCallback(lambda found: finish(request, generate_latest(_Fixed(found))))
        d.addErrback(failed, request)
        return NOT_DONE_YET


class _Fixed:
    """A registry-like collector of families already gathered."""

    def __init__(self, found: list[Metric]) -> None:
        self.found = found

    def collect(self) -> Iterator[Metric]:
        yield from self.found
