"""Reloading a running DuctService: only what differs changes, nothing queued is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent

from duct.objects import Event, Source
from duct.reload import hangup, reloadFromFile
from duct.service import DuctService
from duct.testing import RecordingOutput

HERE = __name__


class Ticker(Source):
    """One event per poll, its metric the poll number."""

    options = ()

    def get(self) -> Event:
        return self.createEvent("ok", "tick", float(self.polls))


def ticker(service: str, **config: Any) -> dict[str, Any]:
    return {"source": f"{HERE}.Ticker", "service": service, "interval": 1, **config}


def recording(name: str, **config: Any) -> dict[str, Any]:
    return {"output": "duct.testing.RecordingOutput", "name": name, "flush_interval": 0, **config}


def settings(sources: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "hostname": "test.example",
        "stagger": 0,
        "shutdown_timeout": 5,
        "sources": sources,
        "outputs": outputs,
    }


def started(clock: Clock, config: dict[str, Any], failing: tuple[str, ...] = ()) -> DuctService:
    """A running service; the outputs named in ``failing`` cannot deliver yet."""
    service = DuctService(config, reactor=clock)
    for name in failing:
        output(service, name).failing = True
    service.startService()
    clock.advance(0)
    return service


def reload(clock: Clock, service: DuctService, config: dict[str, Any]) -> list[Any]:
    """Reload ``config``, letting up to shutdown_timeout pass; return what the reload fired."""
    fired: list[Any] = []
    service.reload(config).addBoth(fired.append)
    for _ in range(60):
        if fired:
            break
        clock.advance(0.1)
    assert fired, "the reload never finished"
    return fired


def step(clock: Clock, seconds: float) -> None:
    """Advance in tenths, so a looping call runs at each of its times."""
    for _ in range(round(seconds * 10)):
        clock.advance(0.1)


def polling(source: Source) -> bool:
    return bool(source.t is not None and source.t.running)


def output(service: DuctService, name: str) -> RecordingOutput:
    found = service.outputs[name]
    assert isinstance(found, RecordingOutput)
    return found


def metrics(events: list[Event]) -> list[float | None]:
    return [e.metric for e in events]


def lines(events: list[dict[str, Any]], level: LogLevel) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == level]


# -- outputs ---------------------------------------------------------------------------


def test_unchanged_output_keeps_its_buffer_when_others_come_and_go(clock: Clock) -> None:
    """Removing one output and adding another leaves the third's queue and object alone."""
    before = settings([ticker("a")], [recording("keep"), recording("old")])
    service = started(clock, before, failing=("keep",))  # its destination is down
    keep = output(service, "keep")
    step(clock, 3)
    queued = keep.buffer.depth
    assert queued >= 3

    fired = reload(clock, service, settings([ticker("a")], [recording("keep"), recording("new")]))

    assert fired == [None]
    assert output(service, "keep") is keep
    assert keep.buffer.depth >= queued  # nothing it held was dropped
    assert sorted(service.outputs) == ["keep", "new"]
    keep.failing = False
    step(clock, 60)  # past its retry backoff
    polled = metrics(keep.written)
    assert polled == sorted(polled) and polled == [
        float(i) for i in range(1, len(polled) + 1)
    ]  # each once, in order
    assert metrics(output(service, "new").written)  # the added output is fed


def test_a_removed_output_delivers_what_it_holds_before_stopping(clock: Clock) -> None:
    service = started(
        clock, settings([ticker("a")], [recording("keep"), recording("gone", flush_interval=30)])
    )
    step(clock, 2.5)
    gone = output(service, "gone")
    assert gone.buffer.depth == 3 and not gone.written  # waiting for its flush_interval

    reload(clock, service, settings([ticker("a")], [recording("keep")]))

    assert metrics(gone.written) == [1.0, 2.0, 3.0]
    assert gone._stopped
    assert "gone" not in service.outputs


def test_a_changed_memory_output_hands_its_backlog_to_its_replacement(
    clock: Clock, logged: list[dict[str, Any]]
) -> None:
    service = started(clock, settings([ticker("a")], [recording("out")]), failing=("out",))
    old = output(service, "out")
    step(clock, 2.5)
    assert old.buffer.depth == 3

    reload(clock, service, settings([ticker("a")], [recording("out", batch_size=7)]))

    new = output(service, "out")
    assert new is not old and new.batchSize == 7
    assert old.stopped and old.buffer.depth == 0
    step(clock, 1)
    received = metrics(new.written)
    assert {1.0, 2.0, 3.0} <= set(received)  # the backlog moved over
    assert len(received) == len(set(received))  # and nothing twice
    assert any("moved to its replacement" in line for line in lines(logged, LogLevel.info))


