"""The Riemann listeners' limits: events per Msg, room in buffers, large Msgs, connections.

Everything runs in memory, on a MemoryReactorClock: the tests turn the clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

from duct.configuration import ConfigFile
from duct.errors import ConfigurationError
from duct.pipeline import Pipeline, SourceFeed
from duct.protocol.riemann import EncodedEvents, frame, pb
from duct.sources.riemann import RiemannTCP, RiemannTCPProtocol, RiemannUDP
from duct.sources.riemann_budget import SMALL_FRAME
from duct.sources.riemann_large import LARGE_FRAME, PIECE_EVENTS
from duct.testing import FakeDuct, RecordingOutput, configure

# -- helpers ---------------------------------------------------------------------------


def replies(data: bytes) -> list[pb.Msg]:
    found = []
    while data:
        length = int.from_bytes(data[:4], "big")
        found.append(pb.Msg.FromString(data[4 : 4 + length]))
        data = data[4 + length :]
    return found


def events(first: int, count: int, description: str = "") -> bytes:
    """A Msg of ``count`` events, services ``n.<first>`` onwards, written field by field."""
    parts = []
    extra = b""
    if description:
        text = description.encode()
        extra = b"\x2a" + _varint(len(text)) + text  # Event.description, field 5
    for i in range(first, first + count):
        service = f"n.{i}".encode()
        event = b"\x1a" + bytes([len(service)]) + service + extra  # Event.service, field 3
        parts.append(b"\x32" + _varint(len(event)) + event)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def services(payloads: list[bytes]) -> list[str]:
    return [e.service for p in payloads for e in pb.Msg.FromString(p).events]


class Listener:
    """A Riemann TCP listener on a MemoryReactorClock, feeding ``queueBack`` or a pipeline."""

    def __init__(
        self, queueBack: Any = None, output: dict[str, Any] | None = None, **config: Any
    ) -> None:
        self.clock = MemoryReactorClock()
        self.duct = FakeDuct(self.clock)
        self.output: RecordingOutput | None = None
        feed: Any = queueBack
        if output is not None:
            settings = {"name": "recorded", "flush_interval": 0, "retry_initial": 1, **output}
            self.output = RecordingOutput(configure(RecordingOutput, settings), self.duct)
            feed = SourceFeed(Pipeline({"recorded": self.output}))
        self.source = RiemannTCP(
            configure(RiemannTCP, {"service": "riemann", **config}), feed, self.duct
        )
        if output is not None:
            feed.source = self.source

    def connect(self) -> tuple[RiemannTCPProtocol, StringTransport]:
        protocol = self.source.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def turn(self, times: int = 1) -> None:
        for _ in range(times):
            self.clock.advance(0)


class Recorder:
    """A queueBack that keeps each batch, and when in the steps it came."""

    def __init__(self, listener: Listener | None = None) -> None:
        self.batches: list[EncodedEvents] = []
        self.steps: list[int] = []
        self.listener = listener

    def __call__(self, batch: EncodedEvents) -> None:
        self.batches.append(batch)
        if self.listener is not None:
            self.steps.append(self.listener.source.decodeSteps)


def recording(**config: Any) -> tuple[Listener, Recorder]:
    recorder = Recorder()
    listener = Listener(recorder, **config)
    recorder.listener = listener
    return listener, recorder


# -- max_events ------------------------------------------------------------------------


def test_a_msg_over_max_events_is_refused_and_the_connection_goes_on() -> None:
    listener, recorder = recording(max_events=10)
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(b"\x32\x00" * 11) + frame(events(0, 10)))
    refused, ok = replies(transport.value())
    assert not refused.ok and "max_events (10)" in refused.error
    assert ok.ok and not transport.disconnecting
    assert listener.source.tooMany == 1 and listener.source.received == 10
    assert services([b.payload for b in recorder.batches]) == [f"n.{i}" for i in range(10)]


def test_a_large_msg_over_max_events_is_refused_early_without_delivering() -> None:
    listener, recorder = recording(max_events=5000)
    protocol, transport = listener.connect()
    # 8 MiB of empty events, 4 million of them: the scan stops past 5,000.
    protocol.dataReceived(frame(b"\x32\x00" * (4 * 1024 * 1024)) + frame(events(0, 1)))
    assert transport.value() == b""  # checked in steps
    listener.turn()
    refused, ok = replies(transport.value())
    assert not refused.ok and "max_events" in refused.error
    assert ok.ok
    assert listener.source.tooMany == 1
    assert listener.source.decodeSteps <= 5000 // PIECE_EVENTS + 2
    assert services([b.payload for b in recorder.batches]) == ["n.0"]


def test_udp_refuses_a_datagram_over_max_events() -> None:
    received: list[EncodedEvents] = []
    source = RiemannUDP(
        configure(RiemannUDP, {"service": "u", "max_events": 3}), received.append, FakeDuct()
    )
    source.protocol.datagramReceived(b"\x32\x00" * 4, ("127.0.0.1", 1))
    source.protocol.datagramReceived(events(0, 3), ("127.0.0.1", 1))
    assert source.tooMany == 1 and [len(b) for b in received] == [3]


# -- room in a blocking buffer ---------------------------------------------------------------


def test_a_msg_larger_than_a_blocking_buffer_is_refused_naming_the_output() -> None:
    listener = Listener(output={"maxsize": 3, "overflow": "block"})
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, 4)) + frame(events(4, 3)))
    refused, ok = replies(transport.value())
    assert not refused.ok
    assert "output recorded" in refused.error and "at most 3 events (maxsize)" in refused.error
    assert ok.ok
    assert listener.source.tooLarge == 1 and listener.source.received == 3
    listener.clock.advance(0)
    assert listener.output is not None
    assert [e.service for e in listener.output.written] == ["n.4", "n.5", "n.6"]


def test_a_msg_over_a_blocking_buffers_max_bytes_is_refused() -> None:
    listener = Listener(output={"max_bytes": 2000, "overflow": "block"})
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, 1, "d" * 3000)))
    (refused,) = replies(transport.value())
    assert not refused.ok and "(max_bytes)" in refused.error and "recorded" in refused.error


def test_a_msg_that_fits_later_waits_and_the_buffer_never_overflows() -> None:
    listener = Listener(output={"maxsize": 10, "overflow": "block", "batch_size": 4})
    output = listener.output
    assert output is not None
    buffer = output.buffer
    depths: list[int] = []
    put = buffer.put

    def recordingPut(*args: Any, **kwargs: Any) -> int:
        kept = put(*args, **kwargs)
        depths.append(buffer.depth)
        return kept

    buffer.put = recordingPut  # type: ignore[method-assign]
    output.failing = True
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, 6)) + frame(events(6, 6)) + frame(events(12, 1)))
    assert [r.ok for r in replies(transport.value())] == [True]  # the second is held
    assert transport.producerState == "paused" and listener.source.held == 1
    assert buffer.depth == 6

    output.failing = False
    for _ in range(10):
        listener.clock.advance(1)
        assert buffer.depth <= buffer.maxsize
    assert [r.ok for r in replies(transport.value())] == [True, True, True]
    assert transport.producerState == "producing"
    assert [e.service for e in output.written] == [f"n.{i}" for i in range(13)]
    assert depths and max(depths) <= buffer.maxsize
    assert not buffer.drops


def test_a_stepped_msg_waits_piece_by_piece_within_the_bound() -> None:
    count = PIECE_EVENTS * 2 + PIECE_EVENTS // 2
    listener = Listener(output={"maxsize": count, "overflow": "block", "batch_size": PIECE_EVENTS})
    output = listener.output
    assert output is not None
    output.failing = True
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, PIECE_EVENTS)))
    protocol.dataReceived(frame(events(PIECE_EVENTS, count)))
    for _ in range(20):
        listener.clock.advance(0)
        assert output.buffer.depth <= count
    assert len(replies(transport.value())) == 1  # the large one waits for room
    assert output.buffer.depth == 2 * PIECE_EVENTS  # its first piece is in; the next waits
    output.failing = False
    for _ in range(20):
        listener.clock.advance(1)
        assert output.buffer.depth <= count
    assert [r.ok for r in replies(transport.value())] == [True, True]
    written = [e.service for e in output.written]
    assert written == [f"n.{i}" for i in range(PIECE_EVENTS + count)]


# -- replies to pipelined Msgs ----------------------------------------------------------------


class CountingTransport(StringTransport):
    """Keeps each write apart, so a test can see how replies were grouped."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def test_msgs_read_together_are_answered_in_one_write_in_order() -> None:
    listener = Listener(output={})
    protocol = listener.source.factory.buildProtocol(None)
    transport = CountingTransport()
    protocol.makeConnection(transport)
    bad = b"\x32\x03\x1a\x05x"  # an event cut short: this Msg alone is refused
    protocol.dataReceived(frame(events(0, 1)) + frame(bad) + frame(events(1, 2)))
    assert len(transport.writes) == 1
    assert [r.ok for r in replies(transport.writes[0])] == [True, False, True]
    protocol.dataReceived(frame(events(3, 1)))
    assert len(transport.writes) == 2 and [r.ok for r in replies(transport.writes[1])] == [True]


