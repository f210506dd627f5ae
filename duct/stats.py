"""duct's statistics about itself: sources, outputs, the process, and totals.

Nothing here is counted per event.  The sources, outputs and buffers keep
their own counters (``polls``, ``sent``, ``buffer.drops``, ...), and
`snapshot` reads them when someone asks: ``/stats``, ``/metrics``,
``/health``, or the `duct.sources.selfstats.SelfStats` source.

Each statistic is declared once, as a `Stat`: its key in the snapshot, whether
it is a counter or a gauge, its Prometheus name, and how values of the same
statistic combine (its *roll-up*): ``sum``, ``min``, ``max`` or ``none``.
The totals across sources and outputs are computed from that declaration,
and so is `combine`, which merges snapshots taken in several processes.

A snapshot is a plain dict that ``json.dumps`` takes as it is::

    {
      "time": 1700000000.0,                # the service clock's seconds
      "hostname": "web01",
      "process": {"pid": 4242, "start_time": ..., "uptime": ..., "rss_bytes": ...,
                  "cpu_seconds": ..., "open_fds": ..., "threads": ...},
      "sources": {"cpu": {"class": "duct.sources.linux.basic.CPU", "polls": 12, ...}},
      "outputs": {"riemann": {"class": "...", "events_sent": 1200,
                              "dropped": {"overflow": 3}, "connected": true, ...}},
      "totals": {"sources": {"count": 1, "polls": 12, ...},
                 "outputs": {"count": 1, "dropped": {"overflow": 3}, ...}}
    }

A statistic an object does not have (``connected`` for an output that has
no connection, ``malformed`` for a source that is not a listener, a
``last_ack_latency`` before the first ack) is left out of its entry.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

ROLLUPS = ("sum", "min", "max", "none")
KINDS = ("counter", "gauge")


@dataclass(frozen=True)
class Stat:
    """One statistic: how to read it, what it is, and how values of it combine.

    :param key: its key in a snapshot entry.
    :param kind: ``counter`` (only grows) or ``gauge``.
    :param rollup: how values from several objects or processes combine:
        ``sum``, ``min``, ``max``, or ``none`` (not combined).
    :param doc: one line, for ``/metrics`` and the documentation.
    :param metric: the Prometheus name after ``duct_<scope>_`` (counters
        get ``_total`` appended).
    :param read: the value from the object, or None when it has none.
    :param label: for a statistic that is a mapping (drops by reason), the
        Prometheus label its keys become.
    """

    key: str
    kind: str
    rollup: str
    doc: str
    metric: str
    read: Callable[[Any], Any]
    label: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.rollup not in ROLLUPS:
            raise ValueError(f"stat {self.key}: bad kind {self.kind!r} or rollup {self.rollup!r}")

    def value(self, obj: Any) -> Any:
        """The value read from ``obj``: a number, a bool, a mapping of numbers, or None."""
        try:
            value = self.read(obj)
        except (AttributeError, TypeError, ValueError, ZeroDivisionError):
            return None
        if self.label is not None:
            if not isinstance(value, Mapping):
                return None
            return {str(k): v for k, v in value.items() if _isNumber(v) and v}
        return value if _isNumber(value) else None


def _isNumber(value: Any) -> bool:
    # bool is a gauge's true/false (``connected``); other types are a plugin's own business.
    return isinstance(value, (int, float))


def attribute(name: str) -> Callable[[Any], Any]:
    """Read ``obj.<name>``; None when the object has no such attribute."""
    return lambda obj: getattr(obj, name, None)


def _size(name: str) -> Callable[[Any], Any]:
    def read(obj: Any) -> Any:
        value = getattr(obj, name, None)
        return len(value) if isinstance(value, (set, frozenset, list, dict)) else None

    return read


# fmt: off
SOURCE_STATS: tuple[Stat, ...] = (
    Stat("polls", "counter", "sum", "polls started", "polls", attribute("polls")),
    Stat(
        "errors", "counter", "sum", "polls that failed, or events refused", "errors",
        attribute("errors"),
    ),
    Stat(
        "skipped", "counter", "sum", "polls skipped: outputs full, or a sync poll still running",
        "polls_skipped", attribute("skipped"),
    ),
    Stat("emitted", "counter", "sum", "events produced", "events_emitted", attribute("emitted")),
    Stat(
        "last_poll_duration", "gauge", "max", "seconds the last poll took",
        "last_poll_duration_seconds", attribute("lastPollDuration"),
    ),
    Stat(
        "last_event_time", "gauge", "max", "clock time of the last event produced",
        "last_event_timestamp_seconds", attribute("lastEventTime"),
    ),
    # Riemann listeners.
    Stat(
        "malformed", "counter", "sum", "messages that did not parse", "malformed_messages",
        attribute("malformed"),
    ),
    Stat(
        "queries", "counter", "sum", "query messages, refused", "queries_refused",
        attribute("queries"),
    ),
    Stat(
        "oversized", "counter", "sum", "frames or datagrams over the size limit",
        "oversized_messages", attribute("oversized"),
    ),
    Stat(
        "held", "counter", "sum", "messages whose events waited for room in a full output",
        "held_messages", attribute("held"),
    ),
    Stat(
        "waiting", "gauge", "sum", "messages whose events wait for room now", "waiting_messages",
        attribute("waiting"),
    ),
    Stat(
        "shed", "counter", "sum", "datagrams dropped while outputs were full", "shed_datagrams",
        attribute("shed"),
    ),
    Stat(
        "connections", "gauge", "sum", "client connections open", "connections",
        _size("connections"),
    ),
)

OUTPUT_STATS: tuple[Stat, ...] = (
    Stat(
        "events_received", "counter", "sum", "events routed to this output", "events_received",
        attribute("received"),
    ),
    Stat(
        "events_sent", "counter", "sum",
        "events delivered (confirmed, where the destination confirms)", "events_sent",
        attribute("sent"),
    ),
    Stat(
        "acked", "counter", "sum", "batches the destination confirmed", "batches_acked",
        attribute("acked"),
    ),
    Stat(
        "failures", "counter", "sum", "failed writes, each retried", "write_failures",
        attribute("failures"),
    ),
    Stat(
        "rejected", "counter", "sum", "batches the destination refused", "batches_rejected",
        attribute("rejected"),
    ),
    Stat(
        "in_flight", "gauge", "sum", "batches sent and not yet confirmed", "batches_in_flight",
        attribute("inFlight"),
    ),
    Stat(
        "last_ack_latency", "gauge", "max", "seconds from sending the last batch to its ack",
        "last_ack_latency_seconds", attribute("lastAckLatency"),
    ),
    Stat(
        "connected", "gauge", "min", "1 while connected to the destination", "connected",
        attribute("connected"),
    ),
    Stat(
        "reconnects", "counter", "sum", "connections made after the first", "reconnects",
        attribute("reconnects"),
    ),
    Stat(
        "datagrams", "counter", "sum", "datagrams sent", "datagrams_sent",
        attribute("datagrams"),
    ),
    Stat(
        "buffer_events", "gauge", "sum", "events held in the buffer, waiting or in flight",
        "buffer_events", lambda o: o.buffer.depth,
    ),
    Stat(
        "buffer_bytes", "gauge", "sum", "bytes held in the buffer", "buffer_bytes",
        lambda o: o.buffer.nbytes,
    ),
    Stat(
        "buffer_max_events", "gauge", "sum", "the buffer's bound in events (maxsize)",
        "buffer_max_events", lambda o: o.buffer.maxsize,
    ),
    Stat(
        "buffer_max_bytes", "gauge", "sum", "the buffer's bound in bytes (max_bytes)",
        "buffer_max_bytes", lambda o: o.buffer.max_bytes,
    ),
    Stat(
        "buffer_durable", "gauge", "none", "1 when the buffer survives a crash (on disk)",
        "buffer_durable", lambda o: bool(o.buffer.durable),
    ),
    Stat(
        "dropped", "counter", "sum", "events dropped, by reason", "events_dropped",
        lambda o: o.buffer.drops, label="reason",
    ),
)

PROCESS_STATS: tuple[Stat, ...] = (
    Stat("pid", "gauge", "none", "process id", "pid", lambda p: p["pid"]),
    Stat(
        "start_time", "gauge", "min", "when the process started, in Unix seconds",
        "start_time_seconds", lambda p: p["start_time"],
    ),
    Stat(
        "uptime", "gauge", "max", "seconds since the process started", "uptime_seconds",
        lambda p: p["uptime"],
    ),
    Stat(
        "rss_bytes", "gauge", "sum", "resident memory", "resident_memory_bytes",
        lambda p: p["rss_bytes"],
    ),
    Stat(
        "cpu_seconds", "counter", "sum", "CPU time used, user and system", "cpu_seconds",
        lambda p: p["cpu_seconds"],
    ),
    Stat("open_fds", "gauge", "sum", "open file descriptors", "open_fds", lambda p: p["open_fds"]),
    Stat("threads", "gauge", "sum", "threads", "threads", lambda p: p["threads"]),
)
# fmt: on

STATS: dict[str, tuple[Stat, ...]] = {
    "sources": SOURCE_STATS,
    "outputs": OUTPUT_STATS,
    "process": PROCESS_STATS,
}
"""The declarations of each part of a snapshot."""


# -- reading ------------------------------------------------------------------------


def read(stats: Iterable[Stat], obj: Any) -> dict[str, Any]:
    """The entry of one object: each statistic it has, by key."""
    entry: dict[str, Any] = {}
    for stat in stats:
        value = stat.value(obj)
        if value is not None:
            entry[stat.key] = value
    return entry


def className(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def sourceKeys(sources: Iterable[Any]) -> list[str]:
    """A unique key for each source: its service, then ``service@host``, then ``#n``."""
    sources = list(sources)
    services = Counter(s.service for s in sources)
    keys = [s.service if services[s.service] == 1 else f"{s.service}@{s.hostname}" for s in sources]
    seen: Counter[str] = Counter()
    counts = Counter(keys)
    unique = []
    for key in keys:
        seen[key] += 1
        unique.append(key if counts[key] == 1 else f"{key}#{seen[key]}")
    return unique


