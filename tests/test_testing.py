"""duct.testing: the helpers plugin authors test with."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel

from duct.objects import Event, Output, Source
from duct.testing import FakeDuct, RecordingOutput, SourceHarness, configure


def results(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addCallback(out.append)
    return out


class Counting(Source):
    """Each poll emits ``n`` events whose metric is the poll number."""

    n = 2

    def get(self) -> list[Event]:
        return [self.createEvent("ok", None, self.polls, prefix=str(i)) for i in range(self.n)]


class Pending(Source):
    """Each poll waits for a Deferred the test fires."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting: list[Deferred[Any]] = []

    def get(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append(d)
        return d


# -- SourceHarness ---------------------------------------------------------------


def test_harness_poll_returns_that_polls_events() -> None:
    harness = SourceHarness(Counting, {"service": "c", "interval": 5})
    first = results(harness.poll())
    assert len(first) == 1
    assert [(e.service, e.metric) for e in first[0]] == [("c.0", 1), ("c.1", 1)]
    second = results(harness.poll())
    assert [(e.service, e.metric) for e in second[0]] == [("c.0", 2), ("c.1", 2)]
    assert len(harness.events) == 4  # the harness keeps everything


def test_harness_poll_excludes_events_of_other_polls() -> None:
    harness = SourceHarness(Pending, {"service": "p", "interval": 5})
    source = harness.source
    assert isinstance(source, Pending)
    harness.start()  # the timer's poll is in flight
    mine = results(harness.poll())
    harness.clock.advance(5)  # another timer poll
    assert len(source.waiting) == 3

    source.waiting[0].callback([source.createEvent("ok", None, 0)])
    source.waiting[2].callback([source.createEvent("ok", None, 2)])
    assert mine == []
    source.waiting[1].callback(
        [source.createEvent("ok", None, 1), source.createEvent("ok", None, 1)]
    )
    assert len(mine) == 1
    assert [e.metric for e in mine[0]] == [1, 1]
    assert [e.metric for e in harness.events] == [0, 2, 1, 1]
    assert source.polls == 3
    assert source.emitted == 4


def test_harness_poll_of_failing_source(observe_errors: Any) -> None:
    class Broken(Source):
        def get(self) -> Any:
            raise OSError("no such device")

    harness = SourceHarness(Broken, {"service": "b"})
    assert results(harness.poll()) == [[]]
    assert harness.source.errors == 1
    assert [e["source"] for e in observe_errors.take()] == ["b"]


def test_harness_start_and_stop() -> None:
    harness = SourceHarness(Counting, {"service": "c", "interval": 5})
    harness.start()
    harness.clock.advance(5)
    assert [e.metric for e in harness.events] == [1, 1, 2, 2]
    assert harness.stop().called
    harness.clock.advance(50)
    assert len(harness.events) == 4
    assert harness.source.duct is harness.duct
    assert harness.source.clock is harness.clock


def test_fake_duct() -> None:
    duct = FakeDuct()
    assert duct.hostname == "test.example"
    assert duct.reactor is duct.clock
    source = Source({"service": "s"}, lambda events: None, duct)
    assert duct.accepting(source)
    duct.accept = False
    assert not duct.accepting(source)


# -- configure ------------------------------------------------------------------------


def test_configure_rejects_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="bogus: unknown key"):
        configure(Source, {"service": "s", "bogus": 1})
    with pytest.raises(ValueError, match="frobnicate: unknown key"):
        configure(RecordingOutput, {"frobnicate": True})


def test_configure_lists_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        configure(Source, {"interval": "often", "bogus": 1})
    message = str(info.value)
    assert "bogus: unknown key" in message
    assert "interval: expected a number" in message
    assert "service: missing required key" in message


def test_configure_fills_defaults() -> None:
    config = configure(Source, {"service": "s", "tags": "a, b"})
    assert config["source"] == "duct.objects.Source"
    assert config["service"] == "s"
    assert config["interval"] == 60.0
    assert config["ttl"] == 60.0
    assert config["tags"] == ["a", "b"]
    assert config["attributes"] is None
    assert config["debug"] is False

    out = configure(RecordingOutput, {"batch_size": 7})
    assert out["output"] == "duct.testing.RecordingOutput"
    assert out["batch_size"] == 7
    assert out["maxsize"] == 100_000
    assert out["overflow"] == "block"
    assert out["flush_interval"] == 1.0
    assert out["retry_initial"] == 0.5
    assert out["retry_max"] == 30.0

    # Defaults are copies: changing one config does not change the next.
    config["tags"].append("x")
    assert configure(Source, {"service": "s"})["tags"] == []


def test_configure_checks_choices_and_minimums() -> None:
    with pytest.raises(ValueError, match="overflow: expected one of"):
        configure(Output, {"overflow": "explode"})
    with pytest.raises(ValueError, match="batch_size: must be at least 1"):
        configure(Output, {"batch_size": 0})


# -- RecordingOutput -----------------------------------------------------------------


def test_recording_output_records_batches() -> None:
    duct = FakeDuct()
    output = RecordingOutput(configure(RecordingOutput, {"batch_size": 2}), duct)
    events = [Event("ok", f"s{i}", None, i, 60, hostname="h") for i in range(3)]
    output.eventsReceived(events)
    duct.clock.advance(0)  # a full batch goes at once
    assert output.batches == [events[:2]]
    duct.clock.advance(1.0)  # the rest after flush_interval
    assert output.written == events
    assert output.batches == [events[:2], events[2:]]


def test_recording_output_failing_keeps_events_buffered(
    logged: list[dict[str, Any]],
) -> None:
    duct = FakeDuct()
    config = configure(RecordingOutput, {"flush_interval": 0, "retry_initial": 1.0})
    output = RecordingOutput(config, duct)
    output.failing = True
    events = [Event("ok", f"s{i}", None, i, 60, hostname="h") for i in range(3)]
    output.eventsReceived(events)
    duct.clock.advance(0)
    duct.clock.advance(1.0)
    duct.clock.advance(2.0)
    assert output.written == []
    assert output.batches == []
    assert output.failures == 3
    assert len(output.buffer) == 3
    assert output.buffer.depth == 3
    warnings = [e for e in logged if "failed to write" in e.get("log_format", "")]
    assert [e["log_level"] for e in warnings] == [LogLevel.warn] * 3

    output.failing = False
    duct.clock.advance(4.0)
    assert output.written == events
    assert output.buffer.depth == 0
