"""The plugin API in duct.objects: Event, Source and Output, driven by a Clock."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent
from zope.interface.verify import verifyObject

import duct.objects
from duct.interfaces import IDuctOutput, IDuctSource
from duct.objects import Event, Output, Source
from duct.testing import FakeDuct, RecordingOutput, SourceHarness, configure

T0 = 1_700_000_000.123456


def fired(d: Deferred[Any]) -> Any:
    """The result of a Deferred that must have fired already."""
    results: list[Any] = []
    failures: list[Any] = []
    d.addCallbacks(results.append, failures.append)
    assert not failures, failures[0].getTraceback()
    assert results, "Deferred has not fired"
    return results[0]


def makeEvents(n: int, start: int = 0) -> list[Event]:
    return [
        Event("ok", f"svc.{i}", f"event {i}", float(i), 60.0, hostname="h", evtime=T0 + i)
        for i in range(start, start + n)
    ]


def services(events: list[Event]) -> list[str]:
    return [event.service for event in events]


# -- Event ------------------------------------------------------------------------


def test_event_positional_signature() -> None:
    def agg(a: float, b: float, c: float) -> float:
        return b - a

    event = Event(
        "ok", "svc", "desc", 1.5, 30.0, ["a", "b"], "h.example", agg, T0, {"k": "v"}, "log"
    )
    assert event.state == "ok"
    assert event.service == "svc"
    assert event.description == "desc"
    assert event.metric == 1.5
    assert event.ttl == 30.0
    assert event.tags == ["a", "b"]
    assert event.hostname == "h.example"
    assert event.aggregation is agg
    assert event.time == T0
    assert event.attributes == {"k": "v"}
    assert event.type == "log"


def test_event_keyword_signature_and_defaults() -> None:
    event = Event(
        state="warning",
        service="svc",
        description=None,
        metric=None,
        ttl=10,
        tags=["x"],
        hostname="h",
        evtime=T0,
        attributes={"a": "b"},
        type="log",
    )
    assert (event.state, event.service, event.metric, event.ttl) == ("warning", "svc", None, 10)
    assert event.tags == ["x"]
    assert event.attributes == {"a": "b"}
    assert event.type == "log"

    plain = Event("ok", "svc", "d", 1, 60, hostname="h")
    assert plain.tags == []
    assert plain.aggregation is None
    assert plain.attributes is None
    assert plain.type == "metric"
    # Each event gets its own tags list.
    other = Event("ok", "svc", "d", 1, 60, hostname="h")
    plain.tags.append("t")
    assert other.tags == []


def test_event_has_slots() -> None:
    event = Event("ok", "svc", "d", 1, 60, hostname="h")
    assert not hasattr(event, "__dict__")
    with pytest.raises(AttributeError):
        event.unknown = 1  # type: ignore[attr-defined]
    event.metric = 2.0  # declared fields stay writable
    assert event.metric == 2.0


def test_event_keeps_microseconds() -> None:
    event = Event("ok", "svc", "d", 1, 60, hostname="h", evtime=T0)
    assert event.time == T0
    assert event.asDict()["time"] == T0
    assert round(event.asDict()["time"] * 1e6) == 1_700_000_000_123_456
    copy = event.copyWithMetric(2.0)
    assert copy.time == T0
    assert round(copy.time * 1e6) == 1_700_000_000_123_456
    assert round(copy.asDict()["time"] * 1e6) == 1_700_000_000_123_456


def test_event_default_time_is_now() -> None:
    before = time.time()
    event = Event("ok", "svc", "d", 1, 60, hostname="h")
    after = time.time()
    assert before <= event.time <= after


@pytest.fixture
def countedFqdn(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count socket.getfqdn calls from an empty hostname cache; restore the cache after."""
    original = duct.objects.defaultHostname()
    calls: list[int] = []

    def fake() -> str:
        calls.append(1)
        return "counted.example"

    duct.objects.defaultHostname.cache_clear()
    monkeypatch.setattr(socket, "getfqdn", fake)
    try:
        yield calls
    finally:
        # Put the real name back in the cache without another DNS lookup.
        duct.objects.defaultHostname.cache_clear()
        monkeypatch.setattr(socket, "getfqdn", lambda: original)
        assert duct.objects.defaultHostname() == original
        monkeypatch.undo()