def test_msgs_queued_behind_a_held_ack_are_answered_together_once_it_is_released() -> None:
    listener = Listener(output={"maxsize": 9, "overflow": "block", "batch_size": 6})
    output = listener.output
    assert output is not None
    output.failing = True
    protocol = listener.source.factory.buildProtocol(None)
    transport = CountingTransport()
    protocol.makeConnection(transport)
    frames = [frame(events(0, 6)), frame(events(6, 6))] + [
        frame(events(12 + i, 1)) for i in range(3)
    ]
    protocol.dataReceived(b"".join(frames))
    assert [len(replies(w)) for w in transport.writes] == [1]  # the second Msg is held
    output.failing = False
    for _ in range(5):
        listener.clock.advance(1)
    assert [len(replies(w)) for w in transport.writes] == [1, 1, 3]
    assert all(r.ok for w in transport.writes for r in replies(w))
    assert [e.service for e in output.written] == [f"n.{i}" for i in range(15)]


# -- large Msgs, in steps ----------------------------------------------------------------------


def test_a_large_msg_is_handed_on_in_pieces_over_many_turns() -> None:
    total = 300_000
    listener, recorder = recording(max_events=total, max_frame=64 * 1024 * 1024)
    protocol, transport = listener.connect()
    payload = events(0, total)
    assert len(payload) > LARGE_FRAME
    later = listener.clock.callLater
    turns: list[int] = []

    def countingCallLater(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        turns.append(len(recorder.batches))
        return later(delay, f, *args, **kwargs)

    listener.clock.callLater = countingCallLater  # type: ignore[method-assign]
    protocol.dataReceived(frame(payload))
    assert recorder.batches == [] and transport.value() == b""
    listener.turn()
    (reply,) = replies(transport.value())
    assert reply.ok
    assert len(turns) > total // PIECE_EVENTS  # scanning, then handing on, in turns
    assert all(len(b) <= PIECE_EVENTS for b in recorder.batches)
    # One piece per turn: no two pieces in the same step.
    assert len(set(recorder.steps)) == len(recorder.steps)
    assert b"".join(b.payload for b in recorder.batches) == payload  # every event, in order
    assert sum(len(b) for b in recorder.batches) == total
    source = listener.source
    assert (source.received, source.frames, source.stepped, source.waiting) == (total, 1, 1, 0)


def test_a_msg_of_many_events_in_a_small_frame_is_stepped_too() -> None:
    listener, recorder = recording()
    protocol, transport = listener.connect()
    payload = events(0, PIECE_EVENTS * 3)
    assert len(payload) <= LARGE_FRAME
    protocol.dataReceived(frame(payload))
    listener.turn()
    assert [r.ok for r in replies(transport.value())] == [True]
    assert [len(b) for b in recorder.batches] == [PIECE_EVENTS] * 3
    assert b"".join(b.payload for b in recorder.batches) == payload


def test_a_query_anywhere_in_a_large_msg_refuses_it_all() -> None:
    listener, recorder = recording()
    protocol, transport = listener.connect()
    query = pb.Msg(query=pb.Query(string="true")).SerializeToString()
    protocol.dataReceived(frame(events(0, 20_000) + query + events(1, 2)))
    listener.turn()
    (refused,) = replies(transport.value())
    assert not refused.ok and refused.error.startswith("queries are not supported")
    assert listener.source.queries == 1 and recorder.batches == []


def test_a_large_msg_cut_short_is_malformed() -> None:
    listener, recorder = recording()
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, 20_000) + b"\x32\x10abc"))
    listener.turn()
    (refused,) = replies(transport.value())
    assert not refused.ok and refused.error.startswith("malformed message: ")
    assert listener.source.malformed == 1 and recorder.batches == []


