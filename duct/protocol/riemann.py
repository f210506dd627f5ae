"""Riemann's wire format: protobuf messages, each behind a 4-byte length.

Events cross duct in two forms.  A source that reads Riemann keeps each
event as its encoded bytes (`EncodedEvents`), and an output that writes
Riemann sends those bytes on unchanged, so a relay never builds a Python
object per event unless a stage needs one.  Everything else uses
`duct.objects.Event`, converted here in both directions.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

from google.protobuf.message import DecodeError

from duct.event import Event
from duct.protocol import riemann_pb2 as pb

__all__ = [
    "DecodeError",
    "EncodedEvents",
    "MAX_DATAGRAM",
    "ack",
    "decodeEvent",
    "decodeMsg",
    "encodeEvent",
    "eventFromProto",
    "frame",
    "msgFromEncoded",
    "pb",
]

MAX_DATAGRAM = 16384
"""The largest UDP datagram a Riemann server reads."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_LENGTH = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """Prefix a serialized Msg with its length, as Riemann's TCP transport does."""
    return _LENGTH.pack(len(payload)) + payload


def ack(ok: bool = True, error: str | None = None) -> bytes:
    """A framed reply Msg."""
    if ok and error is None:
        return _OK
    msg = pb.Msg(ok=ok)
    if error is not None:
        msg.error = error
    return frame(msg.SerializeToString())


_OK = frame(pb.Msg(ok=True).SerializeToString())


# -- Event -> bytes -----------------------------------------------------------------


def _setMetric(message: pb.Event, metric: object) -> None:
    if metric is None or isinstance(metric, bool):
        return
    if isinstance(metric, int) and _INT64_MIN <= metric <= _INT64_MAX:
        message.metric_sint64 = metric
    else:
        metric = float(metric)  # type: ignore[arg-type]
        message.metric_d = metric
    value = float(metric)
    if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        value = math.copysign(math.inf, value)
    message.metric_f = value


def toProto(event: Event, message: pb.Event | None = None) -> pb.Event:
    """Fill a protobuf Event from a duct Event: time in seconds and in microseconds."""
    if message is None:
        message = pb.Event()
    when = event.time
    message.time = int(when)
    message.time_micros = round(when * 1_000_000)
    if event.state is not None:
        message.state = event.state
    message.service = event.service
    message.host = event.hostname
    if event.description is not None:
        message.description = event.description
    if event.tags:
        message.tags.extend(event.tags)
    if event.ttl is not None:
        message.ttl = event.ttl
    if event.attributes:
        for key, value in event.attributes.items():
            message.attributes.add(key=str(key), value=str(value))
    _setMetric(message, event.metric)
    return message


def encodeEvent(event: Event) -> bytes:
    """One Event, serialized as Riemann's Event message (not framed)."""
    return toProto(event).SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_EVENTS_TAG = b"\x32"  # field 6 (events), wire type 2 (length-delimited)
_SMALL_LENGTHS = [_EVENTS_TAG + _varint(n) for n in range(128)]


def msgFromEncoded(events: Iterable[bytes]) -> bytes:
    """A serialized Msg carrying already-encoded events (not framed).

    Concatenating each event as field 6 is exactly what protobuf would
    write for ``Msg(events=[...])``, without decoding anything.
    """
    parts: list[bytes] = []
    append = parts.append
    small = _SMALL_LENGTHS
    for encoded in events:
        size = len(encoded)
        append(small[size] if size < 128 else _EVENTS_TAG + _varint(size))
        append(encoded)
    return b"".join(parts)


# -- bytes -> Event -------------------------------------------------------------------


def decodeMsg(data: bytes) -> pb.Msg:
    """Parse a serialized Msg; raises DecodeError when it is malformed."""
    return pb.Msg.FromString(data)


def eventFromProto(message: pb.Event) -> Event:
    """A duct Event from a protobuf Event, keeping every field.

    ``time_micros`` wins over ``time``; the metric is read from
    ``metric_sint64``, then ``metric_d``, then ``metric_f``.
    """
    if message.HasField("time_micros"):
        when: float | None = message.time_micros / 1_000_000
    elif message.HasField("time"):
        when = float(message.time)
    else:
        when = None
    metric: float | None
    if message.HasField("metric_sint64"):
        metric = message.metric_sint64
    elif message.HasField("metric_d"):
        metric = message.metric_d
    elif message.HasField("metric_f"):
        metric = message.metric_f
    else:
        metric = None
    attributes = {a.key: a.value for a in message.attributes} if message.attributes else None
    return Event(
        message.state if message.HasField("state") else None,
        message.service,
        message.description if message.HasField("description") else None,
        metric,
        message.ttl if message.HasField("ttl") else None,
        tags=list(message.tags),
        hostname=message.host if message.HasField("host") else None,
        evtime=when,
        attributes=attributes,
    )


def decodeEvent(encoded: bytes) -> Event:
    """A duct Event from one serialized Riemann Event."""
    return eventFromProto(pb.Event.FromString(encoded))


class EncodedEvents(Sequence[bytes]):
    """Events that arrived over Riemann, kept as their encoded bytes.

    The pipeline hands these unchanged to outputs that speak Riemann
    (``acceptsEncoded``), and decodes them once, on demand, for any other
    output or stage that needs `Event` objects.
    """

    __slots__ = ("encoded", "_decoded")

    def __init__(self, encoded: list[bytes]) -> None:
        self.encoded = encoded
        self._decoded: list[Event] | None = None

    @classmethod
    def fromMsg(cls, msg: pb.Msg) -> EncodedEvents:
        return cls([event.SerializeToString() for event in msg.events])

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index):  # noqa: ANN001
        return self.encoded[index]

    def decode(self) -> list[Event]:
        if self._decoded is None:
            self._decoded = [decodeEvent(encoded) for encoded in self.encoded]
        return self._decoded
