"""DuctService built from dict configs, driven entirely by a task.Clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, formatEvent

from duct.aggregators import Counter
from duct.objects import Event, Source
from duct.options import Option
from duct.service import DuctService
from duct.testing import RecordingOutput

# The config loader imports plugin classes by dotted path.  tests/ is not a
# package, so pytest imports this file as the top-level module "test_service";
# naming classes through __name__ reaches this very module object (and so the
# INSTANCES list below) under any import mode.
HERE = __name__

INSTANCES: list[Any] = []


class CountingSource(Source):
    """Emits one plain event per poll (and a counter sample with ``counter``).

    With ``emit_polls`` set, it goes silent (get returns None) after that
    many polls.  Every instance is kept in INSTANCES, in order of creation.
    """

    options = (
        Option("emit_polls", "integer", None, "polls that emit; None: all of them"),
        Option("counter", "number", None, "add a Counter sample growing by this per poll"),
    )

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pollTimes: list[float] = []
        INSTANCES.append(self)

    def get(self) -> Any:
        self.pollTimes.append(self.clock.seconds())
        limit = self.config.get("emit_polls")
        if limit is not None and self.polls > limit:
            return None
        events = [self.createEvent("ok", None, float(self.polls), prefix="plain")]
        step = self.config.get("counter")
        if step is not None:
            events.append(
                self.createEvent("ok", None, step * self.polls, prefix="rate", aggregation=Counter)
            )
        return events


class PendingSource(Source):
    """Each poll returns a Deferred that the test fires by hand."""

    options = ()

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: list[Deferred[Any]] = []
        INSTANCES.append(self)

    def get(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


class HangingSource(PendingSource):
    """Its polls never overlap: a poll that hangs holds the timer."""

    sync = True


class AsyncOutput(RecordingOutput):
    """An output whose lifecycle is ``async def``; each step takes clock time."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.lifecycle: list[tuple[str, float]] = []

    async def createClient(self) -> None:
        self.lifecycle.append(("connecting", self.clock.seconds()))
        await deferLater(self.clock, 1.0, lambda: None)
        self.lifecycle.append(("connected", self.clock.seconds()))

    async def stop(self) -> None:
        self.lifecycle.append(("closing", self.clock.seconds()))
        await deferLater(self.clock, 2.0, lambda: None)
        RecordingOutput.stop(self)
        self.lifecycle.append(("closed", self.clock.seconds()))


class BrokenClientOutput(RecordingOutput):
    """An output that cannot connect."""

    async def createClient(self) -> None:
        raise ConnectionRefusedError("no route to the destination")


class ReopeningOutput(RecordingOutput):
    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.reopened = 0

    def reopen(self) -> None:
        self.reopened += 1


@pytest.fixture(autouse=True)
def instances() -> Iterator[list[Any]]:
    INSTANCES.clear()
    yield INSTANCES
    INSTANCES.clear()


def recording(name: str = "rec", **config: Any) -> dict[str, Any]:
    return {"output": "duct.testing.RecordingOutput", "name": name, **config}


def counting(service: str, **config: Any) -> dict[str, Any]:
    return {"source": f"{HERE}.CountingSource", "service": service, "interval": 1, **config}


def makeService(
    clock: Clock,
    sources: list[dict[str, Any]],
    outputs: list[dict[str, Any]] | None = None,
    **settings: Any,
) -> DuctService:
    config = {
        "hostname": "test.example",
        "stagger": 0,
        "sources": sources,
        "outputs": outputs if outputs is not None else [recording()],
        **settings,
    }
    return DuctService(config, reactor=clock)


def byService(events: list[Event]) -> list[tuple[str, float | None, str | None]]:
    return [(e.service, e.metric, e.state) for e in events]


def warnings(logged: list[dict[str, Any]], text: str) -> list[str]:
    lines = [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.warn]
    return [line for line in lines if text in line]


def run(clock: Clock, seconds: float) -> None:
    """Advance ``seconds``, running each delayed call at its own time.

    ``Clock.advance(5)`` moves time first and then runs what was due, so
    every call would see the final time; this stops at each call instead.
    """
    target = clock.seconds() + seconds
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= target]
        if not due:
            break
        clock.rightNow = max(clock.seconds(), min(due))
        clock.advance(0)
    clock.rightNow = target
    clock.advance(0)


def stop(service: DuctService) -> tuple[Deferred[None], list[Any]]:
    fired: list[Any] = []
    d = service.stopService()
    d.addBoth(fired.append)
    return d, fired


# -- building --------------------------------------------------------------------------