_process: psutil.Process | None = None


def processStats() -> dict[str, Any]:
    """The process's own figures, from psutil (wall-clock times, not the service clock)."""
    global _process
    if _process is None or _process.pid != os.getpid():
        _process = psutil.Process()
    with _process.oneshot():
        cpu = _process.cpu_times()
        started = _process.create_time()
        sample = {
            "pid": _process.pid,
            "start_time": started,
            "uptime": max(0.0, time.time() - started),
            "rss_bytes": _process.memory_info().rss,
            "cpu_seconds": cpu.user + cpu.system,
            "open_fds": _process.num_fds() if hasattr(_process, "num_fds") else None,
            "threads": _process.num_threads(),
        }
    return read(PROCESS_STATS, sample)


def snapshot(service: Any) -> dict[str, Any]:
    """Everything ``service`` counts, now: its sources, outputs, process and totals.

    ``service`` is a `duct.service.DuctService`, or anything with ``clock``
    and optionally ``hostname``, ``sources`` and ``outputs``.
    """
    sources = list(getattr(service, "sources", None) or [])
    outputs = dict(getattr(service, "outputs", None) or {})
    sourceEntries = {
        key: {"class": className(source), **read(SOURCE_STATS, source)}
        for key, source in zip(sourceKeys(sources), sources, strict=True)
    }
    outputEntries = {
        name: {"class": className(output), **read(OUTPUT_STATS, output)}
        for name, output in outputs.items()
    }
    return {
        "time": service.clock.seconds(),
        "hostname": getattr(service, "hostname", None),
        "process": processStats(),
        "sources": sourceEntries,
        "outputs": outputEntries,
        "totals": totals(sourceEntries, outputEntries),
    }


