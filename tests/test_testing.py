"""duct.testing: the helpers plugin authors test with."""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from zope.interface.verify import verifyObject

from duct.aggregators import Counter
from duct.interfaces import IDuct
from duct.objects import Event, Output, Source
from duct.service import DuctService
from duct.testing import (
    FakeDuct,
    OutputHarness,
    RecordingOutput,
    SourceHarness,
    configure,
    waitFor,
)


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


class Uptime(Source):
    """Runs ``uptime`` and reports how many words it printed."""

    async def get(self) -> Event:
        code, stdout, _ = await self.run(["uptime"])
        return self.createEvent("ok" if code == 0 else "critical", stdout, len(stdout.split()))


def test_harness_answers_the_sources_commands_in_turn(observe_errors: Any) -> None:
    from duct.lib.commands import CommandOutput
    from duct.lib.process import ProcessTimeout

    harness = SourceHarness(Uptime, {"service": "up"})
    asked = harness.answerCommands(
        CommandOutput(0, "up 3 days", ""), ProcessTimeout("uptime: too slow", "", "")
    )
    [first] = results(harness.poll())[0]
    assert (first.state, first.metric) == ("ok", 3)
    assert results(harness.poll()) == [[]] and harness.errors[0].check(ProcessTimeout)
    assert results(harness.poll()) == [[]] and "no answer given" in str(harness.errors[1].value)
    assert asked == [["uptime"]] * 3
    assert {e["source"] for e in observe_errors.take()} == {"up"}  # failed polls are logged


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


# -- what a plugin may use of the service ------------------------------------------------


def test_fake_duct_and_the_service_provide_iduct(tmp_path: Any) -> None:
    fake = FakeDuct()
    assert verifyObject(IDuct, fake)
    assert isinstance(fake.reactor, MemoryReactorClock) and fake.clock is fake.reactor
    # Each fake has a state directory of its own, so a disk buffer never
    # reaches /var/lib/duct.
    other = FakeDuct()
    assert os.path.isdir(fake.config["state_dir"])
    assert fake.config["state_dir"] != other.config["state_dir"]
    disk = RecordingOutput(configure(RecordingOutput, {"buffer": {"type": "disk"}}), fake)
    assert disk.buffer.durable
    assert str(disk.buffer.path).startswith(fake.config["state_dir"])  # type: ignore[attr-defined]
    disk.stop()
    service = DuctService({"state_dir": str(tmp_path)}, reactor=MemoryReactorClock())
    assert verifyObject(IDuct, service)


# -- SourceHarness with the pipeline ------------------------------------------------------


class Requests(Source):
    """A request counter that grows by 30 a poll, and a gauge of active connections."""

    def get(self) -> list[Event]:
        return [
            self.createEvent("ok", None, 30 * self.polls, prefix="requests", aggregation=Counter),
            self.createEvent("ok", None, 5 * self.polls, prefix="active"),
        ]


def test_harness_runs_the_pipeline_rates_and_rules() -> None:
    config = {"service": "web", "interval": 10, "critical": {r"web\.active": "> 12"}}
    harness = SourceHarness(Requests, config, pipeline=True)
    harness.start()
    # The first sample of a counter yields no rate; the raw events are kept apart.
    assert [e.service for e in harness.events] == ["web.active"]
    assert [e.service for e in harness.raw] == ["web.requests", "web.active"]
    harness.advance(10)
    assert harness.latest("web.requests").metric == 3.0  # 30 more in 10 s
    assert harness.latest("web.active").state == "ok"
    harness.advance(10)
    assert (harness.latest("web.active").metric, harness.latest("web.active").state) == (
        15,
        "critical",
    )
    with pytest.raises(LookupError, match="web.active, web.requests"):
        harness.latest("web.missing")


def test_harness_errors_hold_each_failed_poll(observe_errors: Any) -> None:
    class Flaky(Source):
        def get(self) -> Any:
            if self.polls % 2:
                raise ConnectionRefusedError("nobody home")
            return self.createEvent("ok", None, self.polls)

    harness = SourceHarness(Flaky, {"service": "f", "interval": 1})
    harness.start()
    harness.advance(1)
    harness.advance(1)
    assert [f.type for f in harness.errors] == [ConnectionRefusedError] * 2
    assert [e.metric for e in harness.events] == [2]
    assert harness.source.errors == 2
    assert len(observe_errors.take()) == 1  # logged at a limited rate


# -- OutputHarness ----------------------------------------------------------------------


def test_output_harness_reports_retries_acks_and_drops(logged: list[dict[str, Any]]) -> None:
    harness = OutputHarness(
        RecordingOutput,
        {"maxsize": 4, "overflow": "drop_newest", "flush_interval": 0, "retry_initial": 1.0},
    )
    output = harness.output
    assert isinstance(output, RecordingOutput)
    harness.start()
    output.failing = True
    assert harness.send(Event("ok", f"s{i}", None, i, 60, hostname="h") for i in range(6)) == 4
    assert harness.dropped == {"overflow": 2}
    harness.run(3.5)  # tries at 0, 1 and 3 s
    assert (harness.retries, harness.sent, harness.buffered) == (3, 0, 4)
    output.failing = False
    assert harness.drain()
    assert (harness.sent, harness.buffered) == (4, 0)
    assert [e.service for e in output.written] == ["s0", "s1", "s2", "s3"]
    stats = harness.stats()
    assert stats["events_sent"] == 4 and stats["failures"] == 3
    assert stats["dropped"] == {"overflow": 2} and stats["events_received"] == 6


def test_output_harness_drain_gives_up_on_a_destination_that_stays_down(
    logged: list[dict[str, Any]],
) -> None:
    harness = OutputHarness(RecordingOutput, {"flush_interval": 0})
    harness.output.failing = True  # type: ignore[attr-defined]
    harness.send([Event("ok", "s", None, 1, 60, hostname="h")])
    assert not harness.drain(timeout=60)
    assert harness.buffered == 1 and harness.retries > 3


# -- waitFor on the real reactor -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wait_for_returns_the_first_true_answer(reactor: Any) -> None:
    answers = iter([0, None, "", "there"])

    async def check() -> Any:
        return next(answers)

    assert await waitFor(reactor, check, "an answer", timeout=5, interval=0.001) == "there"


@pytest_twisted.ensureDeferred
async def test_wait_for_gives_up_naming_what_it_waited_for(reactor: Any) -> None:
    with pytest.raises(AssertionError, match="gave up after 0.05s waiting for the moon"):
        await waitFor(reactor, lambda: False, "the moon", timeout=0.05, interval=0.01)


def test_the_duct_of_duct_once_provides_iduct() -> None:
    from duct.cli import _OnceDuct

    once = _OnceDuct(MemoryReactorClock(), "h", {"state_dir": "/tmp"})
    assert verifyObject(IDuct, once)
    assert once.accepting(Source({"service": "s"}, lambda events: None, once))