def test_builds_sources_and_outputs_from_a_dict(clock: Clock) -> None:
    service = makeService(clock, [counting("a"), counting("b", route="rec")])
    assert list(service.outputs) == ["rec"]
    assert isinstance(service.outputs["rec"], RecordingOutput)
    assert [s.service for s in service.sources] == ["a", "b"]
    assert all(isinstance(s, CountingSource) for s in service.sources)
    assert service.sources[0].hostname == "test.example"
    assert service.sources[0].clock is clock
    assert set(service.pipeline.routes) == set(service.sources)
    assert service.hostname == "test.example"


# -- staggered starts ----------------------------------------------------------------------


def test_sources_start_staggered(clock: Clock) -> None:
    service = makeService(clock, [counting(n, interval=10) for n in ("a", "b", "c")], stagger=0.5)
    service.startService()
    a, b, c = service.sources
    assert all(s.pollTimes == [] for s in (a, b, c))
    run(clock, 0)
    assert (a.pollTimes, b.pollTimes, c.pollTimes) == ([0.0], [], [])
    run(clock, 0.49)
    assert b.pollTimes == []
    run(clock, 0.01)
    assert (a.pollTimes, b.pollTimes, c.pollTimes) == ([0.0], [0.5], [])
    run(clock, 0.5)
    assert (a.pollTimes, b.pollTimes, c.pollTimes) == ([0.0], [0.5], [1.0])
    run(clock, 10)
    assert (a.pollTimes, b.pollTimes, c.pollTimes) == ([0.0, 10.0], [0.5, 10.5], [1.0, 11.0])
    service.stopService()


def test_start_delay_overrides_the_stagger(clock: Clock) -> None:
    sources = [counting("a", interval=10), counting("b", interval=10, start_delay=3)]
    sources.append(counting("c", interval=10))
    service = makeService(clock, sources, stagger=0.5)
    service.startService()
    a, b, c = service.sources
    run(clock, 2.9)
    assert (a.pollTimes, b.pollTimes, c.pollTimes) == ([0.0], [], [1.0])
    run(clock, 0.1)
    assert b.pollTimes == [3.0]


def test_start_delay_zero_starts_at_once(clock: Clock) -> None:
    sources = [counting("a", interval=10), counting("b", interval=10, start_delay=0)]
    service = makeService(clock, sources, stagger=5)
    service.startService()
    run(clock, 0)
    assert [s.pollTimes for s in service.sources] == [[0.0], [0.0]]


def test_default_stagger(clock: Clock) -> None:
    config = {
        "hostname": "test.example",
        "sources": [counting(n, interval=10) for n in ("a", "b")],
        "outputs": [recording()],
    }
    service = DuctService(config, reactor=clock)
    service.startService()
    run(clock, 1)
    assert [s.pollTimes for s in service.sources] == [[0.0], [pytest.approx(0.2)]]


# -- events through the pipeline ----------------------------------------------------------


def test_polled_events_reach_the_output_after_flush_interval(clock: Clock) -> None:
    source = counting("svc", counter=100, critical={"svc.rate": "> 50"})
    service = makeService(clock, [source], [recording(flush_interval=2.5)])
    service.startService()
    output = service.outputs["rec"]
    run(clock, 2.4)  # polls at 0, 1 and 2
    assert output.written == []
    assert output.buffer.depth == 5
    run(clock, 0.1)
    # The first counter sample emits nothing; the next ones are rates of
    # 100/s, which the critical rule (applied after aggregation) marks.
    assert byService(output.written) == [
        ("svc.plain", 1.0, "ok"),
        ("svc.plain", 2.0, "ok"),
        ("svc.rate", 100.0, "critical"),
        ("svc.plain", 3.0, "ok"),
        ("svc.rate", 100.0, "critical"),
    ]
    assert all(e.hostname == "test.example" and e.aggregation is None for e in output.written)
    assert len(output.batches) == 1


def test_routes_from_config(clock: Clock) -> None:
    service = makeService(
        clock,
        [counting("one", route="out1"), counting("both", route=["out1", "out2"]), counting("all")],
        [
            recording("out1", flush_interval=0),
            recording("out2", flush_interval=0),
            recording("out3", flush_interval=0),
        ],
    )
    service.startService()
    run(clock, 0)
    got = {name: sorted({e.service for e in out.written}) for name, out in service.outputs.items()}
    assert got == {
        "out1": ["all.plain", "both.plain", "one.plain"],
        "out2": ["all.plain", "both.plain"],
        "out3": ["all.plain"],
    }


# -- back-pressure -----------------------------------------------------------------------------