def test_default_hostname_is_looked_up_once(countedFqdn: list[int]) -> None:
    events = [Event("ok", f"svc{i}", None, i, 60) for i in range(1000)]
    assert len(countedFqdn) == 1
    assert {event.hostname for event in events} == {"counted.example"}
    # An explicit hostname never triggers the lookup either.
    Event("ok", "svc", None, 1, 60, hostname="given")
    assert len(countedFqdn) == 1


def test_eid_and_id() -> None:
    event = Event("ok", "disk.sda.reads", None, 1, 60, hostname="h1.example")
    assert event.eid() == "h1.example.disk.sda.reads"
    assert event.id() == event.eid()


def test_as_dict_has_riemann_fields() -> None:
    event = Event(
        "critical",
        "cpu",
        "busy",
        0.97,
        30.0,
        tags=["prod", "web"],
        hostname="h1.example",
        evtime=T0,
        attributes={"dc": "east"},
    )
    assert event.asDict() == {
        "host": "h1.example",
        "service": "cpu",
        "state": "critical",
        "metric": 0.97,
        "ttl": 30.0,
        "tags": ["prod", "web"],
        "attributes": {"dc": "east"},
        "description": "busy",
        "time": T0,
        "type": "metric",
    }
    data = event.asDict()
    data["tags"].append("changed")
    data["attributes"]["x"] = "y"
    assert event.tags == ["prod", "web"]
    assert event.attributes == {"dc": "east"}
    assert Event("ok", "s", None, None, 60, hostname="h").asDict()["attributes"] == {}


def test_copy_with_metric_keeps_fields_and_shares_nothing() -> None:
    def agg(a: float, b: float, c: float) -> float:
        return b - a

    event = Event(
        "warning",
        "net.eth0",
        "traffic",
        100.0,
        45.0,
        tags=["a"],
        hostname="h1.example",
        aggregation=agg,
        evtime=T0,
        attributes={"k": "v"},
        type="log",
    )
    copy = event.copyWithMetric(7.5)
    assert copy.metric == 7.5
    assert event.metric == 100.0
    for name in ("state", "service", "description", "ttl", "tags", "hostname", "time"):
        assert getattr(copy, name) == getattr(event, name), name
    assert copy.attributes == {"k": "v"}
    assert copy.type == "log"
    assert copy.aggregation is None
    assert copy.tags is not event.tags
    assert copy.attributes is not event.attributes
    copy.tags.append("new")
    assert copy.attributes is not None
    copy.attributes["k2"] = "v2"
    assert event.tags == ["a"]
    assert event.attributes == {"k": "v"}

    bare = Event("ok", "s", None, 1, 60, hostname="h").copyWithMetric(2)
    assert bare.attributes is None


# -- Source: configuration and events ----------------------------------------------


class Fixed(Source):
    """Returns whatever the test puts in ``result``; counts get calls."""

    result: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def get(self) -> Any:
        self.calls += 1
        result = self.result
        return result() if callable(result) else result


def test_source_config_reaches_events() -> None:
    harness = SourceHarness(
        Source,
        {
            "service": "app",
            "interval": 5,
            "ttl": 17,
            "tags": "a, b,,c ",
            "attributes": {"dc": "east"},
            "hostname": "given.example",
        },
    )
    source = harness.source
    assert source.service == "app"
    assert source.interval == 5.0
    harness.clock.advance(12.25)
    event = source.createEvent("ok", "fine", 3.0)
    assert event.service == "app"
    assert event.ttl == 17.0
    assert event.tags == ["a", "b", "c"]
    assert event.attributes == {"dc": "east"}
    assert event.hostname == "given.example"
    assert event.time == 12.25  # the source's clock
    assert event.type == "metric"
    assert (event.state, event.description, event.metric) == ("ok", "fine", 3.0)

    # Each event has its own copies of the source's tags and attributes.
    assert event.attributes is not None
    event.tags.append("x")
    event.attributes["y"] = "z"
    again = source.createEvent("ok", "fine", 3.0)
    assert again.tags == ["a", "b", "c"]
    assert again.attributes == {"dc": "east"}


