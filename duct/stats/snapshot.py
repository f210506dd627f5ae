"""Reading the declared statistics of a running agent into a snapshot."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from duct.stats.combine import totals
from duct.stats.declare import (
    PLUGIN_STATS,
    PROCESS_STATS,
    Stat,
    declaredStats,
)

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
    jobs = getattr(service, "jobs", None)
    if jobs is not None and hasattr(jobs, "queues"):  # the job queues (duct.jobs)
        result["queues"] = jobs.stats()
    events = getattr(getattr(service, "web", None), "events", None)
    if events is not None:  # the /events stream: clients, cut-offs, the ring
        result["events"] = events.stats()
    return result