def test_poll_skipped_while_blocking_output_full(clock: Clock) -> None:
    service = makeService(clock, [counting("svc")], [recording(maxsize=2, flush_interval=9.75)])
    service.startService()
    [source] = service.sources
    output = service.outputs["rec"]
    run(clock, 1.5)  # polls at 0 and 1 fill the buffer
    assert (source.polls, source.skipped, output.buffer.depth) == (2, 0, 2)
    assert not service.accepting(source)
    run(clock, 8)  # ticks at 2..9 are skipped: nothing is polled, nothing dropped
    assert (source.polls, source.skipped) == (2, 8)
    assert source.pollTimes == [0.0, 1.0]
    assert sum(output.buffer.drops.values()) == 0
    run(clock, 0.25)  # the flush at 9.75 drains the buffer
    assert [e.metric for e in output.written] == [1.0, 2.0]
    assert service.accepting(source)
    run(clock, 0.25)  # polling resumes at 10
    assert (source.polls, source.skipped) == (3, 8)
    assert source.pollTimes == [0.0, 1.0, 10.0]


def test_drop_oldest_output_never_holds_polls_back(clock: Clock) -> None:
    output = recording(maxsize=2, flush_interval=100, overflow="drop_oldest")
    service = makeService(clock, [counting("svc")], [output])
    service.startService()
    run(clock, 5.5)
    [source] = service.sources
    assert (source.polls, source.skipped) == (6, 0)
    assert service.outputs["rec"].buffer.drops["overflow"] == 4


# -- the watchdog ------------------------------------------------------------------------------


def test_watchdog_recreates_a_silent_source(
    clock: Clock, logged: list[dict[str, Any]], instances: list[Any]
) -> None:
    service = makeService(
        clock, [counting("svc", watchdog=True, emit_polls=3)], [recording(flush_interval=0)]
    )
    service.startService()
    [old] = service.sources
    output = service.outputs["rec"]
    run(clock, 11.5)  # emitted at 0, 1 and 2; silent since
    assert old.lastEventTime == 2.0
    assert service.sources == [old]
    assert instances == [old]
    assert warnings(logged, "recreating") == []

    run(clock, 0.5)  # t=12: ten intervals of silence
    assert len(instances) == 2
    new = instances[1]
    assert new is not old
    assert service.sources == [new]
    assert new.config == old.config
    assert not old.t.running
    assert old not in service.pipeline.routes
    assert new in service.pipeline.routes
    [line] = warnings(logged, "recreating")
    assert "svc" in line and "10s" in line

    # The replacement really runs: its timer polls it, and what it emits
    # reaches the output; the old one is never polled again.
    oldPolls = old.polls
    assert new.pollTimes == [12.0]
    run(clock, 3)
    assert new.pollTimes == [12.0, 13.0, 14.0, 15.0]
    assert old.polls == oldPolls
    times = [e.time for e in output.written]
    assert times[-3:] == [12.0, 13.0, 14.0]
    assert new.emitted == 3


def test_watchdog_leaves_a_busy_source_alone(
    clock: Clock, logged: list[dict[str, Any]], instances: list[Any]
) -> None:
    service = makeService(clock, [counting("svc", watchdog=True)], [recording(flush_interval=0)])
    service.startService()
    [source] = service.sources
    run(clock, 30)
    assert service.sources == [source]
    assert instances == [source]
    assert source.polls == 31
    assert source.t.running
    assert warnings(logged, "recreating") == []


def test_watchdog_only_watches_sources_that_ask(clock: Clock, instances: list[Any]) -> None:
    sources = [counting("quiet", emit_polls=0), counting("watched", watchdog=True)]
    service = makeService(clock, sources)
    service.startService()
    quiet = service.sources[0]
    run(clock, 30)
    assert service.sources[0] is quiet
    assert len(instances) == 2


def test_watchdog_recreates_a_source_whose_poll_hangs(clock: Clock, instances: list[Any]) -> None:
    config = {"source": f"{HERE}.HangingSource", "service": "hang", "interval": 1}
    service = makeService(clock, [{**config, "watchdog": True}])
    service.startService()
    [old] = service.sources
    run(clock, 9.5)
    assert len(old.pending) == 1  # sync: the hung poll holds the timer
    run(clock, 0.5)
    assert len(instances) == 2
    assert service.sources == [instances[1]]
    assert not old.t.running


# -- stopping --------------------------------------------------------------------------------


def test_stop_stops_sources_and_flushes_outputs(clock: Clock) -> None:
    service = makeService(clock, [counting("svc")], [recording(flush_interval=100)])
    service.startService()
    [source] = service.sources
    output = service.outputs["rec"]
    run(clock, 2.5)
    assert output.written == []

    writtenWhenStopped: list[int] = []
    d = service.stopService()
    d.addCallback(lambda _: writtenWhenStopped.append(len(output.written)))
    run(clock, 0)
    assert writtenWhenStopped == [3]
    assert [e.metric for e in output.written] == [1.0, 2.0, 3.0]
    assert not source.t.running

    run(clock, 100)
    assert source.polls == 3
    assert len(output.written) == 3
    assert clock.getDelayedCalls() == []


