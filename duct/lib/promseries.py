"""SeriesTable: the latest value of each series, until it expires, for a scrape endpoint."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import Metric

from duct.lib.promlabels import SeriesKey

__all__ = ["SeriesTable"]


class _Entry:
    __slots__ = ("value", "expires")

    def __init__(self, value: float, expires: float) -> None:
        self.value = value
        self.expires = expires


class SeriesTable:
    """Gauges by metric name and label set, each with the clock time it expires.

    :param clock: an ``IReactorTime``; expiry reads ``clock.seconds()``.
    :param maxSeries: the most series held; `room` says how many more fit.
    """

    def __init__(self, clock: Any, maxSeries: int) -> None:
        self.clock = clock
        self.maxSeries = maxSeries
        self.names: dict[str, dict[tuple[tuple[str, str], ...], _Entry]] = {}
        self.help: dict[str, str] = {}
        self.count = 0
        self.expired = 0
        """Series removed because their ttl ran out."""

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: SeriesKey) -> bool:
        name, labels = key
        series = self.names.get(name)
        return series is not None and labels in series

    def room(self) -> int:
        """How many new series fit under the bound."""
        return max(0, self.maxSeries - self.count)

    def set(self, key: SeriesKey, value: float, ttl: float, service: str) -> None:
        """Hold ``value`` as the latest of ``key`` for ``ttl`` seconds from now."""
        name, labels = key
        series = self.names.get(name)
        if series is None:
            series = self.names[name] = {}
            self.help[name] = f"duct service {service}"
        entry = series.get(labels)
        expires = self.clock.seconds() + ttl
        if entry is None:
            series[labels] = _Entry(value, expires)
            self.count += 1
        else:
            entry.value = value
            entry.expires = expires

    def expire(self) -> int:
        """Remove every series whose time is up; return how many went."""
        now = self.clock.seconds()
        removed = 0
        for name in list(self.names):
            series = self.names[name]
            gone = [labels for labels, entry in series.items() if entry.expires <= now]
            for labels in gone:
                del series[labels]
            removed += len(gone)
            if not series:
                del self.names[name]
                del self.help[name]
        self.count -= removed
        self.expired += removed
        return removed

    def families(self) -> Iterator[Metric]:
        """One gauge family per metric name, its samples in label order."""
        now = self.clock.seconds()
        for name in sorted(self.names):
            family = Metric(name, self.help[name], "gauge")
            series = self.names[name]
            for labels in sorted(series):
                entry = series[labels]
                if entry.expires > now:
                    family.add_sample(name, dict(labels), entry.value)
            if family.samples:
                yield family


class TableCollector:
    """A prometheus_client collector over one or more `SeriesTable`."""

    def __init__(self, tables: Iterable[SeriesTable]) -> None:
        self.tables = list(tables)

    def collect(self) -> Iterator[Metric]:
        for table in self.tables:
            yield from table.families()