def test_source_tags_as_list_and_duct_hostname_fallback() -> None:
    duct = FakeDuct(hostname="duct.example")
    harness = SourceHarness(Source, {"service": "app", "tags": ["x", "y"]}, duct=duct)
    event = harness.source.createEvent("ok", None, 1)
    assert event.tags == ["x", "y"]
    assert event.hostname == "duct.example"
    assert event.attributes is None
    assert harness.source.interval == 60.0
    assert harness.source.ttl == 60.0
    # A per-event hostname wins.
    assert harness.source.createEvent("ok", None, 1, hostname="other").hostname == "other"


def test_per_event_attributes_and_tags_merge_over_the_configured_ones() -> None:
    config = {"service": "web", "tags": ["prod"], "attributes": {"dc": "east", "tier": "1"}}
    source = SourceHarness(Source, config).source
    event = source.createEvent(
        "ok", None, 1, "hits", None, None, 5.0, attributes={"tier": "edge", "port": 8080},
        tags=["nginx", "prod"],
    )  # fmt: skip
    assert event.service == "web.hits" and event.time == 5.0  # positional arguments as before
    assert event.attributes == {"dc": "east", "tier": "edge", "port": "8080"}
    assert event.tags == ["prod", "nginx"]
    # The configured values are left as they were, for the next event.
    plain = source.createEvent("ok", None, 2)
    assert plain.attributes == {"dc": "east", "tier": "1"} and plain.tags == ["prod"]
    bare = SourceHarness(Source, {"service": "x"}).source
    assert bare.createEvent("ok", None, 1, attributes={"a": "b"}).attributes == {"a": "b"}


def test_source_built_directly_with_raw_config() -> None:
    duct = FakeDuct()
    source = Source({"service": "raw", "tags": "p, q", "ttl": 0}, lambda events: None, duct)
    assert source.tags == ["p", "q"]
    assert source.ttl == 0.0
    assert source.createEvent("ok", None, 1).hostname == "test.example"
    assert source.createEvent("ok", None, 1, evtime=T0).time == T0


def test_create_event_prefix_and_create_log() -> None:
    harness = SourceHarness(Source, {"service": "disk", "tags": "t", "attributes": {"a": "b"}})
    source = harness.source
    assert source.createEvent("ok", None, 1, prefix="sda.reads").service == "disk.sda.reads"
    log = source.createLog("syslog", "a line", evtime=T0)
    assert log.type == "log"
    assert log.service == "syslog"
    assert log.description == "a line"
    assert log.metric is None
    assert log.state is None
    assert log.time == T0
    assert log.tags == ["t"]
    assert log.attributes == {"a": "b"}
    assert log.hostname == "test.example"


# -- Source: what get() may return -------------------------------------------------


def fixedHarness(result: Any, **config: Any) -> SourceHarness:
    harness = SourceHarness(Fixed, {"service": "svc", "interval": 10, **config})
    harness.source.result = result
    return harness


def test_get_returning_an_event() -> None:
    harness = fixedHarness(None)
    source = harness.source
    source.result = lambda: source.createEvent("ok", None, 1)
    harness.start()
    assert services(harness.events) == ["svc"]
    harness.clock.advance(10)
    assert services(harness.events) == ["svc", "svc"]
    assert source.emitted == 2


def test_get_returning_a_list() -> None:
    harness = fixedHarness(None)
    source = harness.source
    source.result = lambda: [source.createEvent("ok", None, i, prefix=str(i)) for i in range(3)]
    harness.start()
    assert services(harness.events) == ["svc.0", "svc.1", "svc.2"]
    assert source.emitted == 3


def test_get_returning_none_or_empty_queues_nothing() -> None:
    batches: list[list[Event]] = []
    duct = FakeDuct()
    source = Fixed(configure(Fixed, {"service": "svc", "interval": 10}), batches.append, duct)
    source.result = None
    source.startTimer()
    source.result = list
    duct.clock.advance(10)
    assert batches == []
    assert source.polls == 2
    assert source.emitted == 0
    assert source.lastEventTime is None


def test_get_returning_a_deferred() -> None:
    pending: list[Deferred[Any]] = []

    def later() -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append(d)
        return d

    harness = fixedHarness(later)
    source = harness.source
    harness.start()
    assert harness.events == []
    harness.clock.advance(3)
    pending[0].callback([source.createEvent("ok", None, 1)])
    assert services(harness.events) == ["svc"]
    assert harness.events[0].time == 3.0


