"""Events from JSON, as `Event.asDict` writes them, with errors that say where.

A body is one JSON object, an array of them, or JSON lines (objects one
after another, whitespace between).  `jsonValues` walks it one value at a
time, so that a caller can stop between values to let the reactor run;
`eventFromJson` checks one value and builds its `Event`.  Every error is a
`BadEvent` whose message names the place: ``events[3].metric: not a
number``, ``events[7]: not valid JSON: Expecting value at line 8 column 1``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from duct.event import Event

__all__ = ["FIELDS", "BadEvent", "decodeText", "eventFromJson", "jsonValues"]

FIELDS = frozenset(
    (
        "host",
        "service",
        "state",
        "metric",
        "ttl",
        "tags",
        "attributes",
        "description",
        "time",
        "time_micros",
        "type",
    )
)
"""The fields an event may have: those `Event.asDict` writes, and ``time_micros``."""

_SPACE = re.compile(r"[ \t\n\r]*")


class BadEvent(ValueError):
    """A body or an event that cannot be taken; ``where`` names the place, ``problem`` why."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_constant)


def decodeText(body: bytes) -> str:
    """``body`` as text; `BadEvent` if it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadEvent("body", f"not UTF-8 at byte {e.start}") from None


def _value(text: str, at: int, index: int) -> tuple[Any, int]:
    try:
        return _decoder.raw_decode(text, at)
    except json.JSONDecodeError as e:
        problem = f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        raise BadEvent(f"events[{index}]", problem) from None
    except ValueError as e:  # NaN or Infinity
        raise BadEvent(f"events[{index}]", f"not valid JSON: {e}") from None


def _where(text: str, at: int) -> str:
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    return f"line {line} column {column}"


def jsonValues(text: str) -> Iterator[Any]:
    """Each top-level value of a body: the items of an array, or the values one after another.

    Raises `BadEvent` for JSON that does not parse, naming the index of the
    event it stopped in, and for a body with no value at all.
    """
    end = len(text)
    space = _SPACE.match
    at = space(text, 0).end()  # type: ignore[union-attr]
    if at == end:
        raise BadEvent("body", "no events")
    index = 0
    if text[at] != "[":
        while at < end:
            value, at = _value(text, at, index)
            yield value
            index += 1
            at = space(text, at).end()  # type: ignore[union-attr]
        return
    at = space(text, at + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", at):
        at += 1
    else:
        while True:
            value, at = _value(text, at, index)
            yield value
            index += 1
            at = space(text, at).end()  # type: ignore[union-attr]
            if text.startswith(",", at):
                at = space(text, at + 1).end()  # type: ignore[union-attr]
                continue
            if text.startswith("]", at):
                at += 1
                break
            raise BadEvent(
                "body", f"expected ',' or ']' after events[{index - 1}] at {_where(text, at)}"
            )
    at = space(text, at).end()  # type: ignore[union-attr]
    if at != end:
        raise BadEvent("body", f"data after the array at {_where(text, at)}")


def _text(value: Any, where: str, field: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise BadEvent(f"{where}.{field}", "required")
        return None
    if not isinstance(value, str):
        raise BadEvent(f"{where}.{field}", "not a string")
    return value


def _number(value: Any, where: str, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadEvent(f"{where}.{field}", "not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadEvent(f"{where}.{field}", "not a finite number")
    return value


def _when(seconds: Any, micros: Any, where: str) -> float | None:
    """The event's time from ``time`` and ``time_micros``, or None if it has neither."""
    if micros is not None:
        if isinstance(micros, bool) or not isinstance(micros, int):
            raise BadEvent(f"{where}.time_micros", "not an integer")
        return micros / 1_000_000
    if not isinstance(seconds, str):
        return _number(seconds, where, "time")
    try:  # Python before 3.11 reads no Z
        parsed = datetime.fromisoformat(
            seconds[:-1] + "+00:00" if seconds.endswith("Z") else seconds
        )
    except ValueError:
        raise BadEvent(f"{where}.time", "neither a number nor an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise BadEvent(f"{where}.time", "an ISO 8601 time needs its offset (Z or +hh:mm)")
    return parsed.timestamp()


def _tags(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadEvent(f"{where}.tags", "not a list of strings")
    for n, tag in enumerate(value):
        if not isinstance(tag, str):
            raise BadEvent(f"{where}.tags[{n}]", "not a string")
    return value


def _attributes(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadEvent(f"{where}.attributes", "not an object")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            out[key] = item
        elif isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, (int, float)):
            out[key] = str(item)
        else:
            raise BadEvent(f"{where}.attributes.{key}", "not a string or a number")
    return out or None


def eventFromJson(value: Any, index: int, hostname: str | None = None, now: float = 0.0) -> Event:
    """The `Event` a decoded JSON value describes; `BadEvent` naming the field if it cannot.

    ``service`` is required.  Without ``host`` the event takes ``hostname``
    (else this machine's name); without ``time``, ``now``.  ``time`` is
    seconds since the epoch or an ISO 8601 time with its offset, as
    Riemann's own JSON has it; ``time_micros``, microseconds since the
    epoch, wins over it, as in a Riemann Msg.  A field
    `Event.asDict` does not write is an error, so that a misspelt one is
    not lost without a word.
    """
    where = f"events[{index}]"
    if not isinstance(value, dict):
        raise BadEvent(where, "not an object")
    if not FIELDS.issuperset(value):
        unknown = sorted(set(value) - FIELDS)[0]
        raise BadEvent(f"{where}.{unknown}", "unknown field")
    get = value.get
    service = _text(get("service"), where, "service", required=True)
    ttl = _number(get("ttl"), where, "ttl")
    if ttl is not None and ttl < 0:
        raise BadEvent(f"{where}.ttl", "negative")
    when = _when(get("time"), get("time_micros"), where)
    kind = _text(get("type"), where, "type") or "metric"
    return Event(
        _text(get("state"), where, "state"),
        service,  # type: ignore[arg-type]
        _text(get("description"), where, "description"),
        _number(get("metric"), where, "metric"),
        ttl,
        tags=_tags(get("tags"), where),
        hostname=_text(get("host"), where, "host") or hostname,
        evtime=now if when is None else float(when),
        attributes=_attributes(get("attributes"), where),
        type=kind,
    )
