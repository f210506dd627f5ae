"""What the Riemann outputs share: queueing events as their encoded bytes.

`duct.outputs.riemann.RiemannTCP` and `RiemannUDP` both queue events as
their encoded Riemann bytes, never as `Event` objects: a queued event then
costs its encoded size plus `ENCODED_OVERHEAD` (`sizesOf`), and events
relayed from a Riemann listener (`EncodedEvents`) are never decoded on the
way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from duct.event import Event
from duct.protocol.riemann import DecodeError, EncodedEvents, encodeEvent, msgFromEncoded, pb


def hostList(value: Any) -> list[str]:
    """``server`` as a list of hosts: a list, or one (comma-separated) string."""
    if isinstance(value, str):
        value = value.split(",")
    hosts = [str(host).strip() for host in value or () if str(host).strip()]
    return hosts or ["localhost"]


def isNaNMetric(event: Event) -> bool:
    metric = event.metric
    return isinstance(metric, float) and not math.isfinite(metric)


def _invalid(event: Event, allowNaN: bool, allowMissing: bool) -> bool:
    """Whether ``event`` is left out: a NaN or infinite metric, or none at all."""
    if event.metric is None:
        return not allowMissing
    return not allowNaN and isNaNMetric(event)


def _deadline(message: pb.Event, now: float) -> float:
    if not message.HasField("ttl"):
        return math.inf
    if message.HasField("time_micros"):
        when = message.time_micros / 1_000_000
    elif message.HasField("time"):
        when = float(message.time)
    else:
        when = now  # Riemann stamps such an event when it arrives
    return when + message.ttl


class Queued(NamedTuple):
    """Events encoded for a buffer, and what was left out."""

    encoded: list[bytes]
    deadlines: list[float] | None
    invalid: int
    """`Event` objects left out for their metric (NaN, infinite, or none)."""
    failed: list[int]
    """Indices of the `Event` objects that could not be encoded."""
    error: Exception | None
    """The first encoding error, when ``failed`` is not empty."""


def encodeForQueue(
    events: Sequence[Event] | EncodedEvents,
    allowNaN: bool = True,
    withDeadlines: bool = False,
    now: float = 0.0,
    allowMissing: bool = True,
) -> Queued:
    """Encode events for a buffer: `Queued`.

    `EncodedEvents` pass through as they are; they are decoded (time and
    ttl only) when deadlines are asked for.  Their metrics are not checked
    for NaN: that would cost a decode per relayed event.  ``invalid`` counts
    the `Event` objects left out because their metric is NaN or infinite
    and ``allowNaN`` is false, or because they have no metric and
    ``allowMissing`` is false, and ``failed`` lists those `encodeEvent`
    refused (text that is not valid Unicode, a metric that is not a
    number): each is left out, never the whole list.
    """
    if isinstance(events, EncodedEvents):
        encoded = events.encoded
        if not withDeadlines:
            return Queued(encoded, None, 0, [], None)
        deadlines = []
        for data in encoded:
            try:
                deadlines.append(_deadline(pb.Event.FromString(data), now))
            except DecodeError:
                deadlines.append(math.inf)
        return Queued(encoded, deadlines, 0, [], None)
    out: list[bytes] = []
    kept: list[float] | None = [] if withDeadlines else None
    invalid = 0
    try:
        for event in events:
            if _invalid(event, allowNaN, allowMissing):
                invalid += 1
                continue
            out.append(encodeEvent(event))
            if kept is not None:
                kept.append(event.time + event.ttl if event.ttl is not None else math.inf)
    except Exception:
        return _encodeOneByOne(events, allowNaN, withDeadlines, allowMissing)
    return Queued(out, kept, invalid, [], None)


def _encodeOneByOne(
    events: Sequence[Event], allowNaN: bool, withDeadlines: bool, allowMissing: bool
) -> Queued:
    """`encodeForQueue` for a list where some event does not encode: find which."""
    out: list[bytes] = []
    kept: list[float] | None = [] if withDeadlines else None
    invalid = 0
    failed: list[int] = []
    error: Exception | None = None
    for index, event in enumerate(events):
        if _invalid(event, allowNaN, allowMissing):
            invalid += 1
            continue
        try:
            data = encodeEvent(event)
            deadline = (
                event.time + event.ttl if withDeadlines and event.ttl is not None else math.inf
            )
        except Exception as e:
            failed.append(index)
            error = error or e
            continue
        out.append(data)
        if kept is not None:
            kept.append(deadline)
    return Queued(out, kept, invalid, failed, error)


def entrySize(length: int) -> int:
    """Bytes one encoded event of ``length`` bytes takes inside a Msg."""
    return 1 + (max(length.bit_length(), 1) + 6) // 7 + length


def entries(encoded: list[bytes]) -> list[bytes]:
    """Each encoded event as a Msg of its own (its ``events`` field): items that
    concatenate into one Msg."""
    return [msgFromEncoded((data,)) for data in encoded]
