"""The Roster: the one owner of the running outputs and sources, on a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent

from duct.configuration import Item
from duct.lib.deferreds import within
from duct.objects import Source
from duct.pipeline import Pipeline, SourceFeed
from duct.roster import Roster
from duct.testing import FakeDuct, RecordingOutput, configure


class Slow(Source):
    """Each poll waits for the test to fire it."""

    options = ()

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: list[Deferred[Any]] = []

    def get(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


def item(label: str) -> Item:
    return Item("<test>", label, {})


def roster(clock: Clock, outputs: tuple[str, ...] = ("out",)) -> tuple[Roster, FakeDuct]:
    duct = FakeDuct(clock)
    made = Roster(Pipeline({}), clock)
    for name in outputs:
        config = configure(RecordingOutput, {"output": "x", "name": name, "flush_interval": 0})
        made.addOutput(RecordingOutput(config, duct), item(name))
    return made, duct


def slow(made: Roster, duct: FakeDuct, service: str) -> Slow:
    feed = SourceFeed(made.pipeline)
    source = Slow(configure(Slow, {"source": "x", "service": service}), feed, duct)
    feed.source = source
    return source


def test_a_replaced_source_stays_routed_until_its_last_poll_lands(clock: Clock) -> None:
    made, duct = roster(clock)
    old = slow(made, duct, "s")
    made.addSource(old, item("s"))
    old.startTimer()  # a poll now in flight
    new = slow(made, duct, "s")
    made.replaceSource(old, new)
    assert made.sources == [new] and made.itemOf(new).label == "s"
    assert not made.holds(old) and old in made.pipeline.routes  # still routed
    old.pending[0].callback([old.createEvent("ok", None, 1.0)])  # the late poll lands
    assert old not in made.pipeline.routes and new in made.pipeline.routes
    output = made.outputs["out"]
    assert isinstance(output, RecordingOutput)
    clock.advance(0)
    assert [e.metric for e in output.written] == [1.0]  # delivered, not lost


def test_removing_sources_waits_for_polls_within_the_timeout(
    clock: Clock, logged: list[dict[str, Any]]
) -> None:
    made, duct = roster(clock)
    hung = slow(made, duct, "hung")
    made.addSource(hung, item("hung"))
    hung.startTimer()
    done: list[None] = []
    Deferred.fromCoroutine(made.removeSources([hung], 5.0, "after the reload")).addCallback(
        done.append
    )
    assert made.sources == [] and not done
    clock.advance(5)
    assert done == [None]
    (warning,) = [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.warn]
    assert warning == "sources hung still polling after 5.0s; not waiting for them after the reload"


def test_swap_outputs_keeps_the_items_of_the_outputs_it_keeps(clock: Clock) -> None:
    made, duct = roster(clock, ("a", "b"))
    a = made.outputs["a"]
    made.swapOutputs({"a": a}, {})
    assert list(made.outputs) == ["a"] and made.outputItem("a").label == "a"
    assert made.snapshot("/var/lib/duct").outputs.keys() == {"a"}
    assert made.pipeline.outputs == {"a": a}


def test_retire_reports_what_is_left_and_stops_the_outputs(clock: Clock) -> None:
    made, duct = roster(clock)
    output = made.outputs["out"]
    assert isinstance(output, RecordingOutput)
    output.failing = True
    output.start()
    output.eventsReceived([slow(made, duct, "s").createEvent("ok", None, 1.0)] * 3)
    left: list[int] = []
    Deferred.fromCoroutine(made.retire([output], 2.0, "on removal")).addCallback(left.append)
    clock.advance(2)
    assert left == [3]


def test_within_fires_false_after_the_time_and_leaves_the_deferred_alone(clock: Clock) -> None:
    d: Deferred[None] = Deferred()
    fired: list[bool] = []
    within(d, 1.0, clock).addCallback(fired.append)
    clock.advance(1)
    assert fired == [False] and not d.called
    d.callback(None)
    assert fired == [False]