def test_a_large_msg_with_a_malformed_event_is_malformed() -> None:
    listener, recorder = recording()
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, 20_000) + b"\x32\x02\xff\xff" + events(1, 2)))
    listener.turn()
    (refused,) = replies(transport.value())
    assert not refused.ok and refused.error.startswith("malformed message: ")
    assert recorder.batches == []


def test_other_fields_in_a_large_msg_are_checked_and_left_out() -> None:
    listener, recorder = recording()
    protocol, transport = listener.connect()
    other = pb.Msg(ok=True, error="x").SerializeToString()
    payload = events(0, 20_000) + other + events(20_000, 5)
    protocol.dataReceived(frame(payload))
    listener.turn()
    assert [r.ok for r in replies(transport.value())] == [True]
    got = services([b.payload for b in recorder.batches])
    assert got == [f"n.{i}" for i in range(20_005)]


@pytest.mark.parametrize(
    ("group", "ok"),
    [
        (b"\x53\x08\x01\x5b\x10\x02\x5c\x54", True),  # field 10, holding a nested group
        (b"\x53\x08\x01\x5c", False),  # ended by another field's end-group tag
    ],
)
def test_a_group_field_in_a_large_msg_is_skipped_as_whole_decoding_does(
    group: bytes, ok: bool
) -> None:
    listener, recorder = recording()
    protocol, transport = listener.connect()
    payload = events(0, 20_000) + group + events(20_000, 5)
    if ok:  # as the protobuf parser, which takes it whole
        assert len(pb.Msg.FromString(payload).events) == 20_005
    else:
        with pytest.raises(DecodeError):
            pb.Msg.FromString(payload)
    protocol.dataReceived(frame(payload))
    listener.turn()
    (reply,) = replies(transport.value())
    assert reply.ok is ok
    if ok:
        got = services([b.payload for b in recorder.batches])
        assert got == [f"n.{i}" for i in range(20_005)]
    else:
        assert "malformed" in reply.error and recorder.batches == []


