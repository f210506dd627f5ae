"""Combining statistics: roll-ups, totals, snapshots of several processes, and events."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from duct.stats.declare import (
    OUTPUT_STATS,
    PLUGIN_STATS,
    PROCESS_STATS,
    SOURCE_STATS,
    Stat,
    entryStats,
)

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