def test_a_changed_disk_output_replays_its_directory(clock: Clock, tmp_path: Path) -> None:
    disk = {"type": "disk", "path": str(tmp_path / "buffer"), "sync": "always"}
    service = started(clock, settings([ticker("a")], [recording("out", buffer=disk)]), ("out",))
    old = output(service, "out")
    step(clock, 2.5)
    held = old.buffer.depth
    assert held >= 3

    reload(clock, service, settings([ticker("a")], [recording("out", buffer=disk, batch_size=3)]))

    new = output(service, "out")
    assert new is not old and new.batchSize == 3
    step(clock, 2)
    received = metrics(new.written)
    assert received[:held] == [float(i) for i in range(1, held + 1)]  # the backlog first, in order
    assert len(received) == len(set(received))
    service.stopService()
    step(clock, 10)


# -- sources ---------------------------------------------------------------------------


def test_sources_added_removed_changed_and_left_alone(clock: Clock) -> None:
    service = started(
        clock, settings([ticker("same"), ticker("gone"), ticker("edit")], [recording("out")])
    )
    same, gone, edit = service.sources
    step(clock, 2)
    polls = same.polls

    reload(
        clock,
        service,
        settings([ticker("same"), ticker("edit", interval=2), ticker("added")], [recording("out")]),
    )

    step(clock, 1)
    assert service.sources[0] is same and polling(same) and same.polls > polls
    assert not polling(gone) and gone not in service.sources
    assert not polling(edit) and service.sources[1] is not edit
    assert service.sources[1].interval == 2
    added = service.sources[2]
    assert added.service == "added" and polling(added)
    before = len(output(service, "out").written)
    step(clock, 2)
    services = {e.service for e in output(service, "out").written[before:]}
    assert services == {"same", "edit", "added"}


def test_a_source_without_route_also_feeds_an_added_output(clock: Clock) -> None:
    service = started(clock, settings([ticker("a")], [recording("one")]))
    reload(clock, service, settings([ticker("a")], [recording("one"), recording("two")]))
    step(clock, 2)
    assert metrics(output(service, "two").written)


# -- invalid configurations ---------------------------------------------------------------


def test_an_unbuildable_plugin_changes_nothing(clock: Clock) -> None:
    before = settings([ticker("a")], [recording("out")])
    service = started(clock, before)
    running = (service.config, list(service.sources), dict(service.outputs))

    bad = settings([ticker("a")], [recording("out"), {"output": f"{HERE}.Exploding"}])
    fired = reload(clock, service, bad)

    assert len(fired) == 1 and "cannot be built" in str(fired[0].value)
    assert (service.config, service.sources, service.outputs) == running
    assert all(polling(s) for s in service.sources)


class Exploding(RecordingOutput):
    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        raise RuntimeError("no such device")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("sources: [\n  - service: a\n    interval: [\n", "line"),
        ("outputs:\n  - output: duct.outputs.null.Null\n    colour: blue\n", "colour"),
    ],
    ids=["yaml-syntax", "unknown-key"],
)
def test_an_invalid_file_leaves_the_running_config(
    clock: Clock, tmp_path: Path, observe_errors: Any, text: str, named: str
) -> None:
    service = started(clock, settings([ticker("a")], [recording("out")]))
    running = (service.config, list(service.sources), dict(service.outputs))
    path = tmp_path / "duct.yml"
    path.write_text(text)

    applied: list[bool] = []
    reloadFromFile(service, str(path)).addCallback(applied.append)

    assert applied == [False]
    assert (service.config, service.sources, service.outputs) == running
    errors = [formatEvent(e) for e in observe_errors.take()]
    assert any("keeping the running configuration" in e and str(path) in e for e in errors)
    assert any(named in e for e in errors)
    step(clock, 2)
    assert metrics(output(service, "out").written)  # still running


def test_hangup_reopens_and_reloads_a_valid_file(clock: Clock, tmp_path: Path) -> None:
    service = started(clock, settings([ticker("a")], [recording("out")]))
    path = tmp_path / "duct.yml"
    path.write_text(
        "hostname: test.example\nstagger: 0\n"
        f"sources:\n  - source: {HERE}.Ticker\n    service: b\n    interval: 1\n"
        "outputs:\n  - output: duct.testing.RecordingOutput\n    name: out\n"
    )
    applied: list[bool] = []
    hangup(service, str(path)).addCallback(applied.append)
    while not applied:
        clock.advance(0.1)
    assert applied == [True]
    assert [s.service for s in service.sources] == ["b"]


def test_a_stop_waits_for_the_reload_in_progress(clock: Clock) -> None:
    config = settings([ticker("a")], [recording("out"), recording("gone")])
    service = started(clock, config, failing=("gone",))
    step(clock, 1.5)
    order: list[str] = []
    service.reload(settings([ticker("a")], [recording("out")])).addCallback(
        lambda _: order.append("reloaded")
    )
    service.stopService().addCallback(lambda _: order.append("stopped"))
    step(clock, 2)
    # "gone" cannot deliver, so the reload waits up to shutdown_timeout, and
    # the stop has not begun: the source still polls.
    assert order == [] and polling(service.sources[0])
    step(clock, 10)
    assert sorted(order) == ["reloaded", "stopped"]
    assert not polling(service.sources[0]) and list(service.outputs) == ["out"]
