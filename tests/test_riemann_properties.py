"""Properties of the Riemann listener's decoding: whatever a client sends, it answers.

Any payload given to ``receive`` gets a reply, ``ok`` true or false, at once
or from a Deferred once the clock turns; nothing raises.  And a Msg checked
in steps (`duct.sources.riemann_large`) gets the same verdict, and hands on
the same events, as one parsed at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from duct.protocol.riemann import EncodedEvents, pb
from duct.sources import riemann, riemann_large
from duct.sources.riemann import RiemannTCP
from duct.testing import FakeDuct, configure

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def listener(**config: Any) -> tuple[RiemannTCP, list[EncodedEvents], MemoryReactorClock]:
    clock = MemoryReactorClock()
    received: list[EncodedEvents] = []
    source = RiemannTCP(
        configure(RiemannTCP, {"service": "riemann", **config}), received.append, FakeDuct(clock)
    )
    return source, received, clock


def reply(source: RiemannTCP, clock: MemoryReactorClock, data: bytes) -> pb.Msg:
    """The reply to ``data``, turning the clock if it comes later; it must be one framed Msg."""
    result = source.receive(data)
    if isinstance(result, Deferred):
        replies: list[bytes] = []
        result.addCallback(replies.append)
        clock.advance(0)
        assert replies, "a held reply never came"
        result = replies[0]
    assert isinstance(result, bytes)
    length = int.from_bytes(result[:4], "big")
    assert length == len(result) - 4
    msg = pb.Msg.FromString(result[4:])
    assert msg.HasField("ok")
    assert msg.ok or msg.error
    return msg


@contextmanager
def stepped(pieceEvents: int = 3, pieceBytes: int = 40) -> Iterator[None]:
    """Every Msg goes through the stepped path, in tiny pieces."""
    with (
        mock.patch.object(riemann, "LARGE_FRAME", -1),
        mock.patch.object(riemann_large, "PIECE_EVENTS", pieceEvents),
        mock.patch.object(riemann_large, "PIECE_BYTES", pieceBytes),
    ):
        yield


# -- strategies -------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_events = st.builds(
    lambda service, host, metric, tags: pb.Event(
        service=service, host=host, metric_sint64=metric, tags=tags
    ).SerializeToString(),
    st.text(max_size=8),
    st.text(max_size=4),
    st.integers(-(2**63), 2**63 - 1),
    st.lists(st.text(max_size=3), max_size=2),
)


@st.composite
def field(draw: Any) -> bytes:
    """One top-level field: mostly events, sometimes another Msg field or a stray one."""
    kind = draw(st.sampled_from(["event"] * 6 + ["empty", "ok", "error", "query", "other", "raw"]))
    if kind == "event":
        event = draw(_events)
        return b"\x32" + varint(len(event)) + event
    if kind == "empty":
        return b"\x32\x00"
    if kind == "ok":
        return b"\x10" + varint(draw(st.integers(0, 2**64 - 1)))
    if kind == "error":
        text = draw(st.text(max_size=10)).encode()
        return b"\x1a" + varint(len(text)) + text
    if kind == "query":
        return pb.Msg(query=pb.Query(string=draw(st.text(max_size=5)))).SerializeToString()
    if kind == "other":  # an unknown field of any plain wire type
        number = draw(st.integers(7, 200))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        key = varint(number << 3 | wire)
        if wire == 0:
            return key + varint(draw(st.integers(0, 2**64 - 1)))
        if wire == 1:
            return key + draw(st.binary(min_size=8, max_size=8))
        if wire == 5:
            return key + draw(st.binary(min_size=4, max_size=4))
        body = draw(st.binary(max_size=6))
        return key + varint(len(body)) + body
    return draw(st.binary(max_size=6))  # anything at all: often malformed


messages = st.lists(field(), max_size=12).map(b"".join)


# -- properties -------------------------------------------------------------------------


@SETTINGS
@given(st.binary(max_size=300))
def test_any_bytes_get_a_reply(data: bytes) -> None:
    source, _, clock = listener()
    reply(source, clock, data)
    with stepped():
        source, _, clock = listener()
        reply(source, clock, data)


@SETTINGS
@given(messages, st.integers(1, 30))
def test_any_msg_gets_a_reply_within_max_events(data: bytes, maxEvents: int) -> None:
    source, received, clock = listener(max_events=maxEvents)
    msg = reply(source, clock, data)
    assert sum(map(len, received)) <= maxEvents
    if not msg.ok:
        assert received == []


@SETTINGS
@given(messages)
def test_stepped_and_whole_decoding_agree(data: bytes) -> None:
    whole, wholeReceived, wholeClock = listener()
    expected = reply(whole, wholeClock, data)
    with stepped():
        source, received, clock = listener()
        got = reply(source, clock, data)
    if b"\x32" in data and not expected.ok and got.ok:
        raise AssertionError(f"stepped accepted what whole refused: {expected.error}")
    if expected.ok and "padded events tag" not in got.error:
        # An events tag written in more bytes than it needs is refused by the steps
        # alone, on purpose: they find the events by their one-byte tag.
        assert got.ok, got.error
        events = [e for batch in wholeReceived for e in pb.Msg.FromString(batch.payload).events]
        steppedEvents = [e for batch in received for e in pb.Msg.FromString(batch.payload).events]
        assert steppedEvents == events
        assert all(len(batch) <= 3 for batch in received)
    else:
        # Both refuse; the steps stop at the first problem, which may be another one.
        assert not got.ok
        assert received == []
