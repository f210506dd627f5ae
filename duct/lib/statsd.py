"""StatsD: parsing its lines and aggregating them between flushes, in bounded memory.

A line is ``name:value|type[|@rate][|#tag:value,...]``, several values of a
name may share a line (``name:1|c:2|c``).  Types: ``c`` counter, ``g``
gauge (``+``/``-`` before the value adds to it), ``ms``/``h``/``d``
timer, ``s`` set.  ``|#`` tags are the DogStatsD extension.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

TYPES = {"c", "g", "ms", "h", "d", "s"}


class Malformed(ValueError):
    """A line that is not StatsD."""


@dataclass
class Sample:
    name: str
    value: str
    kind: str
    rate: float
    tags: tuple[tuple[str, str], ...]


def parseLine(line: str) -> list[Sample]:
    """The samples of one line; `Malformed` if it is not StatsD."""
    name, sep, rest = line.strip().partition(":")
    if not sep or not name or not rest:
        raise Malformed(line)
    rest, _, tagText = rest.partition("|#")
    lineTags = tuple(sorted(_tag(t) for t in tagText.split(",") if t))
    samples = []
    for part in rest.split(":"):
        fields = part.split("|")
        if len(fields) < 2 or fields[1] not in TYPES or not fields[0]:
            raise Malformed(line)
        rate, tags = 1.0, lineTags
        for extra in fields[2:]:
            if extra.startswith("@"):
                try:
                    rate = float(extra[1:])
                except ValueError:
                    raise Malformed(line) from None
                if not 0 < rate <= 1:
                    raise Malformed(line)
            elif extra.startswith("#"):
                tags = tuple(sorted(_tag(t) for t in extra[1:].split(",") if t))
            elif extra:
                raise Malformed(line)
        if fields[1] != "s":
            try:
                number = float(fields[0])
            except ValueError:
                raise Malformed(line) from None
            if not math.isfinite(number):
                raise Malformed(line)
        samples.append(Sample(name, fields[0], fields[1], rate, tags))
    return samples


def _tag(text: str) -> tuple[str, str]:
    key, _, value = text.partition(":")
    return key, value


Key = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass
class Buckets:
    """What arrived since the last flush, for at most ``maxKeys`` series (and timer values)."""

    maxKeys: int = 10000
    maxValues: int = 10000
    counters: dict[Key, float] = field(default_factory=dict)
    gauges: dict[Key, float] = field(default_factory=dict)
    timers: dict[Key, list[float]] = field(default_factory=dict)
    sets: dict[Key, set[str]] = field(default_factory=dict)
    refused = 0
    """Samples refused because they named a new series past ``maxKeys``."""

    def __len__(self) -> int:
        return len(self.counters) + len(self.gauges) + len(self.timers) + len(self.sets)

    def _room(self, table: Mapping[Key, object], key: Key) -> bool:
        if key in table or len(self) < self.maxKeys:
            return True
        self.refused += 1
        return False

    def add(self, sample: Sample) -> None:
        kind = "timer" if sample.kind in ("ms", "h", "d") else sample.kind
        key: Key = (sample.name, kind, sample.tags)
        if sample.kind == "c":
            if self._room(self.counters, key):
                self.counters[key] = self.counters.get(key, 0.0) + float(sample.value) / sample.rate
        elif sample.kind == "g":
            if self._room(self.gauges, key):
                value = float(sample.value)
                if sample.value[0] in "+-":
                    value += self.gauges.get(key, 0.0)
                self.gauges[key] = value
        elif kind == "timer":
            if self._room(self.timers, key):
                values = self.timers.setdefault(key, [])
                if len(values) < self.maxValues:
                    values.append(float(sample.value))
        elif self._room(self.sets, key):
            members = self.sets.setdefault(key, set())
            if len(members) < self.maxValues:
                members.add(sample.value)

    def flush(self) -> None:
        """Forget counters, timers and sets; gauges keep their value, as StatsD's do."""
        self.counters = {}
        self.timers = {}
        self.sets = {}


def percentile(ordered: list[float], p: float) -> float:
    """The ``p`` percentile (0-100) of sorted values, nearest rank."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