def test_a_large_msg_too_big_for_a_blocking_buffer_is_refused_before_any_piece() -> None:
    listener = Listener(output={"maxsize": 5000, "overflow": "block"})
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, 6000)) + frame(events(0, 1)))
    listener.turn()
    refused, ok = replies(transport.value())
    assert not refused.ok and "output recorded" in refused.error and "maxsize" in refused.error
    assert ok.ok
    assert listener.output is not None
    listener.clock.advance(0)
    assert [e.service for e in listener.output.written] == ["n.0"]


def test_a_lost_connection_still_gets_its_large_msg_delivered() -> None:
    listener, recorder = recording()
    protocol, transport = listener.connect()
    payload = events(0, 10_000)
    protocol.dataReceived(frame(payload) + frame(events(10_000, 1)))
    protocol.connectionLost(error.ConnectionLost())
    listener.turn()
    assert transport.value() == b""
    assert b"".join(b.payload for b in recorder.batches) == payload + events(10_000, 1)


def test_replies_keep_frame_order_around_a_large_msg() -> None:
    listener, recorder = recording(max_events=5)
    protocol, transport = listener.connect()
    protocol.dataReceived(
        frame(events(0, 1)) + frame(events(1, 20_000)) + frame(b"\x32\x00" * 6) + frame(b"\xff")
    )
    listener.turn()
    oks = [r.ok for r in replies(transport.value())]
    assert oks == [True, False, False, False]  # the large one is over max_events too
    listener2, recorder2 = recording(max_events=100_000)
    protocol2, transport2 = listener2.connect()
    protocol2.dataReceived(frame(events(1, 20_000)) + frame(events(0, 1)) + frame(b"\xff"))
    assert transport2.value() == b""
    listener2.turn()
    assert [r.ok for r in replies(transport2.value())] == [True, True, False]
    assert services([b.payload for b in recorder2.batches])[-1] == "n.0"


# -- the budget of bytes in large frames -----------------------------------------------------