def test_get_as_coroutine_awaiting_a_deferred() -> None:
    class Async(Source):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.waiting: list[Deferred[float]] = []

        async def get(self) -> Any:
            d: Deferred[float] = Deferred()
            self.waiting.append(d)
            value = await d
            return [self.createEvent("ok", None, value)]

    harness = SourceHarness(Async, {"service": "async", "interval": 5})
    harness.start()
    source = harness.source
    assert isinstance(source, Async)
    assert len(source.waiting) == 1
    assert harness.events == []
    source.waiting[0].callback(42.0)
    assert [e.metric for e in harness.events] == [42.0]
    assert source.emitted == 1


# -- Source: timing ---------------------------------------------------------------


def deferredHarness(sync: bool) -> tuple[SourceHarness, list[Deferred[Any]]]:
    pending: list[Deferred[Any]] = []

    class Slow(Fixed):
        pass

    Slow.sync = sync

    def later() -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append(d)
        return d

    harness = SourceHarness(Slow, {"service": "slow", "interval": 10})
    harness.source.result = later
    return harness, pending


def test_sync_source_does_not_overlap_polls() -> None:
    harness, pending = deferredHarness(sync=True)
    source = harness.source
    assert isinstance(source, Fixed)
    harness.start()
    assert source.calls == 1
    harness.clock.advance(10)
    harness.clock.advance(10)
    harness.clock.advance(5)
    assert source.calls == 1  # still waiting for the first poll
    assert source.running

    pending[0].callback(None)  # finishes at t=25
    assert not source.running
    assert source.lastPollDuration == 25.0
    assert source.calls == 1
    harness.clock.advance(5)  # the timer resumes on its 10 s grid: t=30
    assert source.calls == 2
    pending[1].callback(None)
    harness.clock.advance(10)
    assert source.calls == 3


def test_async_source_overlaps_polls() -> None:
    harness, pending = deferredHarness(sync=False)
    source = harness.source
    assert isinstance(source, Fixed)
    harness.start()
    harness.clock.advance(10)
    harness.clock.advance(10)
    assert source.calls == 3
    assert len(pending) == 3
    for d in pending:
        d.callback(None)
    assert source.polls == 3
    assert source.stopTimer().called


def test_failing_get_is_logged_counted_and_polling_continues(
    logged: list[dict[str, Any]], observe_errors: Any
) -> None:
    class Broken(Fixed):
        def get(self) -> Any:
            self.calls += 1
            raise RuntimeError("sensor gone")

    harness = SourceHarness(Broken, {"service": "broken.svc", "interval": 10})
    source = harness.source
    assert isinstance(source, Broken)
    harness.start()
    assert source.errors == 1
    harness.clock.advance(10)
    assert source.calls == 2
    assert source.errors == 2
    assert source.polls == 2
    assert source.running is False
    assert source.t.running

    # One line at error level, with the traceback; the second failure, 10 s
    # later, is counted and held back.
    [first] = observe_errors.take()
    assert first["log_level"] == LogLevel.error
    assert first["source"] == "broken.svc" and first["errors"] == 1
    assert first["log_failure"].check(RuntimeError)
    assert "sensor gone" in formatEvent(first)

    for _ in range(6):  # polls 3 to 8, at 20 s to 70 s: the limit lets one line through
        harness.clock.advance(10)
    assert source.errors == 8 and source.t.running
    [later] = observe_errors.take()
    assert "log_failure" not in later  # the traceback was shown once
    assert later["log_level"] == LogLevel.error
    text = formatEvent(later)
    assert "broken.svc" in text and "sensor gone" in text and "7 failures in all" in text
    assert "5 similar lines suppressed" in text
    assert [e for e in logged if e.get("log_failure") is not None] == [first]


def test_failing_deferred_is_logged_and_counted(observe_errors: Any) -> None:
    harness, pending = deferredHarness(sync=True)
    source = harness.source
    harness.start()
    pending[0].errback(ConnectionError("refused"))
    assert source.errors == 1
    errors = observe_errors.take()
    assert [e["source"] for e in errors] == ["slow"]
    harness.clock.advance(10)
    assert len(pending) == 2  # the timer survived the failure


