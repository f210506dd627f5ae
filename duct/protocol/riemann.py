"""Riemann's wire format: protobuf messages, each behind a 4-byte length.

Events cross duct in two forms.  A source that reads Riemann keeps a
client's Msg as it came (`EncodedEvents`: its events' bytes, parsed once
to check them), and an output that writes Riemann sends those bytes on
unchanged: serialized Msgs that hold only events concatenate into one
valid Msg, so a relay does no per-event work unless a stage needs
`Event` objects.  Everything else uses `duct.objects.Event`, converted
here in both directions.  `sizesOf` is the one estimate of what events
cost in memory, in either form.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.message import DecodeError

from duct.event import Event
from duct.protocol import riemann_pb2 as pb

__all__ = [
    "ENCODED_OVERHEAD",
    "EVENT_OVERHEAD",
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
    "repairs",
    "sizesOf",
    "splitPayload",
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


def splitPayload(payload: bytes) -> list[bytes]:
    """The encoded events of a serialized Msg that holds only events (`msgFromEncoded` undone).

    Raises DecodeError if ``payload`` holds anything else or is cut short.
    """
    out: list[bytes] = []
    append = out.append
    view = memoryview(payload)
    end = len(payload)
    i = 0
    while i < end:
        if payload[i] != 0x32:
            raise DecodeError(f"not an events field at byte {i}")
        i += 1
        size = shift = 0
        while True:
            if i >= end:
                raise DecodeError("truncated length")
            byte = payload[i]
            i += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        if i + size > end:
            raise DecodeError("truncated event")
        append(bytes(view[i : i + size]))
        i += size
    return out


# -- bytes -> Event -------------------------------------------------------------------


_ATTRIBUTES_TAG = b"\x4a"


def decodeMsg(data: bytes) -> pb.Msg:
    """Parse a serialized Msg; raises DecodeError when it is malformed or misses a
    required field."""
    msg = pb.Msg.FromString(data)
    # The one required field is an Attribute's key, and IsInitialized costs
    # more than the parse: bytes without an attributes tag anywhere (0x4A,
    # Event field 9) hold no Attribute, so they need no check.
    if _ATTRIBUTES_TAG in data and not msg.IsInitialized():
        missing = ", ".join(msg.FindInitializationErrors())
        raise DecodeError(f"Message riemann.Msg is missing required fields: {missing}")
    return msg


def eventFromProto(message: pb.Event) -> Event:
    """A duct Event from a protobuf Event, keeping every field.

    ``time_micros`` wins over ``time``; the metric is read from
    ``metric_sint64``, then ``metric_d``, then ``metric_f``.  Text that
    is not valid UTF-8 (the parser hands it over as bytes) is repaired,
    each bad sequence becoming U+FFFD, as Riemann's own server reads it;
    `repairs` counts the events that needed it.
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
    event = Event(
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
    # Cheap when all is text: one C-level type test per field.
    if (
        type(event.service) is bytes
        or type(event.hostname) is bytes
        or type(event.description) is bytes
        or type(event.state) is bytes
        or (event.tags and _hasBytes(event.tags))
        or (attributes and (_hasBytes(attributes) or _hasBytes(attributes.values())))
    ):
        _repair(event)
    return event


def _hasBytes(values: Iterable[Any]) -> bool:
    try:
        "".join(values)
    except TypeError:
        return True
    return False


class Repairs:
    """How many decoded events had text that was not UTF-8 (see `eventFromProto`).

    One count for the process: a reader takes the difference across its
    own decoding (`EncodedEvents.decode` does, for its events).
    """

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events = 0


repairs = Repairs()


def _text(value: Any) -> Any:
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    return value


def _repair(event: Event) -> None:
    repairs.events += 1
    event.service = _text(event.service)
    event.hostname = _text(event.hostname)
    event.description = _text(event.description)
    event.state = _text(event.state)
    if event.tags:
        event.tags = [_text(tag) for tag in event.tags]
    if event.attributes:
        event.attributes = {_text(k): _text(v) for k, v in event.attributes.items()}


def decodeEvent(encoded: bytes) -> Event:
    """A duct Event from one serialized Riemann Event."""
    return eventFromProto(pb.Event.FromString(encoded))


class EncodedEvents(Sequence[bytes]):
    """Events that arrived over Riemann, kept as their encoded bytes.

    Built from a client's Msg (`fromMsg`: the Msg's own bytes, with its
    event count) or from a list of encoded events.  `payload` is them all
    as one serialized Msg, `encoded` one bytes per event; each is made
    from the other only when asked for.  The pipeline hands these unchanged
    to outputs that speak Riemann (``acceptsEncoded``), and decodes them
    once, on demand, for any other output or stage that needs `Event`
    objects.
    """

    __slots__ = ("_payload", "_encoded", "_count", "_decoded", "repaired")

    def __init__(self, encoded: list[bytes]) -> None:
        self._encoded: list[bytes] | None = encoded
        self._payload: bytes | None = None
        self._count = len(encoded)
        self._decoded: list[Event] | None = None
        self.repaired = 0
        """How many of these events had text repaired when `decode` decoded them."""

    @classmethod
    def fromPayload(cls, payload: bytes, count: int) -> EncodedEvents:
        """``count`` events as one serialized Msg that holds only events."""
        self = cls.__new__(cls)
        self._payload = payload
        self._encoded = None
        self._count = count
        self._decoded = None
        self.repaired = 0
        return self

    @classmethod
    def fromMsg(cls, msg: pb.Msg, data: bytes | None = None) -> EncodedEvents:
        """The events of a parsed Msg; ``data``, the bytes it was parsed from, is kept
        as it is when the Msg holds nothing but events."""
        if data is None or len(msg.ListFields()) > 1:
            events = pb.Msg()
            events.events.MergeFrom(msg.events)
            data = events.SerializeToString()
        self = cls.__new__(cls)
        self._payload = data
        self._encoded = self._decoded = None
        self._count = len(msg.events)
        self.repaired = 0
        return self

    @property
    def payload(self) -> bytes:
        """The events as one serialized Msg (not framed)."""
        if self._payload is None:
            self._payload = msgFromEncoded(self._encoded or ())
        return self._payload

    @property
    def encoded(self) -> list[bytes]:
        """Each event's own bytes, in order."""
        if self._encoded is None:
            payload = self._payload or b""
            try:
                self._encoded = splitPayload(payload)
            except DecodeError:  # a client's Msg with fields unknown to us beside its events
                self._encoded = [event.SerializeToString() for event in decodeMsg(payload).events]
        return self._encoded

    @property
    def nbytes(self) -> int:
        """What these events cost held as one payload, by `sizesOf`'s measure."""
        payload = self._payload
        if payload is not None:
            return len(payload) + ENCODED_OVERHEAD
        return sum(map(len, self._encoded or ())) + ENCODED_OVERHEAD * self._count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # noqa: ANN001
        return self.encoded[index]

    def decode(self) -> list[Event]:
        """The events as `Event` objects, decoded once and kept."""
        if self._decoded is None:
            before = repairs.events
            self._decoded = self.decodeNow()
            self.repaired = repairs.events - before
        return self._decoded

    def decodeNow(self) -> list[Event]:
        """The events as `Event` objects, decoded anew (nothing kept)."""
        if self._payload is not None:
            return [eventFromProto(event) for event in decodeMsg(self._payload).events]
        return [decodeEvent(encoded) for encoded in self._encoded or ()]


# -- sizes ------------------------------------------------------------------------------

EVENT_OVERHEAD = 160
"""What a held `Event` costs beyond its strings: the slotted object, its
float time, its place in a buffer and the size kept beside it."""

ENCODED_OVERHEAD = 50
"""What one held bytes object costs beyond its length: its header and its
size and deadline kept beside it."""


def _attributesSize(attributes: dict[str, Any]) -> int:
    return 232 + sum(len(str(k)) + len(str(v)) + 98 for k, v in attributes.items())


def eventSize(event: Event) -> int:
    """An estimate of the memory one held event takes, in bytes."""
    size = EVENT_OVERHEAD + len(event.service or "") + len(event.hostname or "")
    if event.description:
        size += len(event.description)
    if event.tags:
        size += 56 + sum(len(tag) + 49 for tag in event.tags)
    if event.attributes:
        size += _attributesSize(event.attributes)
    return size


def sizesOf(items: Sequence[Event] | Sequence[bytes] | EncodedEvents) -> list[int]:
    """What each item costs held in memory: an `Event` by its fields, bytes by length.

    The one measure the buffers, the Riemann outputs and the event ring
    use.  Written as one comprehension for the hot path; an event whose
    fields have unexpected types (a plugin's mistake) is counted field by
    field, at a fixed size for what has no length.
    """
    events: Any = items.encoded if isinstance(items, EncodedEvents) else items
    if events and isinstance(events[0], (bytes, bytearray)):
        return [len(item) + ENCODED_OVERHEAD for item in events]
    try:
        return [
            EVENT_OVERHEAD
            + len(e.service)
            + len(e.hostname)
            + len(e.description or "")
            + ((56 + 49 * len(t) + len("".join(t))) if (t := e.tags) else 0)
            + (_attributesSize(a) if (a := e.attributes) else 0)
            for e in events
        ]
    except TypeError:
        return [_safeSize(item) for item in events]


def _safeSize(item: Any) -> int:
    if isinstance(item, (bytes, bytearray)):
        return len(item) + ENCODED_OVERHEAD
    try:
        return eventSize(item)
    except TypeError:
        return EVENT_OVERHEAD