def test_the_pending_budget_pauses_a_second_large_frame_until_the_first_is_handed_on() -> None:
    payload = events(0, 150, "d" * 1200)
    size = len(payload)
    assert size > SMALL_FRAME
    listener, recorder = recording(max_frame=size, max_pending_bytes=size * 3 // 2)
    budget = listener.source.budget
    first, firstTransport = listener.connect()
    second, secondTransport = listener.connect()
    one, two = frame(payload), frame(events(0, 150, "e" * 1200))
    assert len(two) == len(one)

    first.dataReceived(one[:1000])
    assert budget.used == size and firstTransport.producerState == "producing"
    second.dataReceived(two[:1000])
    assert secondTransport.producerState == "paused"
    assert listener.source.budgetPauses == 1 and budget.waiting == 1
    second.dataReceived(two[1000:5000])  # what was in flight still arrives: kept
    first.dataReceived(one[1000:])
    assert firstTransport.producerState == "paused"  # its ack is held while it is handed on
    listener.turn()
    assert [r.ok for r in replies(firstTransport.value())] == [True]
    assert firstTransport.producerState == "producing"
    assert secondTransport.producerState == "producing"
    assert budget.used == size  # the second one's reservation now
    second.dataReceived(two[5000:])
    listener.turn()
    assert [r.ok for r in replies(secondTransport.value())] == [True]
    assert budget.used == 0 and budget.waiting == 0
    descriptions = [
        e.description[0] for b in recorder.batches for e in pb.Msg.FromString(b.payload).events
    ]
    assert descriptions == ["d"] * 150 + ["e"] * 150


def test_a_lost_connection_gives_its_reservation_back() -> None:
    payload = events(0, 150, "d" * 1200)
    listener, recorder = recording(max_frame=len(payload), max_pending_bytes=len(payload))
    budget = listener.source.budget
    first, _ = listener.connect()
    second, secondTransport = listener.connect()
    first.dataReceived(frame(payload)[:1000])
    second.dataReceived(frame(payload)[:1000])
    assert secondTransport.producerState == "paused"
    first.connectionLost(error.ConnectionLost())
    assert secondTransport.producerState == "producing"
    second.connectionLost(error.ConnectionLost())
    assert budget.used == 0 and budget.waiting == 0


def test_max_pending_bytes_below_max_frame_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="max_pending_bytes: must be at least max_frame"):
        configure(RiemannTCP, {"service": "r", "max_frame": 1000, "max_pending_bytes": 999})
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile.fromDict(
            {
                "sources": [
                    {
                        "service": "r",
                        "source": "duct.sources.riemann.RiemannTCP",
                        "max_pending_bytes": 1024,
                    }
                ]
            }
        )
    (problem,) = raised.value.problems
    assert problem.key == "max_pending_bytes" and "max_frame" in problem.message


# -- connections -----------------------------------------------------------------------------


def test_a_connection_beyond_max_connections_is_refused_and_closed() -> None:
    listener, recorder = recording(max_connections=2)
    (a, aT), (_, bT) = listener.connect(), listener.connect()
    c, cT = listener.connect()
    (refused,) = replies(cT.value())
    assert not refused.ok and "max_connections" in refused.error
    assert cT.disconnecting and not aT.disconnecting and not bT.disconnecting
    assert listener.source.refusedConnections == 1 and len(listener.source.connections) == 2
    c.dataReceived(frame(events(0, 1)))  # ignored
    assert recorder.batches == []
    c.connectionLost(error.ConnectionDone())
    a.connectionLost(error.ConnectionDone())
    d, dT = listener.connect()
    d.dataReceived(frame(events(0, 1)))
    assert [r.ok for r in replies(dT.value())] == [True]


def test_an_idle_connection_is_closed_after_idle_timeout() -> None:
    listener, _ = recording(idle_timeout=10)
    protocol, transport = listener.connect()
    listener.clock.advance(9)
    protocol.dataReceived(frame(events(0, 1))[:3])  # a byte resets the clock
    listener.clock.advance(9)
    assert not transport.disconnecting
    listener.clock.advance(1)
    assert transport.disconnecting and listener.source.idleClosed == 1


def test_a_connection_whose_ack_is_held_is_not_idle() -> None:
    held: Deferred[None] = Deferred()
    listener = Listener(lambda batch: held, idle_timeout=10)
    protocol, transport = listener.connect()
    protocol.dataReceived(frame(events(0, 1)))
    listener.clock.advance(100)
    assert not transport.disconnecting
    held.callback(None)
    assert [r.ok for r in replies(transport.value())] == [True]
    listener.clock.advance(9.5)
    assert not transport.disconnecting
    listener.clock.advance(0.5)
    assert transport.disconnecting and listener.source.idleClosed == 1


def test_idle_timeout_zero_never_closes() -> None:
    listener, _ = recording(idle_timeout=0)
    protocol, transport = listener.connect()
    listener.clock.advance(10_000)
    assert not transport.disconnecting and not listener.clock.getDelayedCalls()
