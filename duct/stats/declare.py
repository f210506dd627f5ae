"""Declared statistics: `Stat`, `counter`, `gauge`, and what every source, output and plugin has."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
    # only for a use_ssh source
    counter("ssh_failures", "commands.sshFailures", "ssh_failures",
            "commands and file reads that could not reach the SSH host"),
    counter("ssh_host_key_failures", "commands.sshHostKeyFailures", "ssh_host_key_failures",
            "of those, the ones whose host key did not check"),
)
"""What every source reports; `duct.objects.Source` declares them as its ``stats``."""

OUTPUT_STATS: tuple[Stat, ...] = (
    counter("events_received", "received", "events_received", "events routed to this output"),
    counter("events_sent", "sent", "events_sent",
            "events delivered (confirmed, where the destination confirms)"),
    counter("acked", "acked", "batches_acked", "batches the destination confirmed"),
    counter("failures", "failures", "write_failures", "failed writes, each retried"),
    counter("rejected", "rejected", "batches_rejected",
            "writes refused for their content (each piece of a split batch counts)"),
    counter("events_rejected", "eventsRejected", "events_rejected",
            "events dropped: the destination refused them, or they could not be encoded"),
    gauge("stalled", "max", "stalled", "stalled",
          "1 while events wait and nothing was delivered for stall_after seconds"),
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
