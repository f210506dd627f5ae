"""Large Riemann Msgs, checked and handed on a bounded step at a time.

A Msg above `LARGE_FRAME` bytes or `PIECE_EVENTS` events is not parsed in
one call, which could hold the reactor for seconds: `scan` walks its
top-level fields in Python, a bounded number of fields and bytes per
step, and checks each run of events it cuts with `decodeMsg` (a run of
``events`` fields is itself a valid Msg).  It stops at the first problem:
a malformed field, a query, or more events than the listener accepts.

Once the whole Msg is checked, `receiveInSteps` hands its events to the
pipeline as `EncodedEvents` pieces of at most `PIECE_EVENTS` events, one
piece per reactor turn, each waiting for its own room, so that a piece is
small enough to be decoded in a few milliseconds for an output that needs
`Event` objects.  The reply is the Msg's: ``ok: true`` once every piece is
in every routed buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Error as ProtobufError
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from duct.errors import TooLarge
from duct.protocol.riemann import ENCODED_OVERHEAD, EncodedEvents, decodeMsg

if TYPE_CHECKING:
    from duct.sources.riemann import _RiemannListener

__all__ = ["LARGE_FRAME", "PIECE_BYTES", "PIECE_EVENTS", "Refused", "receiveInSteps", "scan"]

LARGE_FRAME = 64 * 1024
"""Msgs above this many bytes are checked in steps."""

PIECE_EVENTS = 1000
"""The most events in one piece, and Msgs with more are handed on in steps:
decoding 1,000 events into `Event` objects takes a few milliseconds."""

PIECE_BYTES = 256 * 1024
"""The most bytes one step reads, unless a single field is larger."""

_EVENTS = 0x32  # field 6 (events), wire type 2
_QUERY = 5


class Refused(Exception):
    """The Msg cannot be taken: ``stat`` names the counter, ``reason`` the error."""

    def __init__(self, stat: str, reason: str) -> None:
        super().__init__(reason)
        self.stat = stat
        self.reason = reason


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end:
            raise Refused("malformed", f"malformed message: truncated varint at byte {i}")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift >= 70:
            raise Refused("malformed", f"malformed message: varint too long at byte {i}")


def _skipValue(data: bytes, i: int, end: int, key: int) -> int:
    """Where the value of field ``key`` that starts at ``i`` ends; a group is skipped whole."""
    wire = key & 7
    if wire == 0:
        _, i = _varint(data, i, end)
    elif wire == 1:
        i += 8
    elif wire == 2:
        size, i = _varint(data, i, end)
        i += size
    elif wire == 5:
        i += 4
    elif wire == 3:  # a group (an old form of nested field): up to its own end-group tag
        while True:
            inner, i = _varint(data, i, end)
            if inner & 7 == 4:
                if inner >> 3 != key >> 3:
                    raise Refused("malformed", f"malformed message: unmatched group end at {i}")
                break
            i = _skipValue(data, i, end, inner)
    else:
        raise Refused("malformed", f"malformed message: unsupported wire type {wire} at byte {i}")
    if i > end:
        raise Refused("malformed", f"malformed message: truncated field at byte {i}")
    return i


def _check(piece: bytes) -> Any:
    try:
        return decodeMsg(piece)
    except ProtobufError as e:
        raise Refused("malformed", f"malformed message: {e}") from None


def scan(data: bytes, maxEvents: int) -> Iterator[tuple[int, int, int] | None]:
    """Walk the top-level fields of the serialized Msg ``data``, one bounded step per item.

    Yields ``(start, stop, count)`` for each checked run of ``count`` events
    fields, ``data[start:stop]``, of at most `PIECE_EVENTS` events and
    `PIECE_BYTES` bytes (or one larger event); None after a step through
    other fields.  Raises `Refused` for a malformed field, a query, or once
    more than ``maxEvents`` events are seen.
    """
    end = len(data)
    i = total = 0
    while i < end:
        start = i
        limit = start + PIECE_BYTES
        count = 0
        while i < end and count < PIECE_EVENTS and i < limit and data[i] == _EVENTS:
            if i + 1 < end and data[i + 1] < 0x80:  # the usual one-byte length
                size, i = data[i + 1], i + 2
            else:
                size, i = _varint(data, i + 1, end)
            i += size
            if i > end:
                raise Refused("malformed", f"malformed message: truncated event at byte {start}")
            count += 1
        if count:
            total += count
            if total > maxEvents:
                raise Refused(
                    "tooMany",
                    f"too many events: more than {maxEvents} in one message (max_events)",
                )
            _check(data[start:i])
            yield start, i, count
            continue
        fields = 0
        while i < end and fields < PIECE_EVENTS and i < limit and data[i] != _EVENTS:
            fieldStart = i
            key, i = _varint(data, i, end)
            i = _skipValue(data, i, end, key)
            if key == _EVENTS:  # an events tag written in more bytes than it needs
                raise Refused(
                    "malformed", f"malformed message: padded events tag at byte {fieldStart}"
                )
            if _check(data[fieldStart:i]).HasField("query"):
                raise Refused("queries", "query")
            fields += 1
        yield None


async def _turn(listener: _RiemannListener) -> None:
    """Let the reactor run before the next step."""
    listener.decodeSteps += 1
    await deferLater(listener.clock, 0, lambda: None)


async def _receive(listener: _RiemannListener, data: bytes) -> bytes:
    """Check ``data`` in steps, then hand its events on in pieces; the reply."""
    from duct.sources.riemann import OK, QUERY_REFUSED, REFUSED  # it imports this module

    pieces: list[tuple[int, int, int]] = []
    total = 0
    try:
        for piece in scan(data, listener.maxEvents):
            if piece is not None:
                pieces.append(piece)
                total += piece[2]
            await _turn(listener)
        if not total:
            return OK
        nbytes = sum(stop - start for start, stop, _ in pieces) + ENCODED_OVERHEAD * len(pieces)
        checkFits = getattr(listener.queueBack, "checkFits", None)
        if checkFits is not None:
            checkFits(total, nbytes)
    except Refused as e:
        if e.stat == "queries":
            listener.queries += 1
            return QUERY_REFUSED
        return listener.refuse(e.stat, e.reason, total)
    except TooLarge as e:
        return listener.refuse("tooLarge", str(e), total)
    listener.countMsg(total)
    view = memoryview(data)
    held = False
    for n, (start, stop, count) in enumerate(pieces):
        if n:
            await _turn(listener)
        events = EncodedEvents.fromPayload(bytes(view[start:stop]), count)
        if listener.debug:
            listener.logEvents(events)
        try:
            result = listener.queueBack(events)
            if isinstance(result, Deferred):
                if not held:
                    held = True
                    listener.held += 1
                await result
            listener.repaired += events.repaired
        except TooLarge as e:  # routed anew to a smaller output meanwhile
            return listener.refuse("tooLarge", str(e), total)
        except Exception:
            listener.errors += 1
            listener.log.failure(
                "riemann listener {source}: events lost in the pipeline", source=listener.service
            )
            return REFUSED
    return OK


def receiveInSteps(listener: _RiemannListener, data: bytes) -> Deferred[bytes]:
    """The reply to the large Msg ``data``, once checked and handed on in steps."""
    from duct.sources.riemann import REFUSED

    listener.stepped += 1
    listener.waiting += 1

    def done(result: bytes | Failure) -> bytes:
        listener.waiting -= 1
        if isinstance(result, Failure):
            listener.errors += 1
            listener.log.failure(
                "riemann listener {source}: a large message failed",
                result,
                source=listener.service,
            )
            return REFUSED
        return result

    return Deferred.fromCoroutine(_receive(listener, data)).addBoth(done)
