"""JSON as duct writes it: always valid, with NaN and infinities as null.

JSON has no NaN or infinity, and the standard library writes them as bare
``NaN`` and ``Infinity``, which strict parsers refuse.  The encoders here
refuse them too (``allow_nan=False``) and, only when that happens, encode
again with `finite` applied: the common case costs one encode and nothing
more.  A value JSON cannot represent (a stray object in an attribute) is
written as its ``str``, so that one odd event cannot block an output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from duct.event import Event

__all__ = ["dumps", "eventArray", "eventJson", "eventLines", "finite", "finiteNumber"]

# Built once: json.dumps with keyword arguments builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str).encode
_pretty = json.JSONEncoder(indent=1, sort_keys=True, allow_nan=False, default=str).encode


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float, at any depth, replaced by None.

    Dictionaries, lists and tuples are copied (a tuple becomes a list, as
    JSON would write it anyway); anything else is returned as it is.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def finiteNumber(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else None (NaN, text, None)."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def dumps(value: Any, pretty: bool = False) -> str:
    """``value`` as JSON: compact, or indented with sorted keys for people to read."""
    encode = _pretty if pretty else _compact
    try:
        return encode(value)
    except ValueError:
        return encode(finite(value))


def eventJson(event: Event, seq: int | None = None) -> str:
    """One event as compact JSON: `Event.asDict`, after its ``seq`` when one is given."""
    data = event.asDict() if seq is None else {"seq": seq, **event.asDict()}
    try:
        return _compact(data)
    except ValueError:
        return _compact(finite(data))


def eventArray(events: Sequence[Event]) -> str:
    """The events as one compact JSON array, encoded in one call ("[]" for no events)."""
    try:
        return _compact([event.asDict() for event in events])
    except ValueError:  # rare: some event carries NaN or infinity
        return "[" + ",".join([eventJson(event) for event in events]) + "]"


def eventLines(events: Sequence[Event]) -> str:
    """The events as JSON lines, each ending in a newline ("" for no events)."""
    try:
        lines = [_compact(event.asDict()) for event in events]
    except ValueError:  # rare: some event carries NaN or infinity
        lines = [eventJson(event) for event in events]
    lines.append("")
    return "\n".join(lines)
