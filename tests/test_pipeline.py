"""The pipeline: aggregation, state rules and routing, on a Clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from duct.aggregators import Counter, Rate
from duct.objects import Event, Source
from duct.pipeline import Pipeline, SourceFeed
from duct.testing import FakeDuct, RecordingOutput, configure

T0 = 1_700_000_000.0


class Harness:
    """Outputs and sources on one FakeDuct; delivery happens when the clock moves."""

    def __init__(self, clock: Clock, **outputs: dict[str, Any]) -> None:
        self.clock = clock
        self.duct = FakeDuct(clock)
        self.outputs: dict[str, RecordingOutput] = {}
        for name, config in (outputs or {"out": {}}).items():
            full = {"name": name, "flush_interval": 0, **config}
            self.outputs[name] = RecordingOutput(configure(RecordingOutput, full), self.duct)
        self.pipeline = Pipeline(self.outputs)

    def source(self, **config: Any) -> Source:
        full = {"service": "src", **config}
        return Source(configure(Source, full), lambda events: None, self.duct)

    def written(self, name: str = "out") -> list[Event]:
        self.clock.advance(0)
        return self.outputs[name].written


def sample(
    metric: float | None,
    at: float,
    service: str = "net.bytes",
    host: str = "h1.example",
    aggregation: Any = Counter,
    state: str | None = "ok",
) -> Event:
    return Event(
        state,
        service,
        "a sample",
        metric,
        60.0,
        tags=["t"],
        hostname=host,
        aggregation=aggregation,
        evtime=at,
        attributes={"k": "v"},
    )


@pytest.fixture
def harness(clock: Clock) -> Harness:
    return Harness(clock)


# -- aggregation ----------------------------------------------------------------------


def test_first_sample_emits_nothing(harness: Harness) -> None:
    source = harness.source()
    harness.pipeline.receive(source, [sample(100, T0)])
    assert harness.written() == []
    assert harness.outputs["out"].received == 0


def test_second_sample_emits_rate_as_a_copy(harness: Harness) -> None:
    source = harness.source()
    first, second = sample(100, T0), sample(160, T0 + 10)
    harness.pipeline.receive(source, [first])
    harness.pipeline.receive(source, [second])
    [rate] = harness.written()
    assert rate.metric == 6.0
    assert rate is not second
    assert rate.aggregation is None
    assert (rate.service, rate.hostname, rate.time, rate.state) == (
        "net.bytes",
        "h1.example",
        T0 + 10,
        "ok",
    )
    assert (rate.tags, rate.attributes, rate.description, rate.ttl) == (
        ["t"],
        {"k": "v"},
        "a sample",
        60.0,
    )
    # The raw sample is untouched, and the copy shares no mutable parts with it.
    assert second.metric == 160
    assert second.aggregation is Counter
    assert rate.tags is not second.tags
    assert rate.attributes is not second.attributes


def test_successive_samples_each_emit_a_rate(harness: Harness) -> None:
    source = harness.source()
    for i, value in enumerate([0, 10, 30, 60]):
        harness.pipeline.receive(source, [sample(value, T0 + 5 * i)])
    assert [e.metric for e in harness.written()] == [2.0, 4.0, 6.0]


def test_series_are_keyed_by_host_and_service(harness: Harness) -> None:
    source = harness.source()
    receive = harness.pipeline.receive
    receive(source, [sample(100, T0, host="a"), sample(5000, T0, host="b")])
    receive(source, [sample(100, T0, service="other", host="a")])
    receive(
        source,
        [
            sample(200, T0 + 10, host="a"),
            sample(5100, T0 + 10, host="b"),
            sample(400, T0 + 10, service="other", host="a"),
        ],
    )
    got = {(e.hostname, e.service): e.metric for e in harness.written()}
    assert got == {("a", "net.bytes"): 10.0, ("b", "net.bytes"): 10.0, ("a", "other"): 30.0}


def test_series_keys_do_not_collide_across_dots(harness: Harness) -> None:
    """Host "a.b" with service "c" is not host "a" with service "b.c"."""
    source = harness.source()
    receive = harness.pipeline.receive
    receive(source, [sample(1000, T0, host="db.prod", service="cpu")])
    receive(source, [sample(0, T0 + 1, host="db", service="prod.cpu")])
    assert harness.written() == []
    receive(source, [sample(1010, T0 + 10, host="db.prod", service="cpu")])
    receive(source, [sample(90, T0 + 11, host="db", service="prod.cpu")])
    got = {(e.hostname, e.service): e.metric for e in harness.written()}
    assert got == {("db.prod", "cpu"): 1.0, ("db", "prod.cpu"): 9.0}


def test_events_without_aggregation_pass_through_unchanged(harness: Harness) -> None:
    source = harness.source()
    plain = [sample(5, T0, aggregation=None), sample(7, T0, service="x", aggregation=None)]
    before = [e.asDict() for e in plain]
    harness.pipeline.receive(source, plain)
    written = harness.written()
    assert len(written) == 2
    assert written[0] is plain[0] and written[1] is plain[1]
    assert [e.asDict() for e in written] == before


def test_mixed_batch_keeps_plain_events_and_order(harness: Harness) -> None:
    source = harness.source()
    harness.pipeline.receive(source, [sample(0, T0), sample(1, T0, "a", aggregation=None)])
    harness.pipeline.receive(
        source,
        [
            sample(2, T0 + 1, "b", aggregation=None),
            sample(50, T0 + 10),
            sample(3, T0 + 1, "c", aggregation=None),
        ],
    )
    assert [(e.service, e.metric) for e in harness.written()] == [
        ("a", 1),
        ("b", 2),
        ("net.bytes", 5.0),
        ("c", 3),
    ]


def test_counter_reset_emits_nothing_and_becomes_the_baseline(harness: Harness) -> None:
    source = harness.source()
    for value, at in [(100, T0), (50, T0 + 10), (70, T0 + 20)]:
        harness.pipeline.receive(source, [sample(value, at)])
    assert [e.metric for e in harness.written()] == [2.0]


def test_rate_may_be_negative_through_the_pipeline(harness: Harness) -> None:
    source = harness.source()
    harness.pipeline.receive(source, [sample(100, T0, aggregation=Rate)])
    harness.pipeline.receive(source, [sample(50, T0 + 10, aggregation=Rate)])
    assert [e.metric for e in harness.written()] == [-5.0]


def test_sample_without_metric_emits_nothing(harness: Harness) -> None:
    source = harness.source()
    for value, at in [(100, T0), (None, T0 + 10), (300, T0 + 20), (400, T0 + 30)]:
        harness.pipeline.receive(source, [sample(value, at)])
    # None breaks the chain: 300 has no usable predecessor, 400 does.
    assert [e.metric for e in harness.written()] == [10.0]


# -- triggers ----------------------------------------------------------------------------


def test_triggers_apply_after_aggregation(harness: Harness) -> None:
    source = harness.source(warning={"net": "> 10"}, critical={"net": "> 100"})
    receive = harness.pipeline.receive
    receive(source, [sample(1000, T0)])
    # A raw metric of 1100 is far over 100, but the rate (10/s) is not over 10.
    receive(source, [sample(1100, T0 + 10)])
    # The rate (500/s) is over the critical threshold.
    receive(source, [sample(6100, T0 + 20)])
    # 50/s: warning.
    receive(source, [sample(6600, T0 + 30)])
    assert [(e.metric, e.state) for e in harness.written()] == [
        (10.0, "ok"),
        (500.0, "critical"),
        (50.0, "warning"),
    ]


def test_triggers_apply_to_plain_events(harness: Harness) -> None:
    source = harness.source(critical={"load": ">= 4"})
    events = [sample(m, T0, "load", aggregation=None) for m in (1, 4)]
    harness.pipeline.receive(source, events)
    assert [e.state for e in harness.written()] == ["ok", "critical"]


def test_triggers_do_not_touch_the_stored_raw_sample(harness: Harness) -> None:
    source = harness.source(critical={"net": "> 1"})
    raw = sample(10_000, T0)
    harness.pipeline.receive(source, [raw])
    harness.pipeline.receive(source, [sample(20_000, T0 + 1)])
    assert raw.state == "ok"
    assert [e.state for e in harness.written()] == ["critical"]


# -- routing ----------------------------------------------------------------------------


@pytest.fixture
def three(clock: Clock) -> Harness:
    return Harness(clock, out1={}, out2={}, out3={})


def services(h: Harness) -> dict[str, list[str]]:
    h.clock.advance(0)
    return {name: [e.service for e in out.written] for name, out in h.outputs.items()}


def test_route_to_one_output(three: Harness) -> None:
    source = three.source(route="out1")
    assert source.config["route"] == ["out1"]
    three.pipeline.receive(source, [sample(1, T0, "a", aggregation=None)])
    assert services(three) == {"out1": ["a"], "out2": [], "out3": []}


def test_route_given_as_a_plain_string(three: Harness) -> None:
    source = three.source()
    source.config["route"] = "out2"
    three.pipeline.receive(source, [sample(1, T0, "a", aggregation=None)])
    assert services(three) == {"out1": [], "out2": ["a"], "out3": []}


def test_route_to_several_outputs(three: Harness) -> None:
    source = three.source(route=["out1", "out2"])
    three.pipeline.receive(source, [sample(1, T0, "a", aggregation=None)])
    assert services(three) == {"out1": ["a"], "out2": ["a"], "out3": []}


def test_no_route_reaches_every_output(three: Harness) -> None:
    source = three.source()
    three.pipeline.receive(source, [sample(1, T0, "a", aggregation=None)])
    assert services(three) == {"out1": ["a"], "out2": ["a"], "out3": ["a"]}


def test_sources_keep_their_own_routes(three: Harness) -> None:
    one, two = three.source(route="out1"), three.source(route="out3")
    three.pipeline.receive(one, [sample(1, T0, "one", aggregation=None)])
    three.pipeline.receive(two, [sample(1, T0, "two", aggregation=None)])
    assert services(three) == {"out1": ["one"], "out2": [], "out3": ["two"]}


def test_register_and_unregister(three: Harness) -> None:
    source = three.source(route=["out2"], warning={"x": "> 1"})
    route = three.pipeline.register(source)
    assert three.pipeline.routes[source] is route
    assert route.outputs == [three.outputs["out2"]]
    assert route.blocking == [three.outputs["out2"]]
    assert route.triggers
    three.pipeline.unregister(source)
    assert source not in three.pipeline.routes
    three.pipeline.unregister(source)  # a second time is harmless


def test_empty_batch_reaches_no_output(three: Harness) -> None:
    source = three.source()
    three.pipeline.receive(source, [])
    assert all(out.received == 0 for out in three.outputs.values())


# -- back-pressure ------------------------------------------------------------------------


def test_accepting_false_while_routed_blocking_output_is_full(clock: Clock) -> None:
    h = Harness(
        clock,
        full={"maxsize": 2, "flush_interval": 10},
        lossy={"maxsize": 2, "overflow": "drop_oldest", "flush_interval": 10},
        other={"maxsize": 2, "flush_interval": 10},
    )
    toFull = h.source(route="full")
    toLossy = h.source(route="lossy")
    toOther = h.source(route="other")
    toAll = h.source()
    for source in (toFull, toLossy, toOther, toAll):
        h.pipeline.register(source)
    assert all(h.pipeline.accepting(s) for s in (toFull, toLossy, toOther, toAll))

    h.pipeline.receive(toFull, [sample(i, T0, f"f{i}", aggregation=None) for i in range(2)])
    h.pipeline.receive(toLossy, [sample(i, T0, f"l{i}", aggregation=None) for i in range(3)])
    assert not h.outputs["full"].buffer.writable
    assert not h.outputs["lossy"].buffer.writable
    assert not h.pipeline.accepting(toFull)
    assert not h.pipeline.accepting(toAll)  # it feeds "full" too
    assert h.pipeline.accepting(toLossy)  # drop_oldest never holds a source back
    assert h.pipeline.accepting(toOther)  # "full" is not on its route

    # Once the output drains, the source may poll again.
    clock.advance(10)
    assert [e.service for e in h.outputs["full"].written] == ["f0", "f1"]
    assert h.pipeline.accepting(toFull)
    assert h.pipeline.accepting(toAll)


def test_accepting_for_an_unknown_source(harness: Harness) -> None:
    assert harness.pipeline.accepting(harness.source())


def test_drop_newest_output_blocks_nothing(clock: Clock) -> None:
    h = Harness(clock, out={"maxsize": 1, "overflow": "drop_newest", "flush_interval": 10})
    source = h.source()
    h.pipeline.receive(source, [sample(i, T0, f"s{i}", aggregation=None) for i in range(3)])
    assert not h.outputs["out"].buffer.writable
    assert h.pipeline.accepting(source)


# -- forgetting -------------------------------------------------------------------------------


def test_forget_drops_stale_series(harness: Harness) -> None:
    source = harness.source()
    receive = harness.pipeline.receive
    receive(source, [sample(100, T0, "old"), sample(100, T0 + 50, "new")])
    assert harness.pipeline.forget(T0) == 0
    assert harness.pipeline.forget(T0 + 10) == 1
    assert len(harness.pipeline.previous) == 1
    assert harness.pipeline.forget(T0 + 10) == 0
    # The forgotten series starts again: its next sample is a first sample.
    receive(source, [sample(200, T0 + 60, "old"), sample(200, T0 + 60, "new")])
    assert [(e.service, e.metric) for e in harness.written()] == [("new", 10.0)]
    receive(source, [sample(300, T0 + 70, "old")])
    assert [(e.service, e.metric) for e in harness.written()][-1] == ("old", 10.0)


# -- the feed ---------------------------------------------------------------------------------


def test_source_feed_passes_events_to_the_pipeline(harness: Harness) -> None:
    feed = SourceFeed(harness.pipeline)
    source = harness.source()
    feed.source = source
    single = sample(1, T0, "one", aggregation=None)
    feed(single)
    feed([sample(2, T0, "two", aggregation=None)])
    assert [e.service for e in harness.written()] == ["one", "two"]
    assert source in harness.pipeline.routes


def test_source_feed_without_source_fails_loudly(harness: Harness) -> None:
    feed = SourceFeed(harness.pipeline)
    with pytest.raises(AssertionError):
        feed([sample(1, T0, aggregation=None)])
