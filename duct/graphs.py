"""How the dashboard draws a service: its graph type, and which chart it shares.

A source declares graph types in its ``graphs`` class attribute, keyed by
service prefixes relative to the source's own ``service`` (see
`duct.source.Source.graphs`).  `GraphMap` turns the running sources'
declarations into absolute prefixes and answers, for any service name,
the longest prefix that matches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

GRAPH_TYPES = ("line", "stack", "full-stack", "bar")
DEFAULT_GRAPH = "line"
STACKED = frozenset({"stack", "full-stack"})


class Graph(NamedTuple):
    """How one service is drawn.

    ``group`` names the chart: services with the same host and group share
    one.  Stacked types share a chart per matching prefix; a line or a bar
    has a chart of its own, named after its service.
    """

    type: str
    group: str


def absolutePrefix(service: str, key: str) -> str:
    """The prefix a source's ``graphs`` key stands for: ``""`` is the service itself."""
    return f"{service}.{key}" if key else service


def prefixMatches(prefix: str, service: str) -> bool:
    """Whether ``prefix`` covers ``service``.

    A prefix covers the service of the same name and every service below
    it (after a dot); a prefix ending in ``.*`` covers only those below.
    """
    if prefix.endswith(".*"):
        return service.startswith(prefix[:-1])
    return service == prefix or service.startswith(prefix + ".")


def checkGraphs(graphs: Any) -> list[str]:
    """Problems with a ``graphs`` declaration, as sentences (empty if it is fine).

    The configuration check reports them as warnings: `GraphMap` ignores
    what they name, so the services concerned are drawn as lines.
    """
    if not isinstance(graphs, Mapping):
        return [f"expected a mapping of service prefix to graph type, got {graphs!r}"]
    problems = []
    for key, kind in graphs.items():
        if not isinstance(key, str):
            problems.append(f"graph key {key!r} is not a string")
        elif kind not in GRAPH_TYPES:
            allowed = ", ".join(GRAPH_TYPES)
            problems.append(f"graph type {kind!r} for {key!r} is not one of {allowed}")
    return problems


class GraphMap:
    """Graph types by absolute service prefix, longest prefix first.

    :param prefixes: ``(prefix, type)`` pairs; a later pair for the same
        prefix replaces an earlier one.
    """

    def __init__(self, prefixes: Iterable[tuple[str, str]] = ()) -> None:
        merged = {prefix: kind for prefix, kind in prefixes if kind in GRAPH_TYPES}
        self.prefixes = sorted(merged.items(), key=lambda item: len(item[0]), reverse=True)

    @classmethod
    def fromSources(cls, sources: Iterable[Any]) -> GraphMap:
        """The declarations of running sources: each one's ``graphs`` under its ``service``."""
        pairs = []
        for source in sources:
            graphs = getattr(source, "graphs", None)
            if not isinstance(graphs, Mapping):  # reported by the configuration check
                continue
            service = getattr(source, "service", "")
            for key, kind in graphs.items():
                if isinstance(key, str):
                    pairs.append((absolutePrefix(service, key), kind))
        return cls(pairs)

    def graphOf(self, service: str) -> Graph:
        """The type of the longest prefix covering ``service`` (a line if none does)."""
        for prefix, kind in self.prefixes:
            if prefixMatches(prefix, service):
                return Graph(kind, prefix if kind in STACKED else service)
        return Graph(DEFAULT_GRAPH, service)
