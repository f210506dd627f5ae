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

Each class declares its statistics in a ``stats`` tuple, as it declares its
options: `SOURCE_STATS` on every source, `OUTPUT_STATS` on every output,
and a plugin's own beside them (`declaredStats` merges them over the class
hierarchy), so a new plugin's counters need no change here.

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
                 "outputs": {"count": 1, "dropped": {"overflow": 3}, ...}},
      "plugins": {"audit": {"class": "audit.Audit", "running": true, "calls": 40,
                            "failures": 0, "dropped": 0, ...}}
    }

``plugins`` (`duct.pluginhost`) is there only when ``plugins:`` enables some.

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


def attribute(path: str) -> Callable[[Any], Any]:
    """Read ``obj.<path>`` (dotted, or keys of a mapping); None where there is none."""
    parts = path.split(".")

    def read(obj: Any) -> Any:
        for part in parts:
            obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part, None)
        return obj

    return read


def size(name: str) -> Callable[[Any], Any]:
    """A read function for `counter` or `gauge`: the number of items in attribute ``name``."""

    def read(obj: Any) -> Any:
        value = getattr(obj, name, None)
        return len(value) if isinstance(value, (set, frozenset, list, dict)) else None

    return read


def counter(key: str, path: Any, metric: str, doc: str, label: str | None = None) -> Stat:
    """A counter that adds up; ``path`` is an attribute path or a read function."""
    read = attribute(path) if isinstance(path, str) else path
    return Stat(key, "counter", "sum", doc, metric, read, label)


def gauge(key: str, rollup: str, path: Any, metric: str, doc: str) -> Stat:
    """A gauge whose values combine by ``rollup``; ``path`` as for `counter`."""
    read = attribute(path) if isinstance(path, str) else path
    return Stat(key, "gauge", rollup, doc, metric, read)


# -- what each plugin class declares ------------------------------------------------

_declared: dict[type, tuple[Stat, ...]] = {}
_byClass: dict[str, tuple[Stat, ...]] = {}
"""The declarations of every class read so far, by dotted name, for snapshot entries."""


def declaredStats(cls: type) -> tuple[Stat, ...]:
    """Every statistic a class declares in ``stats``, base classes first, subclasses winning.

    As with options, a plugin lists its own next to its code::

        class Nginx(Source):
            stats = (counter("http_errors", "httpErrors", "http_errors", "failed fetches"),)

    and they appear in ``/stats``, ``/metrics`` and self events beside the
    statistics every source has.
    """
    declared = _declared.get(cls)
    if declared is None:
        merged: dict[str, Stat] = {}
        for klass in reversed(cls.__mro__):
            for stat in klass.__dict__.get("stats", ()) or ():
                merged[stat.key] = stat
        declared = _declared[cls] = tuple(merged.values())
        _byClass[f"{cls.__module__}.{cls.__qualname__}"] = declared
    return declared


def _statsOfClass(name: str) -> tuple[Stat, ...]:
    """The statistics of the class a snapshot entry names (imported if not seen yet)."""
    declared = _byClass.get(name)
    if declared is None:
        import importlib

        module, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except Exception:  # an entry from a process with plugins this one lacks
            return ()
        declared = declaredStats(cls) if isinstance(cls, type) else ()
        _byClass[name] = declared
    return declared


def entryStats(base: Iterable[Stat], entries: Iterable[Mapping[str, Any]]) -> tuple[Stat, ...]:
    """``base``, then every other statistic the classes of ``entries`` declare, each key once."""
    merged: dict[str, Stat] = {stat.key: stat for stat in base}
    for entry in entries:
        name = entry.get("class")
        if isinstance(name, str):
            for stat in _statsOfClass(name):
                merged.setdefault(stat.key, stat)
    return tuple(merged.values())


# fmt: off
SOURCE_STATS: tuple[Stat, ...] = (
    counter("polls", "polls", "polls", "polls started"),
    counter("errors", "errors", "errors", "polls that failed, or events refused"),
    counter("skipped", "skipped", "polls_skipped", "polls skipped: outputs full, or a sync poll"
            " still running"),
    counter("emitted", "emitted", "events_emitted", "events produced"),
    gauge("last_poll_duration", "max", "lastPollDuration", "last_poll_duration_seconds",
          "seconds the last poll took"),
    gauge("last_event_time", "max", "lastEventTime", "last_event_timestamp_seconds",
          "clock time of the last event produced"),
)
"""What every source reports; `duct.objects.Source` declares them as its ``stats``."""