def test_stop_cancels_pending_staggered_starts(clock: Clock) -> None:
    service = makeService(clock, [counting("a"), counting("b")], stagger=5)
    service.startService()
    run(clock, 1)
    d, fired = stop(service)
    run(clock, 0)
    assert fired == [None]
    run(clock, 20)
    assert [s.polls for s in service.sources] == [2, 0]  # polled at 0 and 1
    assert clock.getDelayedCalls() == []


def test_stop_gives_up_on_a_failing_output_after_shutdown_timeout(
    clock: Clock, logged: list[dict[str, Any]]
) -> None:
    service = makeService(
        clock, [counting("svc")], [recording("dead", flush_interval=100)], shutdown_timeout=5
    )
    service.startService()
    output = service.outputs["dead"]
    output.failing = True
    run(clock, 3.5)  # four events buffered
    d, fired = stop(service)
    run(clock, 4.9)
    assert fired == []
    assert output.failures >= 1
    run(clock, 0.1)
    assert fired == [None]
    [line] = warnings(logged, "undelivered at shutdown")
    assert "dead" in line and "4 events" in line
    assert output.buffer.depth == 4
    failures = output.failures
    run(clock, 100)
    assert output.failures == failures  # no retries after the stop
    assert clock.getDelayedCalls() == []


def test_stop_waits_for_an_in_flight_poll(clock: Clock, instances: list[Any]) -> None:
    config = {"source": f"{HERE}.PendingSource", "service": "slow", "interval": 10}
    service = makeService(clock, [config], [recording(flush_interval=100)])
    service.startService()
    run(clock, 0)
    [source] = service.sources
    [pending] = source.pending
    d, fired = stop(service)
    run(clock, 1)
    assert fired == []
    slow = Event("ok", "slow", None, 42.0, 60.0, hostname="test.example", evtime=1.0)
    pending.callback([slow])
    run(clock, 0)
    assert fired == [None]
    assert service.outputs["rec"].written == [slow]


def test_stop_does_not_wait_forever_for_a_hung_poll(
    clock: Clock, logged: list[dict[str, Any]]
) -> None:
    config = {"source": f"{HERE}.PendingSource", "service": "hung", "interval": 10}
    service = makeService(
        clock, [config, counting("svc")], [recording(flush_interval=100)], shutdown_timeout=5
    )
    service.startService()
    run(clock, 1.5)
    d, fired = stop(service)
    run(clock, 4.9)
    assert fired == []
    run(clock, 0.1)
    assert fired == [None]
    # The other source's events were still delivered.
    assert [e.service for e in service.outputs["rec"].written] == ["svc.plain", "svc.plain"]
    assert any("hung" in line for line in warnings(logged, "shutdown"))


# -- async lifecycle ---------------------------------------------------------------------------


def test_async_create_client_and_stop_are_awaited(clock: Clock) -> None:
    output = {"output": f"{HERE}.AsyncOutput", "name": "async", "flush_interval": 100}
    service = makeService(clock, [counting("svc", interval=10)], [output])
    service.startService()
    out = service.outputs["async"]
    assert out.lifecycle == [("connecting", 0.0)]
    run(clock, 1)
    assert out.lifecycle == [("connecting", 0.0), ("connected", 1.0)]

    d, fired = stop(service)
    run(clock, 0)
    assert [e.service for e in out.written] == ["svc.plain"]
    assert out.lifecycle[-1] == ("closing", 1.0)
    assert fired == []  # the coroutine is still running
    run(clock, 2)
    assert out.lifecycle[-1] == ("closed", 3.0)
    assert fired == [None]


def test_failing_create_client_is_logged_and_service_keeps_running(
    clock: Clock, observe_errors: Any
) -> None:
    outputs = [
        {"output": f"{HERE}.BrokenClientOutput", "name": "broken", "flush_interval": 0},
        recording("fine", flush_interval=0),
    ]
    service = makeService(clock, [counting("svc")], outputs)
    service.startService()
    errors = observe_errors.take()
    assert len(errors) == 1
    text = formatEvent(errors[0])
    assert "broken" in text and "failed to start" in text
    assert errors[0]["log_failure"].check(ConnectionRefusedError)

    run(clock, 2)
    assert service.running
    assert [s.polls for s in service.sources] == [3]
    assert len(service.outputs["fine"].written) == 3
    d, fired = stop(service)
    run(clock, 0)
    assert fired == [None]
    assert observe_errors.take() == []


# -- reopen ------------------------------------------------------------------------------------


def test_reopen_calls_outputs_that_have_it(clock: Clock) -> None:
    outputs = [{"output": f"{HERE}.ReopeningOutput", "name": "file"}, recording("plain")]
    service = makeService(clock, [counting("svc")], outputs)
    service.reopen()
    service.reopen()
    assert service.outputs["file"].reopened == 2
    assert not hasattr(service.outputs["plain"], "reopen")
