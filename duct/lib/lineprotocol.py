"""InfluxDB line protocol: one point as one line of text.

``measurement,tag=value field=1.5,text="a b" 1700000000000000``

Measurements escape commas and spaces; tag keys, tag values and field
keys escape commas, equals signs and spaces; string field values are
quoted, with double quotes and backslashes escaped.  Integers carry an
``i``, booleans are ``t`` or ``f``, floats are written as Python's
shortest round-tripping form.  What line protocol cannot carry raises
`LineProtocolError` (a ValueError): a newline in a measurement, a tag or
a field key, an empty name, NaN or an infinite number, a point with no
field.  Tags with an empty value are left out, as InfluxDB requires.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from typing import Union

__all__ = [
    "PRECISIONS",
    "FieldValue",
    "LineProtocolError",
    "escapeKey",
    "escapeMeasurement",
    "formatField",
    "line",
    "timestamp",
]

FieldValue = Union[float, int, bool, str]


class LineProtocolError(ValueError):
    """A point that line protocol cannot express."""


PRECISIONS: dict[str, int] = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000, "s": 1}
"""Ticks a second of each timestamp precision."""

_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})
# Text that needs neither escaping nor refusing, the common case: taken as it is.
_PLAIN_MEASUREMENT = re.compile(r"[^, \\\n\r]+").fullmatch
_PLAIN_KEY = re.compile(r"[^,= \\\n\r]+").fullmatch


def _checked(text: str, what: str) -> str:
    if not text:
        raise LineProtocolError(f"empty {what}")
    if "\n" in text or "\r" in text:
        raise LineProtocolError(f"{what} {text!r} holds a line break")
    if text.endswith("\\"):  # it would escape the separator that follows
        raise LineProtocolError(f"{what} {text!r} ends with a backslash")
    return text


ESCAPES_CACHED = 4096
"""How many escaped names and values are kept, the most recently used: the
same measurements, keys, hosts and states come with point after point."""


@functools.lru_cache(maxsize=ESCAPES_CACHED)
def escapeMeasurement(name: str) -> str:
    """A measurement name, escaped."""
    if _PLAIN_MEASUREMENT(name):
        return name
    return _checked(name, "measurement").translate(_MEASUREMENT)


@functools.lru_cache(maxsize=ESCAPES_CACHED)
def escapeKey(text: str, what: str = "tag") -> str:
    """A tag key, a tag value or a field key, escaped."""
    if _PLAIN_KEY(text):
        return text
    return _checked(text, what).translate(_KEY)


def formatField(value: FieldValue) -> str:
    """A field value as line protocol writes it."""
    if type(value) is float and math.isfinite(value):  # the common case, first
        return repr(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"{value!r} cannot be stored")
        return repr(value)
    if isinstance(value, str):
        return f'"{value.translate(_STRING)}"'
    raise LineProtocolError(f"a field cannot hold {type(value).__name__}")


def timestamp(seconds: float, precision: str) -> int:
    """``seconds`` since the epoch in ticks of ``precision`` (a key of `PRECISIONS`)."""
    ticks = PRECISIONS[precision]
    if ticks >= 1_000_000:  # whole microseconds first: a float has no more
        return round(seconds * 1_000_000) * (ticks // 1_000_000)
    return round(seconds * ticks)


def line(
    measurement: str,
    tags: Mapping[str, str] | Iterable[tuple[str, str]],
    fields: Mapping[str, FieldValue],
    time: int | None = None,
) -> str:
    """One point: its measurement, tags (sorted by key, as InfluxDB prefers), fields, time."""
    if not fields:
        raise LineProtocolError(f"a point of {measurement!r} needs at least one field")
    pairs = tags.items() if isinstance(tags, dict) or isinstance(tags, Mapping) else tags
    name = escapeMeasurement(measurement)
    tagSet = "".join(
        [
            f",{escapeKey(key, 'tag key')}={escapeKey(value, 'tag value')}"
            for key, value in sorted(pairs)
            if value != ""
        ]
    )
    fieldSet = ",".join(
        [f"{escapeKey(key, 'field key')}={formatField(value)}" for key, value in fields.items()]
    )
    head = name + tagSet
    if time is None:
        return f"{head} {fieldSet}"
    return f"{head} {fieldSet} {time}"