OUTPUT_STATS: tuple[Stat, ...] = (
    counter("events_received", "received", "events_received", "events routed to this output"),
    counter("events_sent", "sent", "events_sent",
            "events delivered (confirmed, where the destination confirms)"),
    counter("acked", "acked", "batches_acked", "batches the destination confirmed"),
    counter("failures", "failures", "write_failures", "failed writes, each retried"),
    counter("rejected", "rejected", "batches_rejected", "batches the destination refused"),
    gauge("in_flight", "sum", "inFlight", "batches_in_flight",
          "batches sent and not yet confirmed"),
    gauge("last_ack_latency", "max", "lastAckLatency", "last_ack_latency_seconds",
          "seconds from sending the last batch to its ack"),
    gauge("connected", "min", "connected", "connected", "1 while connected to the destination"),
    counter("reconnects", "reconnects", "reconnects", "connections made after the first"),
    counter("datagrams", "datagrams", "datagrams_sent", "datagrams sent"),
    gauge("buffer_events", "sum", "buffer.depth", "buffer_events",
          "events held in the buffer, waiting or in flight"),
    gauge("buffer_bytes", "sum", "buffer.nbytes", "buffer_bytes", "bytes held in the buffer"),
    gauge("buffer_max_events", "sum", "buffer.maxsize", "buffer_max_events",
          "the buffer's bound in events (maxsize)"),
    gauge("buffer_max_bytes", "sum", "buffer.max_bytes", "buffer_max_bytes",
          "the buffer's bound in bytes (max_bytes)"),
    gauge("buffer_durable", "none", "buffer.durable", "buffer_durable",
          "1 when the buffer survives a crash (on disk)"),
    counter("dropped", "buffer.drops", "events_dropped", "events dropped, by reason",
            label="reason"),
    counter("buffer_corrupt_segments", "buffer.corruptSegments", "buffer_corrupt_segments",
            "damaged segment files found in a disk buffer (set aside)"),
    counter("buffer_torn_tails", "buffer.tornTails", "buffer_torn_tails",
            "torn last records truncated in a disk buffer after a crash"),
)
"""What every output reports; `duct.objects.Output` declares them as its ``stats``."""

PLUGIN_STATS: tuple[Stat, ...] = (
    gauge("running", "min", "isRunning", "running",
          "1 while the plugin runs (started, not closed)"),
    # event plugins
    counter("calls", "feed.calls", "calls", "batches the plugin was called with"),
    counter("failures", "feed.failures", "failures", "calls that failed"),
    counter("events_received", "feed.received", "events_received",
            "events the plugin was called with"),
    counter("dropped", "feed.dropped", "events_dropped",
            "events dropped: too many batches waiting, or the plugin not running"),
    gauge("pending", "sum", "feed.pendingBatches", "pending_batches",
          "batches waiting for the plugin"),
)

PROCESS_STATS: tuple[Stat, ...] = (
    gauge("pid", "none", "pid", "pid", "process id"),
    gauge("start_time", "min", "start_time", "start_time_seconds",
          "when the process started, in Unix seconds"),
    gauge("uptime", "max", "uptime", "uptime_seconds", "seconds since the process started"),
    gauge("rss_bytes", "sum", "rss_bytes", "resident_memory_bytes", "resident memory"),
    counter("cpu_seconds", "cpu_seconds", "cpu_seconds", "CPU time used, user and system"),
    gauge("open_fds", "sum", "open_fds", "open_fds", "open file descriptors"),
    gauge("threads", "sum", "threads", "threads", "threads"),
)
# fmt: on

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


_process: Any = None  # a psutil.Process


def processStats() -> dict[str, Any]:
    """The process's own figures, from psutil (wall-clock times, not the service clock)."""
    import psutil  # here, so that a plugin importing duct.objects does not load it

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
        key: {"class": className(source), **read(declaredStats(type(source)), source)}
        for key, source in zip(sourceKeys(sources), sources, strict=True)
    }
    outputEntries = {
        name: {"class": className(output), **read(declaredStats(type(output)), output)}
        for name, output in outputs.items()
    }
    result = {
        "time": service.clock.seconds(),
        "hostname": getattr(service, "hostname", None),
        "process": processStats(),
        "sources": sourceEntries,
        "outputs": outputEntries,
        "totals": totals(sourceEntries, outputEntries),
    }
    host = getattr(service, "pluginHost", None)
    if host is not None and host.runners:  # plugins enabled by name (duct.pluginhost)
        result["plugins"] = {
            name: {"class": className(runner.plugin), **read(PLUGIN_STATS, runner)}
            for name, runner in host.runners.items()
        }
    events = getattr(getattr(service, "web", None), "events", None)
    if events is not None:  # the /events stream: clients, cut-offs, the ring
        result["events"] = events.stats()
    return result


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
    """Totals across sources and across outputs, each statistic by its roll-up.

    Besides those every source or output has, a statistic that some
    plugin declares is totalled over the entries that have it.
    """
    result: dict[str, Any] = {}
    for part, base, entries in (
        ("sources", SOURCE_STATS, sources),
        ("outputs", OUTPUT_STATS, outputs),
    ):
        stats = entryStats(base, entries.values())
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
    for part, base in (("sources", SOURCE_STATS), ("outputs", OUTPUT_STATS)):
        names: dict[str, list[Mapping[str, Any]]] = {}
        for snap in snapshots:
            for name, entry in snap[part].items():
                names.setdefault(name, []).append(entry)
        merged[part] = {
            name: combineEntries(entryStats(base, entries), entries)
            for name, entries in names.items()
        }
    plugins: dict[str, list[Mapping[str, Any]]] = {}
    for snap in snapshots:
        for name, entry in (snap.get("plugins") or {}).items():
            plugins.setdefault(name, []).append(entry)
    if plugins:
        merged["plugins"] = {n: combineEntries(PLUGIN_STATS, e) for n, e in plugins.items()}
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
    for part, singular in (("sources", "source"), ("outputs", "output"), ("plugins", "plugin")):
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
