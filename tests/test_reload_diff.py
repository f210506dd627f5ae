"""`duct.reload.diff` on plain snapshots: no service, no clock, nothing started."""

from __future__ import annotations

from typing import Any

from duct.configuration import Config, ConfigFile
from duct.reload import diff
from duct.roster import Running

OUT = "duct.testing.RecordingOutput"
LOAD = "duct.sources.linux.basic.LoadAverage"
MEMORY = "duct.sources.linux.basic.Memory"


def config(sources: list[dict[str, Any]], outputs: list[dict[str, Any]], **top: Any) -> Config:
    return ConfigFile.fromDict(
        {"hostname": "h.example", **top, "sources": sources, "outputs": outputs}
    )


def running(old: Config, handles: list[str], host: str = "h.example") -> Running:
    """A snapshot of ``old`` as if it ran, each source known by the handle given."""
    outputs = {item.config.get("name") or item.cls.__name__: item for item in old.outputs}
    sources = [(h, item, host) for h, item in zip(handles, old.sources, strict=True)]
    return Running(outputs, sources, old.get("state_dir") or "/var/lib/duct")


def test_the_same_configuration_changes_nothing() -> None:
    old = config([{"service": "load", "source": LOAD}], [{"output": OUT, "name": "a"}])
    plan = diff(running(old, ["load#1"]), old)
    assert (plan.addedOutputs, plan.removedOutputs, plan.changedOutputs) == ([], [], [])
    assert (plan.addedSources, plan.removedSources, plan.changedSources) == (0, [], [])
    assert [running for _, running in plan.sources] == ["load#1"]


def test_outputs_are_matched_by_name_and_changed_by_any_option() -> None:
    old = config(
        [],
        [
            {"output": OUT, "name": "keep"},
            {"output": OUT, "name": "gone"},
            {"output": OUT, "name": "edit"},
        ],
    )
    new = config(
        [],
        [
            {"output": OUT, "name": "edit", "batch_size": 7},
            {"output": OUT, "name": "keep"},
            {"output": OUT, "name": "new"},
        ],
    )
    plan = diff(running(old, []), new)
    assert list(plan.outputs) == ["edit", "keep", "new"]  # the new order
    assert plan.addedOutputs == ["new"]
    assert plan.removedOutputs == ["gone"]
    assert plan.changedOutputs == ["edit"]


def test_a_disk_buffer_without_a_path_changes_with_the_state_dir() -> None:
    outputs = [{"output": OUT, "name": "d", "buffer": {"type": "disk"}}]
    old = config([], outputs, state_dir="/srv/one")
    assert diff(running(old, []), config([], outputs, state_dir="/srv/one")).changedOutputs == []
    assert diff(running(old, []), config([], outputs, state_dir="/srv/two")).changedOutputs == ["d"]
    pinned = [{"output": OUT, "name": "d", "buffer": {"type": "disk", "path": "/srv/d"}}]
    old = config([], pinned, state_dir="/srv/one")
    assert diff(running(old, []), config([], pinned, state_dir="/srv/two")).changedOutputs == []


def test_sources_with_the_same_identity_match_in_order() -> None:
    old = config(
        [
            {"service": "load", "source": LOAD},
            {"service": "load", "source": LOAD, "interval": 5},
            {"service": "mem", "source": MEMORY},
        ],
        [],
    )
    new = config(
        [
            {"service": "load", "source": LOAD},
            {"service": "load", "source": LOAD, "interval": 9},
            {"service": "cpu", "source": MEMORY},
        ],
        [],
    )
    plan = diff(running(old, ["first", "second", "mem"]), new)
    assert [handle for _, handle in plan.sources] == ["first", None, None]
    assert plan.changedSources == ["second"]  # the second "load" matched the second
    assert plan.removedSources == ["mem"]
    assert plan.addedSources == 1
    assert plan.summary() == (
        "outputs: 0 added, 0 removed, 0 changed; sources: 1 added, 1 removed, 1 changed"
    )


def test_a_source_changes_with_the_hostname_its_events_carry() -> None:
    old = config([{"service": "load", "source": LOAD}], [])
    moved = config([{"service": "load", "source": LOAD}], [], hostname="other.example")
    assert diff(running(old, ["load"]), moved).changedSources == ["load"]
    # One that names its own host does not follow the top-level hostname.
    own = [{"service": "load", "source": LOAD, "hostname": "fixed"}]
    old = config(own, [])
    plan = diff(running(old, ["load"], host="fixed"), config(own, [], hostname="other.example"))
    assert plan.changedSources == [] and plan.sources[0][1] == "load"


def test_a_changed_top_level_interval_changes_the_sources_that_use_it() -> None:
    sources = [
        {"service": "load", "source": LOAD},
        {"service": "mem", "source": MEMORY, "interval": 3},
    ]
    old = config(sources, [], interval=10)
    plan = diff(running(old, ["load", "mem"]), config(sources, [], interval=20))
    assert plan.changedSources == ["load"]
    assert [handle for _, handle in plan.sources] == [None, "mem"]
