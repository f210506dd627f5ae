"""duct.stats: snapshots of real sources and outputs on a Clock, roll-ups, self events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from duct.objects import Event, Source
from duct.options import Option
from duct.service import DuctService
from duct.stats import (
    OUTPUT_STATS,
    SOURCE_STATS,
    combine,
    flatten,
    rollUp,
    snapshot,
    sourceKeys,
)
from duct.testing import FakeDuct, RecordingOutput, SourceHarness

HERE = __name__


class Ticking(Source):
    """One event per poll; each poll takes ``takes`` seconds of clock time."""

    options = (Option("takes", "number", 0.0, "seconds of clock time a poll takes"),)

    def get(self) -> Any:
        event = self.createEvent("ok", None, float(self.polls))
        takes = self.config["takes"]
        if not takes:
            return event
        return deferLater(self.clock, takes, lambda: event)


class Failing(Source):
    options = ()

    def get(self) -> Any:
        raise RuntimeError("sensor unplugged")


class SlowOutput(RecordingOutput):
    """Each write is confirmed ``delay`` seconds later (``delay`` from the name's digits)."""

    connected: bool | None = True

    def writeBatch(self, events: list[Any]) -> Any:
        delay = float(self.config["name"].split("-")[-1])
        return deferLater(self.clock, delay, lambda: RecordingOutput.writeBatch(self, events))


def ticking(service: str, interval: float, **config: Any) -> dict[str, Any]:
    return {"source": f"{HERE}.Ticking", "service": service, "interval": interval, **config}


def build(clock: Clock, sources: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> Any:
    config = {"hostname": "stats.example", "stagger": 0, "sources": sources, "outputs": outputs}
    return DuctService(config, reactor=clock)


def advance(clock: Clock, seconds: float, step: float = 0.25) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


@pytest.fixture
def scenario(observe_errors: Any) -> Any:
    """Three sources and three outputs, 10 seconds into a run."""
    clock = Clock()
    service = build(
        clock,
        [
            ticking("fast", 1.0, route=["slow-0.5", "slow-0.25"]),
            ticking("slow", 2.0, takes=1.5, route=["slow-0.5", "small"]),
            {"source": f"{HERE}.Failing", "service": "broken", "interval": 5.0},
        ],
        [
            {"output": f"{HERE}.SlowOutput", "name": "slow-0.5", "flush_interval": 0},
            {"output": f"{HERE}.SlowOutput", "name": "slow-0.25", "flush_interval": 0},
            {
                "output": "duct.testing.RecordingOutput",
                "name": "small",
                "maxsize": 2,
                "overflow": "drop_newest",
            },
        ],
    )
    service.outputs["small"].failing = True  # holds 2 events; the rest overflow
    service.outputs["slow-0.25"].connected = False
    service.startService()
    clock.advance(0)  # sources start now, stagger 0
    advance(clock, 10.0)
    observe_errors.take()  # the failing source's tracebacks, logged and counted
    return service


def test_each_source_and_output_entry_reads_its_object(scenario: Any) -> None:
    snap = snapshot(scenario)
    fast, slow, broken = scenario.sources
    assert set(snap["sources"]) == {"fast", "slow", "broken"}
    assert snap["sources"]["fast"]["polls"] == fast.polls == 11  # at 0, 1, ..., 10
    assert snap["sources"]["slow"]["polls"] == slow.polls == 6  # at 0, 2, ..., 10
    assert snap["sources"]["slow"]["last_poll_duration"] == 1.5
    assert snap["sources"]["fast"]["last_poll_duration"] == 0.0
    assert snap["sources"]["broken"]["errors"] == broken.errors == 3  # at 0, 5, 10
    assert snap["sources"]["broken"]["emitted"] == 0
    assert "last_event_time" not in snap["sources"]["broken"]
    assert snap["sources"]["fast"]["last_event_time"] == 10.0
    assert snap["sources"]["fast"]["class"] == f"{HERE}.Ticking"

    small = scenario.outputs["small"]
    entry = snap["outputs"]["small"]
    assert entry["dropped"] == {"overflow": small.buffer.drops["overflow"]}
    assert entry["dropped"]["overflow"] == slow.emitted - 2 > 0
    assert entry["buffer_events"] == 2 and entry["buffer_max_events"] == 2
    assert entry["failures"] == small.failures > 0
    assert "connected" not in entry  # a RecordingOutput has no connection
    half = snap["outputs"]["slow-0.5"]
    assert half["connected"] is True and half["last_ack_latency"] == 0.5
    assert half["acked"] == scenario.outputs["slow-0.5"].acked > 0
    assert half["events_sent"] == scenario.outputs["slow-0.5"].sent
    assert snap["outputs"]["slow-0.25"]["last_ack_latency"] == 0.25


def test_totals_follow_each_stats_declared_rollup(scenario: Any) -> None:
    snap = snapshot(scenario)
    sources, outputs = snap["sources"].values(), snap["outputs"].values()
    totals = snap["totals"]
    assert totals["sources"]["count"] == 3 and totals["outputs"]["count"] == 3
    # sum
    assert totals["sources"]["polls"] == sum(s.polls for s in scenario.sources) == 20
    assert totals["outputs"]["events_received"] == sum(
        o.received for o in scenario.outputs.values()
    )
    assert totals["outputs"]["buffer_max_events"] == 2 + 2 * 100_000
    assert totals["outputs"]["dropped"] == {
        "overflow": snap["outputs"]["small"]["dropped"]["overflow"]
    }
    # max
    assert totals["sources"]["last_poll_duration"] == 1.5
    assert totals["outputs"]["last_ack_latency"] == 0.5
    assert totals["sources"]["last_event_time"] == max(
        s["last_event_time"] for s in sources if "last_event_time" in s
    )
    # min: one output is disconnected, so not all are
    assert totals["outputs"]["connected"] is False
    scenario.outputs["slow-0.25"].connected = True
    assert snapshot(scenario)["totals"]["outputs"]["connected"] is True
    # Every declared roll-up other than none has its total.
    for stats, entries, part in (
        (SOURCE_STATS, sources, "sources"),
        (OUTPUT_STATS, outputs, "outputs"),
    ):
        for stat in stats:
            present = [e[stat.key] for e in entries if stat.key in e]
            if present and stat.rollup != "none":
                assert stat.key in totals[part], stat.key


def test_a_snapshot_is_plain_json(scenario: Any) -> None:
    snap = snapshot(scenario)
    assert json.loads(json.dumps(snap)) == snap
    assert snap["hostname"] == "stats.example"
    assert snap["time"] == scenario.clock.seconds()
    process = snap["process"]
    assert process["rss_bytes"] > 0 and process["cpu_seconds"] > 0 and process["uptime"] >= 0
    assert process["start_time"] <= process["start_time"] + process["uptime"]


def test_rollups() -> None:
    assert rollUp("sum", [1, 2, None, 3]) == 6
    assert rollUp("min", [4, 2, 9]) == 2
    assert rollUp("max", [4.5, 2, 9.25]) == 9.25
    assert rollUp("min", [True, False]) is False
    assert rollUp("none", [7, 7]) == 7
    assert rollUp("none", [7, 8]) is None
    assert rollUp("sum", [None, None]) is None
    assert rollUp("sum", [{"overflow": 2}, {"overflow": 3, "expired": 1}]) == {
        "expired": 1,
        "overflow": 5,
    }


def test_combine_merges_snapshots_from_several_processes(observe_errors: Any) -> None:
    snaps = []
    for takes, drops in ((0.5, True), (2.0, False)):
        clock = Clock()
        outputs: list[dict[str, Any]] = [
            {"output": "duct.testing.RecordingOutput", "name": "out", "maxsize": 1,
             "overflow": "drop_newest"},
        ]  # fmt: skip
        service = build(clock, [ticking("relay", 3.0, takes=takes)], outputs)
        service.outputs["out"].failing = drops
        service.startService()
        clock.advance(0)  # sources start now, stagger 0
        advance(clock, 9.0)
        snaps.append(snapshot(service))
    merged = combine(snaps)
    one, two = (s["sources"]["relay"] for s in snaps)
    relay = merged["sources"]["relay"]
    assert relay["polls"] == one["polls"] + two["polls"]
    assert relay["last_poll_duration"] == 2.0
    out = merged["outputs"]["out"]
    assert out["dropped"] == snaps[0]["outputs"]["out"]["dropped"]
    assert out["events_received"] == sum(s["outputs"]["out"]["events_received"] for s in snaps)
    assert merged["totals"]["sources"]["polls"] == relay["polls"]
    assert merged["process"]["processes"] == 2
    assert merged["process"]["rss_bytes"] == sum(s["process"]["rss_bytes"] for s in snaps)
    assert merged["process"]["start_time"] == min(s["process"]["start_time"] for s in snaps)
    assert "pid" in merged["process"]  # both snapshots came from this process
    observe_errors.take()


def test_sources_sharing_a_service_get_distinct_keys() -> None:
    duct = FakeDuct()
    made = [
        SourceHarness(Ticking, {"service": s, "hostname": h}, duct).source
        for s, h in (("cpu", "a"), ("cpu", "b"), ("mem", "a"), ("cpu", "b"))
    ]
    assert sourceKeys(made) == ["cpu@a", "cpu@b#1", "mem", "cpu@b#2"]


def test_flatten_names_every_number() -> None:
    snap = {
        "time": 5.0,
        "hostname": "h",
        "process": {"rss_bytes": 10},
        "sources": {"cpu": {"class": "x.CPU", "polls": 2}},
        "outputs": {"out": {"connected": True, "dropped": {"overflow": 4}}},
        "totals": {"sources": {"count": 1, "polls": 2}, "outputs": {"count": 1}},
    }
    assert dict(flatten(snap)) == {
        "process.rss_bytes": 10,
        "source.cpu.polls": 2,
        "output.out.connected": 1.0,
        "output.out.dropped.overflow": 4,
        "total.source.count": 1,
        "total.source.polls": 2,
        "total.output.count": 1,
    }


def test_output_counts_acks_latency_and_batches_in_flight() -> None:
    duct = FakeDuct()
    output = SlowOutput({"name": "w-2", "batch_size": 10, "flush_interval": 0}, duct)
    assert output.inFlight == 0 and output.lastAckLatency is None
    output.eventsReceived(
        [SourceHarness(Ticking, {"service": "x"}, duct).source.createEvent("ok", None, 1.0)]
    )
    duct.clock.advance(0)
    assert output.inFlight == 1 and output.acked == 0
    duct.clock.advance(2)
    assert output.inFlight == 0 and output.acked == 1 and output.lastAckLatency == 2.0


# -- self events -----------------------------------------------------------------------


def test_self_events_reach_their_route_every_self_interval(observe_errors: Any) -> None:
    clock = Clock()
    config = {
        "hostname": "self.example",
        "stagger": 0,
        "self_events": True,
        "self_interval": 5,
        "self_route": "selfstats",
        # Polls at 0.5, 1.5, ...: never at the same time as the self source's.
        "sources": [ticking("work", 1.0, route="main", start_delay=0.5)],
        "outputs": [
            {"output": "duct.testing.RecordingOutput", "name": "main", "maxsize": 3,
             "overflow": "drop_newest"},
            {"output": "duct.testing.RecordingOutput", "name": "selfstats", "flush_interval": 0},
        ],
    }  # fmt: skip
    service = DuctService(config, reactor=clock)
    main, selfstats = service.outputs["main"], service.outputs["selfstats"]
    main.failing = True  # so main keeps 3 events and drops the rest
    service.startService()
    clock.advance(0)
    stats = next(s for s in service.sources if s.service == "duct")
    assert stats.interval == 5.0
    advance(clock, 20.0)
    observe_errors.take()
    assert stats.polls == 5  # at 0, 5, 10, 15, 20
    byTime: dict[float, dict[str, float]] = {}
    for event in selfstats.written:
        byTime.setdefault(event.time, {})[event.service] = event.metric
    assert sorted(byTime) == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert all(e.service.startswith("duct.") for e in selfstats.written)
    assert all(e.hostname == "self.example" and e.state == "ok" for e in selfstats.written)
    assert not [e for e in main.written if e.service.startswith("duct.")]
    assert byTime[0.0]["duct.source.work.polls"] == 0
    at15 = byTime[15.0]  # "work" has polled 15 times; main kept 3 and dropped the rest
    assert at15["duct.source.work.polls"] == 15
    assert at15["duct.output.main.events_received"] == 15
    assert at15["duct.output.main.dropped.overflow"] == 15 - 3
    assert at15["duct.output.main.buffer_events"] == 3
    assert at15["duct.total.source.polls"] == 15 + 4  # the self source's 4th poll counts too
    assert at15["duct.total.output.dropped.overflow"] == 12
    assert at15["duct.process.rss_bytes"] > 0
    assert "duct.output.selfstats.events_sent" in at15


def test_self_events_default_to_every_output_and_ten_seconds(observe_errors: Any) -> None:
    clock = Clock()
    config = {
        "stagger": 0,
        "self_events": True,
        "outputs": [
            {"output": "duct.testing.RecordingOutput", "name": "a", "flush_interval": 0},
            {"output": "duct.testing.RecordingOutput", "name": "b", "flush_interval": 0},
        ],
    }
    service = DuctService(config, reactor=clock)
    service.startService()
    clock.advance(0)  # sources start now, stagger 0
    advance(clock, 10.0)
    for output in service.outputs.values():
        polls = [e.metric for e in output.written if e.service == "duct.source.duct.polls"]
        assert polls == [1.0, 2.0]  # at 0 and 10 s


def test_a_hung_poll_is_not_a_finished_one() -> None:
    duct = FakeDuct()
    harness = SourceHarness(Ticking, {"service": "hang", "takes": 100.0}, duct)
    d: Deferred[Any] = harness.poll()
    duct.clock.advance(5)
    snap = snapshot(type("S", (), {"clock": duct.clock, "sources": [harness.source]})())
    assert "last_poll_duration" not in snap["sources"]["hang"] and not d.called


def test_a_damaged_disk_buffer_shows_in_the_snapshot(tmp_path: Any, clock: Clock) -> None:
    """Segments set aside at start are counted where an operator looks: /stats."""
    disk = {"type": "disk", "path": str(tmp_path / "buf"), "sync": "always"}
    outputs = [{"output": "duct.testing.RecordingOutput", "name": "rec", "buffer": disk}]
    first = build(clock, [], outputs)
    first.outputs["rec"].eventsReceived([Event("ok", f"s{i}", "", 1.0, 60.0) for i in range(5)])
    first.outputs["rec"].stop()
    segment = next((tmp_path / "buf").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damage a record in the middle
    segment.write_bytes(bytes(data))

    entry = snapshot(build(clock, [], outputs))["outputs"]["rec"]

    assert entry["buffer_corrupt_segments"] == 1 and entry["buffer_torn_tails"] == 0
    assert entry["dropped"] == {"corrupt": 1} and entry["buffer_events"] == 4