# -- combining ---------------------------------------------------------------------


def rollUp(how: str, values: Iterable[Any]) -> Any:
    """Combine values of one statistic by its roll-up; None if there is nothing to combine.

    ``none`` keeps a value only when every value agrees.  Mappings (drops by
    reason) combine key by key.
    """
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, Mapping) for v in present):
        keys = sorted({k for v in present for k in v})
        merged = {k: rollUp(how, (v.get(k) for v in present)) for k in keys}
        return {k: v for k, v in merged.items() if v is not None}
    if how == "sum":
        return sum(present)
    if how == "min":
        return min(present)
    if how == "max":
        return max(present)
    return present[0] if all(v == present[0] for v in present) else None


def combineEntries(stats: Iterable[Stat], entries: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One entry from several entries of the same statistics, each by its roll-up."""
    combined: dict[str, Any] = {}
    classes = {e.get("class") for e in entries}
    if len(classes) == 1 and None not in classes:
        combined["class"] = classes.pop()
    for stat in stats:
        value = rollUp(stat.rollup, (e.get(stat.key) for e in entries))
        if value is not None:
            combined[stat.key] = value
    return combined


def totals(
    sources: Mapping[str, Mapping[str, Any]], outputs: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Totals across sources and across outputs, each statistic by its roll-up."""
    result: dict[str, Any] = {}
    for part, stats, entries in (
        ("sources", SOURCE_STATS, sources),
        ("outputs", OUTPUT_STATS, outputs),
    ):
        combined = combineEntries(stats, list(entries.values()))
        combined.pop("class", None)
        result[part] = {"count": len(entries), **combined}
    return result


def combine(snapshots: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge snapshots from several processes into one, as if one process had taken it.

    Entries with the same name (a listener running in every worker) combine
    by each statistic's roll-up, so do the process figures, and the totals
    are computed again.
    """
    if not snapshots:
        raise ValueError("nothing to combine")
    merged: dict[str, Any] = {
        "time": max(s["time"] for s in snapshots),
        "hostname": snapshots[0].get("hostname"),
        "process": combineEntries(PROCESS_STATS, [s["process"] for s in snapshots]),
    }
    merged["process"]["processes"] = len(snapshots)
    for part, stats in (("sources", SOURCE_STATS), ("outputs", OUTPUT_STATS)):
        names: dict[str, list[Mapping[str, Any]]] = {}
        for snap in snapshots:
            for name, entry in snap[part].items():
                names.setdefault(name, []).append(entry)
        merged[part] = {name: combineEntries(stats, entries) for name, entries in names.items()}
    merged["totals"] = totals(merged["sources"], merged["outputs"])
    return merged


# -- as events -------------------------------------------------------------------------


def flatten(snap: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """Each number in a snapshot with a dotted name, as `SelfStats` emits them.

    ``process.rss_bytes``, ``source.<key>.polls``,
    ``output.<name>.dropped.overflow``, ``total.output.events_sent``, ...
    Booleans become 1 and 0; text is left out.
    """
    yield from _leaves("process", snap.get("process") or {})
    for part, singular in (("sources", "source"), ("outputs", "output")):
        for name, entry in (snap.get(part) or {}).items():
            yield from _leaves(f"{singular}.{name}", entry)
    for part, singular in (("sources", "source"), ("outputs", "output")):
        yield from _leaves(f"total.{singular}", (snap.get("totals") or {}).get(part) or {})


def _leaves(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _leaves(f"{prefix}.{key}", inner)
    elif isinstance(value, bool):
        yield prefix, 1.0 if value else 0.0
    elif isinstance(value, (int, float)):
        yield prefix, value
