"""duct.buffers.memory: the bounded MemoryBuffer between the pipeline and an output's writer."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel

from duct.buffers.memory import OVERFLOW_POLICIES, Batch, MemoryBuffer, eventSize
from duct.objects import Event

T0 = 1_700_000_000.123456


def makeEvents(n: int, start: int = 0) -> list[Event]:
    return [
        Event("ok", f"svc.{i}", None, float(i), 60.0, hostname="h", evtime=T0 + i)
        for i in range(start, start + n)
    ]


def pending(buffer: MemoryBuffer) -> list[str]:
    """The services of the events waiting to be taken, head first."""
    batch = buffer.take(len(buffer))
    if batch is None:
        return []
    buffer.requeue(batch)
    return [event.service for event in batch.events]


def names(*indexes: int) -> list[str]:
    return [f"svc.{i}" for i in indexes]


def dropLines(logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logged if "dropped" in e.get("log_format", "")]


# -- limits ----------------------------------------------------------------------


def test_maxsize_limit_and_depth_track_in_flight(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=3)
    assert buffer.writable
    assert (len(buffer), buffer.depth, buffer.nbytes) == (0, 0, 0)
    events = makeEvents(3)
    sizes = [eventSize(e) for e in events]

    assert buffer.put(events[:2]) == 2
    assert buffer.writable
    assert buffer.depth == 2
    assert buffer.nbytes == sum(sizes[:2])

    assert buffer.put(events[2:]) == 1
    assert not buffer.writable
    assert buffer.depth == 3
    assert buffer.nbytes == sum(sizes)

    batch = buffer.take(2)
    assert batch is not None
    assert len(batch) == 2
    assert batch.nbytes == sum(sizes[:2])
    assert len(buffer) == 1  # waiting
    assert buffer.depth == 3  # waiting + in flight
    assert buffer.inFlightEvents == 2
    assert buffer.pendingBytes == sizes[2]
    assert buffer.inFlightBytes == sum(sizes[:2])
    assert buffer.nbytes == sum(sizes)
    assert not buffer.writable  # in-flight events still count

    buffer.ack(batch)
    assert buffer.depth == 1
    assert buffer.nbytes == sizes[2]
    assert buffer.inFlightEvents == 0
    assert buffer.inFlightBytes == 0
    assert buffer.writable


def test_max_bytes_limit(clock: Clock) -> None:
    events = makeEvents(4)
    size = eventSize(events[0])
    assert all(eventSize(e) == size for e in events)
    buffer = MemoryBuffer("out", clock, maxsize=100, max_bytes=2 * size)
    buffer.put(events[:1])
    assert buffer.writable
    buffer.put(events[1:2])
    assert buffer.nbytes == 2 * size
    assert not buffer.writable
    assert buffer.put(events[2:]) == 0
    assert buffer.drops["overflow"] == 2
    batch = buffer.take(1)
    assert batch is not None
    assert not buffer.writable  # in flight, still held
    buffer.ack(batch)
    assert buffer.nbytes == size
    assert buffer.writable


def test_put_of_nothing(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=1)
    buffer.put(makeEvents(1))
    assert buffer.put([]) == 0
    assert not buffer.drops


# -- overflow: block ----------------------------------------------------------------


def test_block_refuses_put_into_full_buffer(clock: Clock, logged: list[dict[str, Any]]) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=2, overflow="block")
    assert buffer.put(makeEvents(3)) == 3  # room: taken whole, overshooting once
    assert buffer.depth == 3
    assert buffer.put(makeEvents(4, start=3)) == 0
    assert buffer.depth == 3
    assert buffer.drops == {"overflow": 4}
    assert pending(buffer) == names(0, 1, 2)
    lines = dropLines(logged)
    assert len(lines) == 1
    assert lines[0]["log_level"] == LogLevel.warn
    assert (lines[0]["output"], lines[0]["count"], lines[0]["reason"]) == ("out", 4, "overflow")


def test_when_writable_fires_after_an_ack_makes_room(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=2)
    assert buffer.whenWritable().called  # room now: at once

    buffer.put(makeEvents(2))
    ready = buffer.whenWritable()
    other = buffer.whenWritable()
    assert not ready.called

    batch = buffer.take(2)
    assert batch is not None
    assert not ready.called  # taken is not delivered
    buffer.requeue(batch)
    assert not ready.called  # a requeue makes no room

    one = buffer.take(1)
    assert one is not None
    buffer.put(makeEvents(1, start=2))  # refused: still full
    buffer.ack(one)
    assert ready.called
    assert other.called
    assert buffer.writable


def test_when_writable_waits_until_an_ack_is_enough(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=2)
    buffer.put(makeEvents(4))
    ready = buffer.whenWritable()
    first = buffer.take(2)
    second = buffer.take(2)
    assert first is not None and second is not None
    buffer.ack(first)
    assert not ready.called  # depth 2: still full
    buffer.discard(second, "rejected")
    assert ready.called


# -- overflow: drop_oldest and drop_newest ------------------------------------------------


def test_drop_oldest_keeps_the_newest(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=3, overflow="drop_oldest")
    assert buffer.put(makeEvents(3)) == 3
    assert buffer.put(makeEvents(2, start=3)) == 2
    assert pending(buffer) == names(2, 3, 4)
    assert buffer.drops == {"overflow": 2}
    assert buffer.depth == 3
    assert buffer.nbytes == sum(eventSize(e) for e in makeEvents(3, start=2))


def test_drop_oldest_put_larger_than_the_buffer(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=3, overflow="drop_oldest")
    buffer.put(makeEvents(1))
    kept = buffer.put(makeEvents(5, start=1))
    assert pending(buffer) == names(3, 4, 5)
    assert kept == 3  # of this put, only svc.3..svc.5 were kept
    assert buffer.drops == {"overflow": 3}


def test_drop_oldest_by_bytes(clock: Clock) -> None:
    events = makeEvents(5)
    size = eventSize(events[0])
    buffer = MemoryBuffer("out", clock, max_bytes=2 * size, overflow="drop_oldest")
    for event in events:
        buffer.put([event])
    assert pending(buffer) == names(3, 4)
    assert buffer.nbytes == 2 * size
    assert buffer.drops == {"overflow": 3}


def test_drop_oldest_never_drops_in_flight(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=3, overflow="drop_oldest")
    buffer.put(makeEvents(3))
    batch = buffer.take(2)
    assert batch is not None
    buffer.put(makeEvents(2, start=3))
    assert pending(buffer) == names(4)
    assert [e.service for e in batch.events] == names(0, 1)
    assert buffer.depth == 3
    assert buffer.drops == {"overflow": 2}
    buffer.ack(batch)
    assert buffer.depth == 1


def test_drop_newest_refuses_what_does_not_fit(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=3, overflow="drop_newest")
    assert buffer.put(makeEvents(2)) == 2
    assert buffer.put(makeEvents(3, start=2)) == 1
    assert pending(buffer) == names(0, 1, 2)
    assert buffer.drops == {"overflow": 2}
    assert buffer.put(makeEvents(1, start=5)) == 0
    assert buffer.drops == {"overflow": 3}
    assert buffer.depth == 3


# -- take / ack / requeue / discard ----------------------------------------------------


def test_take_from_empty_buffer(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock)
    assert buffer.take(10) is None
    buffer.put(makeEvents(2))
    batch = buffer.take(10)
    assert isinstance(batch, Batch)
    assert len(batch) == 2
    assert buffer.take(10) is None


def test_requeue_puts_the_batch_back_at_the_head_in_order(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock)
    buffer.put(makeEvents(5))
    batch = buffer.take(3)
    assert batch is not None
    assert [e.service for e in batch.events] == names(0, 1, 2)
    buffer.put(makeEvents(2, start=5))  # arrived while the batch was in flight
    nbytes = buffer.nbytes
    buffer.requeue(batch)
    assert buffer.inFlightEvents == 0
    assert buffer.inFlightBytes == 0
    assert buffer.nbytes == nbytes
    assert buffer.depth == 7
    assert pending(buffer) == names(0, 1, 2, 3, 4, 5, 6)
    assert buffer.drops == {}


def test_discard_counts_by_reason(clock: Clock) -> None:
    buffer = MemoryBuffer("out", clock)
    buffer.put(makeEvents(6))
    first = buffer.take(2)
    second = buffer.take(3)
    third = buffer.take(1)
    assert first is not None and second is not None and third is not None
    buffer.discard(first, "rejected")
    buffer.discard(second, "expired")
    buffer.discard(third, "rejected")
    assert buffer.drops == {"rejected": 3, "expired": 3}
    assert buffer.depth == 0
    assert buffer.nbytes == 0


# -- drop logging -----------------------------------------------------------------------


def test_drops_are_logged_at_a_limited_rate(clock: Clock, logged: list[dict[str, Any]]) -> None:
    buffer = MemoryBuffer("out", clock, maxsize=1, overflow="drop_newest")
    buffer.put(makeEvents(1))
    for i in range(100):
        buffer.put(makeEvents(1, start=i + 1))
        clock.advance(0.0625)  # 100 drops within 6.25 s
    lines = dropLines(logged)
    assert len(lines) == 1
    assert lines[0]["count"] == 1
    assert lines[0]["suppressed"] == 0
    assert buffer.drops == {"overflow": 100}

    clock.advance(2.75)  # t=9: still within 10 s of the first line
    buffer.put(makeEvents(1, start=200))
    assert len(dropLines(logged)) == 1

    clock.advance(1.0)  # t=10
    assert clock.seconds() == 10.0
    buffer.put(makeEvents(3, start=300))
    lines = dropLines(logged)
    assert len(lines) == 2
    second = lines[1]
    assert second["suppressed"] == 100  # the lines held back in between
    assert second["count"] == 3
    assert second["total"] == 104
    assert second["log_level"] == LogLevel.warn
    assert "100 similar lines suppressed" in second["log_format"].format(**second)


def test_drop_log_is_limited_per_reason(clock: Clock, logged: list[dict[str, Any]]) -> None:
    buffer = MemoryBuffer("out", clock)
    buffer.put(makeEvents(3))
    for reason in ("rejected", "expired", "rejected"):
        batch = buffer.take(1)
        assert batch is not None
        buffer.discard(batch, reason)
    assert [e["reason"] for e in dropLines(logged)] == ["rejected", "expired"]


# -- sizes and policies ----------------------------------------------------------------


def test_event_size_grows_with_its_strings() -> None:
    base = Event("ok", "s", None, 1.0, 60.0, hostname="h")
    size = eventSize(base)
    assert size > 0
    longer = [
        Event("ok", "s" * 101, None, 1.0, 60.0, hostname="h"),
        Event("ok", "s", None, 1.0, 60.0, hostname="h" * 101),
        Event("ok", "s", "d" * 100, 1.0, 60.0, hostname="h"),
        Event("ok", "s", None, 1.0, 60.0, hostname="h", tags=["t" * 100]),
        Event("ok", "s", None, 1.0, 60.0, hostname="h", attributes={"k": "v" * 100}),
    ]
    for event in longer:
        assert eventSize(event) >= size + 100, event
    assert (
        eventSize(Event("ok", "s", "d" * 1000, 1.0, 60.0, hostname="h"))
        - eventSize(Event("ok", "s", "d" * 10, 1.0, 60.0, hostname="h"))
        == 990
    )
    two = Event("ok", "s", None, 1.0, 60.0, hostname="h", tags=["a", "b"])
    one = Event("ok", "s", None, 1.0, 60.0, hostname="h", tags=["a"])
    assert eventSize(two) > eventSize(one) > size


def test_invalid_overflow_policy(clock: Clock) -> None:
    with pytest.raises(ValueError, match="drop_everything"):
        MemoryBuffer("out", clock, overflow="drop_everything")
    for policy in OVERFLOW_POLICIES:
        assert MemoryBuffer("out", clock, overflow=policy).overflow == policy


class _Taker:
    """An output stand-in that keeps what it is handed, up to ``room`` events."""

    def __init__(self, acceptsEncoded: bool, room: int = 100) -> None:
        self.acceptsEncoded = acceptsEncoded
        self.room = room
        self.received: list[Any] = []

    def eventsReceived(self, events: Any) -> int:
        self.received.append(events)
        return min(len(events), self.room)


def test_move_into_hands_over_what_waits_and_keeps_what_is_in_flight(clock: Clock) -> None:
    buffer = MemoryBuffer("old", clock)
    buffer.put(makeEvents(5))
    inFlight = buffer.take(2)
    assert inFlight is not None
    taker = _Taker(acceptsEncoded=False, room=2)
    assert buffer.moveInto(taker) == (3, 2)  # the taker kept two of the three
    (handed,) = taker.received
    assert [e.service for e in handed] == names(2, 3, 4)
    assert len(buffer) == 0 and buffer.depth == 2  # what is in flight stays
    assert buffer.moveInto(taker) == (0, 0)


def test_move_into_keeps_encoded_events_encoded_for_a_riemann_output(clock: Clock) -> None:
    from duct.protocol.riemann import EncodedEvents, encodeEvent

    encoded = [encodeEvent(e) for e in makeEvents(2)]
    for acceptsEncoded in (True, False):
        buffer = MemoryBuffer("old", clock)
        buffer.put(encoded, [len(data) for data in encoded])
        taker = _Taker(acceptsEncoded)
        # As a Riemann output's batchEvents gives them: encoded.
        assert buffer.moveInto(taker, lambda batch: EncodedEvents(list(batch.events))) == (2, 2)
        (handed,) = taker.received
        if acceptsEncoded:
            assert isinstance(handed, EncodedEvents) and list(handed) == encoded
        else:
            assert [e.service for e in handed] == names(0, 1)


# -- grouped: items of several events ------------------------------------------------


def grouped(**kwargs: Any) -> MemoryBuffer:
    return MemoryBuffer("g", Clock(), grouped=True, **kwargs)


def test_a_grouped_buffer_counts_events_and_takes_whole_items() -> None:
    buffer = grouped()
    assert buffer.put([b"a" * 10, b"b" * 20], [60, 70], None, [3, 5]) == 8
    assert buffer.putItem(b"c" * 5, 55, 2) == 2
    assert (len(buffer), buffer.depth, buffer.nbytes) == (10, 10, 185)
    batch = buffer.take(7)  # 3 fits, 3 + 5 does not
    assert batch is not None and batch.events == [b"a" * 10] and len(batch) == 3
    second = buffer.take(4)  # always at least one item, even above n
    assert second is not None and second.events == [b"b" * 20]
    assert len(second) == 5 and buffer.depth == 10 and len(buffer) == 2
    buffer.requeue(second)
    buffer.requeue(batch)
    whole = buffer.take(100)
    assert whole is not None and whole.counts == [3, 5, 2] and len(whole) == 10
    buffer.ack(whole)
    assert (len(buffer), buffer.depth, buffer.nbytes) == (0, 0, 0)


def test_a_grouped_buffer_limits_and_drops_by_events() -> None:
    buffer = grouped(maxsize=10, overflow="drop_oldest")
    buffer.put([b"x", b"y"], [51, 51], None, [4, 4])
    assert buffer.putItem(b"z", 51, 4) == 4  # 12 > 10: the oldest Msg goes, 4 events
    assert buffer.drops["overflow"] == 4 and buffer.waiting() == [b"y", b"z"]
    blocking = grouped(maxsize=10)
    blocking.put([b"x"], [51], None, [10])
    assert not blocking.writable
    assert blocking.putItem(b"y", 51, 6) == 0 and blocking.drops["overflow"] == 6
    newest = grouped(maxsize=10, overflow="drop_newest")
    assert newest.put([b"x", b"y", b"z"], [51] * 3, None, [6, 6, 6]) == 12
    assert newest.drops["overflow"] == 6 and len(newest) == 12
