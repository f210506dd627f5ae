"""The writer every Output shares: a window of batches in flight, on a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from duct.objects import Event, Output
from duct.output import Refused
from duct.testing import FakeDuct, configure


def makeEvents(n: int, start: int = 0) -> list[Event]:
    return [
        Event("ok", f"svc.{i}", None, float(i), 60.0, hostname="h") for i in range(start, start + n)
    ]


def services(events: list[Event]) -> list[str]:
    return [event.service for event in events]


class Pending(Output):
    """Each batch waits for the test to confirm (`ack`) or fail (`fail`) it."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.calls: list[tuple[list[Event], Deferred[None]]] = []
        self.up = True

    def canWrite(self) -> bool:
        return self.up

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.calls.append((list(events), d))
        return d

    def batches(self) -> list[list[str]]:
        return [services(events) for events, _ in self.calls]

    def ack(self, index: int) -> None:
        self.calls[index][1].callback(None)

    def fail(self, index: int, error: Exception | None = None) -> None:
        self.calls[index][1].errback(error or ConnectionError("write failed"))


class Immediate(Output):
    """Confirms every batch at once, as a fast local destination does."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.batches: list[list[str]] = []

    def writeBatch(self, events: list[Event]) -> None:
        self.batches.append(services(events))


def build(cls: type[Output], **config: Any) -> tuple[Any, Clock]:
    duct = FakeDuct()
    return cls(configure(cls, config), duct), duct.clock


def names(start: int, stop: int) -> list[str]:
    return [f"svc.{i}" for i in range(start, stop)]


def test_several_batches_in_flight_and_each_ack_sends_the_next() -> None:
    output, clock = build(Pending, batch_size=2, flush_interval=5.0, max_in_flight=3)
    output.eventsReceived(makeEvents(9))
    assert output.batches() == [names(0, 2), names(2, 4), names(4, 6)]
    assert output.inFlight == 3 and len(output.buffer) == 3 and output.buffer.depth == 9
    output.ack(1)  # confirmed out of order: its slot goes to the next full batch
    assert output.batches()[3:] == [names(6, 8)]
    assert output.inFlight == 3 and output.acked == 1 and output.sent == 2
    output.ack(0)
    assert len(output.calls) == 4  # one event left: a partial batch waits
    clock.advance(5.0)
    assert output.batches()[4:] == [names(8, 9)]
    for index in (2, 3, 4):
        output.ack(index)
    assert output.buffer.depth == 0 and output.inFlight == 0 and output.sent == 9


def test_a_failed_middle_batch_goes_back_in_order_once_the_window_settles() -> None:
    output, clock = build(
        Pending, batch_size=2, flush_interval=0, max_in_flight=3, retry_initial=1.0
    )
    output.eventsReceived(makeEvents(8))
    output.fail(1)
    # Batches after it are still in flight: nothing goes back or out yet.
    assert output.failures == 1 and len(output.calls) == 3
    assert services(output.buffer.waiting()) == names(6, 8)
    output.ack(0)
    output.fail(2)
    assert services(output.buffer.waiting()) == names(2, 8)
    assert output.inFlight == 0 and output.buffer.depth == 6 and len(output.calls) == 3
    clock.advance(0.99)
    assert len(output.calls) == 3  # backing off
    clock.advance(0.01)
    assert output.batches()[3:] == [names(2, 4), names(4, 6), names(6, 8)]


def test_a_dropped_connection_requeues_every_batch_in_order_and_ignores_late_results() -> None:
    output, clock = build(Pending, batch_size=2, flush_interval=0, max_in_flight=3)
    output.eventsReceived(makeEvents(8))
    output.fail(1, Refused("busy"))  # the middle batch is cut in two, its first half sent
    assert output.batches()[3:] == [names(2, 3)]
    output.up = False
    assert output.requeueInFlight() == 6
    assert services(output.buffer.waiting()) == names(0, 8)
    assert output.inFlight == 0 and output.buffer.depth == 8
    output.ack(0)  # a late confirmation of a batch already back in the buffer
    output.fail(2)
    output.ack(3)
    assert output.sent == 0 and output.failures == 0 and output.buffer.depth == 8
    output.up = True
    output.resumeWriting()
    assert output.batches()[4:] == [names(0, 2), names(2, 4), names(4, 6)]


def test_a_refused_single_event_is_written_again_aside_then_dropped() -> None:
    output, clock = build(
        Pending, batch_size=1, flush_interval=0, max_in_flight=2, retry_initial=1.0
    )
    output.maxRetries = 1
    output.eventsReceived(makeEvents(2))
    output.fail(0, Refused("no", "riemann:5555"))
    # It waits aside for its retry: the events behind it do not.
    assert output.batches()[2:] == []
    output.ack(1)
    output.eventsReceived(makeEvents(2, start=2))
    assert output.batches()[2:] == [names(2, 3), names(3, 4)]
    clock.advance(1.0)
    assert output.batches()[4:] == []  # the window is full: it waits its turn
    output.ack(2)
    assert output.batches()[4:] == [names(0, 1)]  # the same event, again, first in line
    output.fail(4, Refused("no", "riemann:5555"))
    assert output.rejected == 2 and output.buffer.drops["rejected"] == 1
    assert output.eventsRejected == 1
    output.ack(3)
    assert output.buffer.depth == 0 and output.buffer.nbytes == 0 and output.sent == 3


def test_a_deep_backlog_leaves_in_full_batches_without_timers() -> None:
    output, clock = build(Immediate, batch_size=10, flush_interval=5.0, maxsize=10_000)
    output.eventsReceived(makeEvents(1005))
    assert [len(batch) for batch in output.batches] == [10] * 100
    assert [call.getTime() for call in clock.getDelayedCalls()] == [5.0]  # the remainder's wait
    clock.advance(4.99)
    assert len(output.batches) == 100
    clock.advance(0.01)
    assert output.batches[-1] == names(1000, 1005) and output.buffer.depth == 0


def test_a_backlog_follows_each_ack_with_a_full_batch_at_once() -> None:
    output, clock = build(Pending, batch_size=10, flush_interval=5.0, max_in_flight=2)
    output.eventsReceived(makeEvents(55))
    for index in range(3):
        assert len(output.calls) == index + 2
        output.ack(index)  # no clock: the next full batch goes out from the ack
    assert [len(events) for events, _ in output.calls] == [10] * 5
    output.ack(3)
    assert len(output.calls) == 5 and len(output.buffer) == 5  # the partial rest waits
    clock.advance(5.0)
    assert output.batches()[-1] == names(50, 55)


def test_a_partial_batch_waits_flush_interval_from_its_first_event() -> None:
    output, clock = build(Pending, batch_size=10, flush_interval=2.0, max_in_flight=2)
    output.eventsReceived(makeEvents(3))
    clock.advance(1.0)
    output.eventsReceived(makeEvents(3, start=3))
    clock.advance(0.99)
    assert output.calls == []
    clock.advance(0.01)
    assert output.batches() == [names(0, 6)]


def test_no_batch_is_written_while_the_destination_cannot_take_it() -> None:
    output, clock = build(Pending, batch_size=2, flush_interval=0, max_in_flight=4)
    output.up = False
    output.eventsReceived(makeEvents(4))
    clock.advance(10)
    assert output.calls == [] and len(output.buffer) == 4
    output.up = True
    output.resumeWriting()
    assert output.batches() == [names(0, 2), names(2, 4)]


def test_flush_waits_for_every_batch_in_the_window() -> None:
    output, clock = build(Pending, batch_size=2, flush_interval=60.0, max_in_flight=2)
    output.eventsReceived(makeEvents(5))
    done = output.flush()
    assert output.batches() == [names(0, 2), names(2, 4)]
    output.ack(0)
    assert output.batches()[2:] == [names(4, 5)]  # a flush sends the partial batch too
    output.ack(1)
    assert not done.called
    output.ack(2)
    assert done.called and output.buffer.depth == 0
