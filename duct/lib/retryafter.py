"""``Retry-After``: how long an HTTP server asks a client to wait (RFC 9110, 10.2.3)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

__all__ = ["retryAfter"]


def retryAfter(value: str | bytes | None, now: float) -> float | None:
    """Seconds to wait from ``now`` (epoch seconds) by a ``Retry-After`` value, or None.

    The value is a number of seconds or an HTTP date; a date in the past
    means 0, and a value that is neither means None (the caller's own
    backoff applies).
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)