def test_stop_timer_waits_for_the_poll_in_flight() -> None:
    harness, pending = deferredHarness(sync=True)
    source = harness.source
    assert isinstance(source, Fixed)
    harness.start()
    stopped = harness.stop()
    assert not stopped.called
    harness.clock.advance(30)
    assert source.calls == 1  # stopped: no more polls
    pending[0].callback([source.createEvent("ok", None, 1)])
    assert stopped.called
    assert services(harness.events) == ["slow"]
    harness.clock.advance(30)
    assert source.calls == 1


def test_stop_timer_waits_for_overlapping_polls() -> None:
    harness, pending = deferredHarness(sync=False)
    harness.start()
    harness.clock.advance(10)
    stopped = harness.stop()
    pending[1].callback(None)
    assert not stopped.called
    pending[0].callback(None)
    assert stopped.called


def test_stop_timer_without_poll_in_flight_fires_at_once() -> None:
    harness = fixedHarness(None)
    harness.start()
    stopped = harness.stop()
    assert stopped.called
    harness.clock.advance(100)
    assert harness.source.polls == 1
    # Stopping a source that never started also fires at once.
    assert fixedHarness(None).stop().called


def test_tick_skipped_while_outputs_are_full() -> None:
    harness = fixedHarness(None)
    source = harness.source
    assert isinstance(source, Fixed)
    harness.duct.accept = False
    harness.start()
    harness.clock.advance(10)
    assert source.calls == 0
    assert source.polls == 0
    assert source.skipped == 2
    harness.duct.accept = True
    harness.clock.advance(10)
    assert source.calls == 1
    assert source.skipped == 2


def test_poll_counters() -> None:
    harness, pending = deferredHarness(sync=True)
    source = harness.source
    assert source.polls == 0
    assert source.lastPollDuration is None
    assert source.lastEventTime is None
    harness.clock.advance(100)
    harness.start()
    assert source.polls == 1
    harness.clock.advance(2.5)
    pending[0].callback([source.createEvent("ok", None, i) for i in range(3)])
    assert source.emitted == 3
    assert source.lastEventTime == 102.5
    assert source.lastPollDuration == 2.5
    harness.clock.advance(7.5)
    assert source.polls == 2
    pending[1].callback(source.createEvent("ok", None, 9))
    assert source.emitted == 4
    assert source.lastEventTime == 110.0
    assert source.lastPollDuration == 0.0
    assert source.errors == 0
    assert source.skipped == 0


def test_debug_source_logs_each_event(logged: list[dict[str, Any]]) -> None:
    harness = fixedHarness(None, debug=True)
    source = harness.source
    source.result = lambda: source.createEvent("ok", None, 1)
    harness.start()
    lines = [e for e in logged if e.get("event") is not None and e.get("source") == "svc"]
    assert len(lines) == 1
    assert lines[0]["log_level"] == LogLevel.info


def test_interfaces_are_provided() -> None:
    harness = fixedHarness(None)
    assert verifyObject(IDuctSource, harness.source)
    output = RecordingOutput(configure(RecordingOutput, {}), FakeDuct())
    assert verifyObject(IDuctOutput, output)
    assert verifyObject(IDuctOutput, Output(configure(Output, {}), FakeDuct()))


# -- Output: the writer --------------------------------------------------------------


