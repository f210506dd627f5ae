"""Graph types: sources declare them by service prefix; the longest prefix wins."""

from __future__ import annotations

from typing import Any

import pytest

from duct.configuration import ConfigFile
from duct.graphs import GRAPH_TYPES, GraphMap, checkGraphs, prefixMatches
from duct.objects import Source
from duct.plugins import BUILTIN_SOURCES, loadClass
from duct.testing import FakeDuct, configure


def source(cls: type[Source], service: str) -> Source:
    return cls(configure(cls, {"service": service}), lambda events: None, FakeDuct())


def test_a_prefix_covers_itself_and_what_is_below_it_and_star_only_below() -> None:
    assert prefixMatches("cpu", "cpu") and prefixMatches("cpu", "cpu.user")
    assert not prefixMatches("cpu", "cpus") and not prefixMatches("cpu", "cp")
    assert prefixMatches("cpu.*", "cpu.user") and prefixMatches("cpu.*", "cpu.user.x")
    assert not prefixMatches("cpu.*", "cpu")


def test_the_longest_matching_prefix_wins_and_stacks_share_a_chart() -> None:
    graphs = GraphMap([("disk", "bar"), ("disk.*", "stack"), ("disk.sda.free", "line")])
    assert graphs.graphOf("disk") == ("bar", "disk")
    assert graphs.graphOf("disk.sda") == ("stack", "disk.*")
    assert graphs.graphOf("disk.sdb.used") == ("stack", "disk.*")
    assert graphs.graphOf("disk.sda.free") == ("line", "disk.sda.free")
    assert graphs.graphOf("memory") == ("line", "memory")  # nothing declared: a line


def test_declarations_are_relative_to_each_sources_service() -> None:
    class Queue(Source):
        graphs = {"": "bar", "by_state": "stack", "by_state.failed": "line"}

    graphs = GraphMap.fromSources([source(Queue, "mail"), source(Queue, "jobs")])
    assert graphs.graphOf("mail") == ("bar", "mail")
    assert graphs.graphOf("jobs.depth") == ("bar", "jobs.depth")  # bars are drawn alone
    assert graphs.graphOf("mail.by_state.active") == ("stack", "mail.by_state")
    assert graphs.graphOf("jobs.by_state.failed") == ("line", "jobs.by_state.failed")
    assert graphs.graphOf("other") == ("line", "other")


def test_an_unknown_type_is_ignored_and_reported() -> None:
    assert GraphMap([("cpu", "pie")]).graphOf("cpu") == ("line", "cpu")
    assert checkGraphs({"cpu": "pie"}) == [
        "graph type 'pie' for 'cpu' is not one of line, stack, full-stack, bar"
    ]


def test_the_base_source_declares_none() -> None:
    assert Source.graphs == {}


@pytest.mark.parametrize("path", BUILTIN_SOURCES)
def test_builtin_sources_declare_valid_graph_types(path: str) -> None:
    cls: Any = loadClass(path, Source)
    assert checkGraphs(cls.graphs) == []
    assert set(cls.graphs.values()) <= set(GRAPH_TYPES)


def test_the_cpu_fields_stack_to_all_of_the_time_but_guest_time() -> None:
    from duct.sources.linux.basic import CPU, Memory

    graphs = GraphMap.fromSources([source(CPU, "cpu"), source(Memory, "memory")])
    assert graphs.graphOf("cpu") == ("line", "cpu")
    assert graphs.graphOf("cpu.user") == ("full-stack", "cpu.*")
    assert graphs.graphOf("cpu.idle") == ("full-stack", "cpu.*")
    assert graphs.graphOf("cpu.guest").type == "line"
    assert graphs.graphOf("memory.used") == ("stack", "memory.*")
    assert graphs.graphOf("memory.total").type == "line"


class BadGraphs(Source):
    """A source whose author mistyped its graph types."""

    graphs = {"": "line", "by_state": "pie", 3: "bar"}  # type: ignore[dict-item]


class NotAMapping(Source):
    graphs = ["stack"]  # type: ignore[assignment]


def test_a_bad_declaration_is_a_warning_of_the_configuration_check() -> None:
    config = ConfigFile.fromDict(
        {
            "outputs": [{"output": "duct.outputs.null.Null"}],
            "sources": [
                {"source": "test_graphs.BadGraphs", "service": "jobs"},
                {"source": "test_graphs.NotAMapping", "service": "odd"},
                {"source": "duct.sources.linux.basic.CPU", "service": "cpu"},
            ],
        }
    )
    graphWarnings = [warning for warning in config.warnings if ".graphs: " in warning]
    assert len(graphWarnings) == 3, config.warnings
    assert "BadGraphs.graphs: graph type 'pie' for 'by_state' is not one of" in graphWarnings[0]
    assert "BadGraphs.graphs: graph key 3 is not a string (ignored)" in graphWarnings[1]
    assert "NotAMapping.graphs: expected a mapping" in graphWarnings[2]
    assert all(warning.startswith("<config>: sources[") for warning in graphWarnings)


def test_a_source_whose_graphs_are_not_a_mapping_is_drawn_as_lines() -> None:
    graphs = GraphMap.fromSources([source(NotAMapping, "odd"), source(BadGraphs, "jobs")])
    assert graphs.graphOf("odd.x") == ("line", "odd.x")
    assert graphs.graphOf("jobs") == ("line", "jobs")
    assert graphs.prefixes == [("jobs", "line")]
