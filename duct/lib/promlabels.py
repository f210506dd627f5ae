"""Prometheus names and labels for events: one series per metric name and label set.

Shared by the scrape endpoint and remote write.  A metric name is the
prefix and the service with every character Prometheus does not allow
(``[a-zA-Z0-9_:]``, not starting with a digit) turned into ``_``: the
service ``disk.sda.reads`` becomes ``duct_disk_sda_reads``.  Label names
allow ``[a-zA-Z0-9_]`` and may not start with ``__``.  The host is the
label ``host``; the attributes (all, or those `labels` lists) and,
with `tags_label`, the Riemann tags joined by commas are labels too.  An
attribute whose label name is taken (``host``) becomes ``exported_host``,
as Prometheus renames a clashing target label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from duct.event import Event
from duct.options import Option

__all__ = ["LABEL_OPTIONS", "Labeller", "SeriesKey", "labelName", "metricName"]

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
"""A series: its metric name and its labels, sorted by name."""

_METRIC_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")

LABEL_OPTIONS: tuple[Option, ...] = (
    Option("prefix", "string", "duct_", "put before every metric name"),
    Option(
        "labels",
        "strings",
        None,
        "the attributes that become labels (default: all of them; [] for none)",
    ),
    Option(
        "tags_label",
        "string",
        None,
        "a label holding the Riemann tags joined by commas (default: tags are not carried)",
    ),
)
"""The options that say how events are named and labelled: splice them into ``options``."""


def metricName(name: str) -> str:
    """``name`` with what a Prometheus metric name cannot hold made ``_``."""
    name = _METRIC_BAD.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name


def labelName(name: str) -> str:
    """``name`` with what a Prometheus label name cannot hold made ``_``, never ``__...``."""
    name = _LABEL_BAD.sub("_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    if name.startswith("__"):  # reserved for Prometheus's own labels
        name = "_" + name.lstrip("_")
    return name


class Labeller:
    """Turns events into series keys, as a plugin's `LABEL_OPTIONS` say."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.prefix: str = config.get("prefix") or ""
        labels = config.get("labels")
        self.allowed: frozenset[str] | None = None if labels is None else frozenset(labels)
        tagsLabel = config.get("tags_label")
        self.tagsLabel: str | None = labelName(tagsLabel) if tagsLabel else None
        self._names: dict[str, str] = {}

    def name(self, service: str) -> str:
        """The metric name of a service (remembered: services repeat)."""
        name = self._names.get(service)
        if name is None:
            if len(self._names) > 100_000:
                self._names.clear()
            name = self._names[service] = metricName(self.prefix + service)
        return name

    def key(self, event: Event) -> SeriesKey:
        """The series an event belongs to."""
        labels = {"host": event.hostname}
        if self.tagsLabel is not None and event.tags:
            labels[self.tagsLabel] = ",".join(event.tags)
        attributes = event.attributes
        if attributes:
            allowed = self.allowed
            for key, value in attributes.items():
                if allowed is not None and key not in allowed:
                    continue
                name = labelName(str(key))
                while name in labels:
                    name = "exported_" + name
                labels[name] = str(value)
        return self.name(event.service), tuple(sorted(labels.items()))
