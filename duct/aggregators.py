"""Aggregation functions: turn successive samples of a series into a rate.

Each takes ``(previous, current, seconds)``: the metric of the previous
sample of the same series (same `Event.eid`), this sample's metric, and the
seconds between them.  It returns the new metric, or None when the pair
yields no meaningful value (the event is then not emitted).
"""

from __future__ import annotations

from collections.abc import Callable

Aggregator = Callable[[float, float, float], "float | None"]

_WRAP32 = 2**32
_WRAP64 = 2**64


def Counter(a: float, b: float, delta: float) -> float | None:
    """Per-second rate of a counter that only grows; a reset yields nothing."""
    if delta <= 0 or b < a:
        return None
    return (b - a) / delta


def _wrapping(limit: int, resetsBelow: int = 0) -> Aggregator:
    """A counter that wraps past ``limit``.

    A decrease from a value below ``resetsBelow`` is taken as a reset (the
    device or process restarted), not a wrap, and yields nothing.
    """

    def counter(a: float, b: float, delta: float) -> float | None:
        if delta <= 0:
            return None
        if b < a:
            if a >= limit or a < resetsBelow:
                return None
            return (limit - a + b) / delta
        return (b - a) / delta

    return counter


Counter32 = _wrapping(_WRAP32)
Counter32.__name__ = Counter32.__qualname__ = "Counter32"
Counter32.__doc__ = "Per-second rate of a 32-bit counter, which may wrap past 2**32."

# A 64-bit counter takes centuries to wrap from below 2**63; a decrease from
# there is a reset, and treating it as a wrap would report ~1.8e19 per second.
Counter64 = _wrapping(_WRAP64, resetsBelow=2**63)
Counter64.__name__ = Counter64.__qualname__ = "Counter64"
Counter64.__doc__ = (
    "Per-second rate of a 64-bit counter, which may wrap past 2**64; "
    "a decrease from below 2**63 is a reset and yields nothing."
)


def Rate(a: float, b: float, delta: float) -> float | None:
    """Per-second rate of change, which may be negative."""
    if delta <= 0:
        return None
    return (b - a) / delta


def Delta(a: float, b: float, delta: float) -> float | None:
    """The difference between successive samples."""
    return b - a