class Attempts(RecordingOutput):
    """A RecordingOutput that notes the clock time of every write attempt."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.attempts: list[float] = []

    def writeBatch(self, events: list[Event]) -> Any:
        self.attempts.append(self.clock.seconds())
        return super().writeBatch(events)


def makeOutput(cls: type[Output] = Attempts, **config: Any) -> tuple[Any, Clock]:
    duct = FakeDuct()
    return cls(configure(cls, config), duct), duct.clock


def test_partial_batch_waits_flush_interval() -> None:
    output, clock = makeOutput(batch_size=10, flush_interval=2.0)
    output.eventsReceived(makeEvents(3))
    clock.advance(1.5)
    output.eventsReceived(makeEvents(2, start=3))  # does not restart the wait
    clock.advance(0.25)
    assert output.written == []
    clock.advance(0.25)
    assert output.attempts == [2.0]
    assert services(output.written) == [f"svc.{i}" for i in range(5)]
    assert output.sent == 5
    assert output.received == 5
    assert output.buffer.depth == 0


def test_full_batch_goes_at_once_and_batches_never_exceed_batch_size() -> None:
    output, clock = makeOutput(batch_size=10, flush_interval=5.0)
    output.eventsReceived(makeEvents(25))
    clock.advance(0)
    assert [len(b) for b in output.batches] == [10, 10]
    assert output.attempts == [0.0, 0.0]
    clock.advance(4.5)
    assert len(output.batches) == 2  # the remainder waits for the flush interval
    clock.advance(0.5)
    assert [len(b) for b in output.batches] == [10, 10, 5]
    assert services(output.written) == [f"svc.{i}" for i in range(25)]

    output.eventsReceived(makeEvents(7, start=25))
    output.eventsReceived(makeEvents(7, start=32))  # crosses batch_size: goes now
    clock.advance(0)
    assert all(len(b) <= 10 for b in output.batches)
    assert [len(b) for b in output.batches] == [10, 10, 5, 10]
    clock.advance(5)
    assert [len(b) for b in output.batches] == [10, 10, 5, 10, 4]
    assert services(output.written) == [f"svc.{i}" for i in range(39)]


def test_failed_write_retries_with_backoff(logged: list[dict[str, Any]]) -> None:
    output, clock = makeOutput(
        batch_size=4, flush_interval=0, retry_initial=1.0, retry_max=4.0, maxsize=1000
    )
    output.failing = True
    output.eventsReceived(makeEvents(6))
    clock.advance(0)
    assert output.attempts == [0.0]
    assert output.failures == 1
    # Requeued at the head, in order, nothing lost.
    assert services(output.buffer.waiting()) == [f"svc.{i}" for i in range(6)]
    assert output.buffer.depth == 6

    expected = [0.0]
    for when in (1.0, 3.0, 7.0, 11.0, 15.0):  # 1, 2, 4, then capped at 4
        clock.advance(when - clock.seconds() - 0.25)
        assert output.attempts == expected, f"retried early, before {when}"
        # New events (even a full batch) do not bring the retry forward.
        start = 6 + 4 * (len(expected) - 1)
        output.eventsReceived(makeEvents(4, start=start))
        clock.advance(0)
        assert output.attempts == expected
        clock.advance(0.25)
        expected.append(when)
        assert output.attempts == expected
    assert output.failures == 6
    assert output.written == []
    total = 6 + 4 * 5
    assert output.buffer.depth == total

    output.failing = False
    clock.advance(4.0)
    # Recovered: everything arrives exactly once, in order, in batches of 4 at most.
    assert services(output.written) == [f"svc.{i}" for i in range(total)]
    assert all(len(batch) <= 4 for batch in output.batches)
    assert output.buffer.depth == 0
    assert output.sent == total

    warnings = [e for e in logged if "failed to write" in e.get("log_format", "")]
    assert len(warnings) == 6
    assert {e["log_level"] for e in warnings} == {LogLevel.warn}
    assert [e["delay"] for e in warnings] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert all(e["output"] == "Attempts" for e in warnings)
    assert "destination unavailable" in warnings[0]["error"]

    # After a success the backoff starts again from retry_initial.
    output.failing = True
    output.eventsReceived(makeEvents(1, start=total))
    clock.advance(0)
    failedAt = clock.seconds()
    output.failing = False
    clock.advance(0.75)
    assert output.sent == total
    clock.advance(0.25)
    assert output.attempts[-1] == failedAt + 1.0
    assert output.sent == total + 1


def test_failed_write_keeps_order_before_new_events() -> None:
    output, clock = makeOutput(batch_size=3, flush_interval=1.0, retry_initial=2.0)
    output.failing = True
    output.eventsReceived(makeEvents(2))
    clock.advance(1.0)
    assert output.failures == 1
    output.eventsReceived(makeEvents(2, start=2))
    output.failing = False
    clock.advance(2.0)
    clock.advance(1.0)
    assert services(output.written) == ["svc.0", "svc.1", "svc.2", "svc.3"]
    assert [len(b) for b in output.batches] == [3, 1]


def test_flush_fires_when_buffer_is_empty() -> None:
    output, clock = makeOutput(batch_size=2, flush_interval=60.0, retry_initial=1.0)
    assert fired(output.flush()) is None  # nothing buffered: at once

    output.eventsReceived(makeEvents(5))
    clock.advance(0)  # two full batches go; one event waits for the interval
    assert output.buffer.depth == 1
    done = output.flush()
    assert not done.called
    clock.advance(0)
    assert done.called
    assert services(output.written) == [f"svc.{i}" for i in range(5)]

    # While the destination is down, flush waits for the recovery.
    output.failing = True
    output.eventsReceived(makeEvents(3, start=5))
    done = output.flush()
    clock.advance(0)
    assert not done.called
    output.failing = False
    clock.advance(1.0)
    assert done.called
    assert output.buffer.depth == 0
    assert services(output.written) == [f"svc.{i}" for i in range(8)]


def test_stop_stops_further_writes() -> None:
    output, clock = makeOutput(batch_size=10, flush_interval=1.0, retry_initial=1.0)
    output.eventsReceived(makeEvents(3))
    output.stop()
    clock.advance(5)
    output.eventsReceived(makeEvents(20, start=3))
    clock.advance(5)
    assert output.written == []
    assert output.buffer.depth == 23

    # A pending retry is cancelled too.
    output, clock = makeOutput(batch_size=10, flush_interval=0, retry_initial=1.0)
    output.failing = True
    output.eventsReceived(makeEvents(3))
    clock.advance(0)
    assert output.attempts == [0.0]
    output.failing = False
    output.stop()
    clock.advance(10)
    assert output.attempts == [0.0]
    assert output.buffer.depth == 3


def test_async_write_batch() -> None:
    class AsyncOutput(Output):
        def __init__(self, config: dict[str, Any], duct: Any) -> None:
            super().__init__(config, duct)
            self.waiting: list[Deferred[None]] = []
            self.written: list[Event] = []

        async def writeBatch(self, events: list[Event]) -> None:
            d: Deferred[None] = Deferred()
            self.waiting.append(d)
            await d
            self.written.extend(events)

    output, clock = makeOutput(AsyncOutput, batch_size=2, flush_interval=0)
    output.eventsReceived(makeEvents(3))
    clock.advance(0)
    assert len(output.waiting) == 1
    assert output.buffer.depth == 3  # in flight until the write completes
    output.eventsReceived(makeEvents(1, start=3))
    clock.advance(0)
    assert len(output.waiting) == 1  # one write at a time
    output.waiting[0].callback(None)
    clock.advance(0)
    assert len(output.waiting) == 2
    output.waiting[1].callback(None)
    assert services(output.written) == [f"svc.{i}" for i in range(4)]
    assert output.sent == 4
    assert output.buffer.depth == 0


def test_async_write_batch_failure_is_retried(logged: list[dict[str, Any]]) -> None:
    class Flaky(Output):
        def __init__(self, config: dict[str, Any], duct: Any) -> None:
            super().__init__(config, duct)
            self.calls = 0
            self.written: list[Event] = []

        async def writeBatch(self, events: list[Event]) -> None:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionResetError("reset")
            self.written.extend(events)

    output, clock = makeOutput(Flaky, flush_interval=0, retry_initial=0.5)
    output.eventsReceived(makeEvents(2))
    clock.advance(0)
    assert output.written == []
    clock.advance(0.5)
    assert services(output.written) == ["svc.0", "svc.1"]
    assert [e["log_level"] for e in logged if "failed to write" in e.get("log_format", "")] == [
        LogLevel.warn
    ]


def test_old_style_output_overriding_events_received() -> None:
    class OldStyle(Output):
        def __init__(self, config: dict[str, Any], duct: Any) -> None:
            super().__init__(config, duct)
            self.got: list[list[Event]] = []

        def eventsReceived(self, events: list[Event]) -> None:  # type: ignore[override]
            self.got.append(events)

    output, clock = makeOutput(OldStyle)
    events = makeEvents(3)
    output.eventsReceived(events)
    clock.advance(10)
    assert output.got == [events]
    assert fired(output.flush()) is None


def test_output_without_writer_keeps_events_buffered() -> None:
    output, clock = makeOutput(Output, flush_interval=0)
    assert output.eventsReceived(makeEvents(3)) == 3
    clock.advance(10)
    assert len(output.buffer) == 3  # left for the subclass to drain itself
    assert fired(output.flush()) is None
