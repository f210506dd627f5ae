"""What an /events client asked for, and how its stream is written.

`EventFilter` is the query's service and description regexes, hosts and
states; `Formatter`
writes events, gaps, errors and heartbeats as Server-Sent Events or as JSON
lines, always as bytes; `eventJson` is one event's JSON with its ``seq``.
Nothing here knows of requests or the ring.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, overload

import re2

from duct.event import Event
from duct.lib.json import dumps, eventJson

__all__ = [
    "FORMATS",
    "MAX_REGEX",
    "BadRequest",
    "EventFilter",
    "Formatter",
    "count",
    "eventJson",
    "requestPattern",
]

MAX_REGEX = 1000
"""The longest regex a request may give, in characters."""

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is the client's error, answered 400

FORMATS = {
    "sse": b"text/event-stream; charset=utf-8",
    "jsonl": b"application/x-ndjson; charset=utf-8",
}
"""The content type of each format, by its ``format`` name."""


class BadRequest(ValueError):
    """A request /events cannot serve; the message says why."""


@overload
def count(value: str, name: str) -> int: ...


@overload
def count(value: None, name: str) -> None: ...


def count(value: str | None, name: str) -> int | None:
    """``value`` as a count of events (``since``, ``recent``), or None if not given.

    Raises `BadRequest`, naming ``name``, unless it is a non-negative integer.
    """
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise BadRequest(f"{name} must be a non-negative integer, not {value!r}")
    return number


def requestPattern(pattern: str | None, name: str) -> Any:
    """The regex a request gave as ``name``, compiled by RE2; None if empty.

    A pattern from a request runs on RE2, whose matching takes time linear
    in the text, so that no pattern can hold the reactor (Python's `re`
    backtracks: ``(a+)+$`` takes seconds on 30 characters).  The syntax is
    Python's, less what needs backtracking (backreferences, lookarounds)
    and with ASCII-only ``\\d``, ``\\w`` and ``\\s``; ``$`` matches only at the
    very end, and ``\\z`` is the end (not ``\\Z``).  Raises `BadRequest`,
    naming ``name`` and why, for a pattern RE2 refuses or one longer than
    `MAX_REGEX`.
    """
    if not pattern:
        return None
    if len(pattern) > MAX_REGEX:
        raise BadRequest(f"{name} regex is longer than {MAX_REGEX} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        why = e.args[0] if e.args else "cannot be compiled"
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise BadRequest(f"bad {name} regex {pattern!r}: {why}") from None


class EventFilter:
    """Which events a client asked for: service and description regexes, hosts, states.

    Each regex is searched anywhere in its field (see `requestPattern`).
    """

    __slots__ = ("service", "description", "hosts", "states")

    def __init__(
        self,
        service: str | None = None,
        hosts: Iterable[str] = (),
        states: Iterable[str] = (),
        description: str | None = None,
    ) -> None:
        self.service = requestPattern(service, "service")
        self.description = requestPattern(description, "description")
        self.hosts = frozenset(hosts)
        self.states = frozenset(states)

    def __bool__(self) -> bool:
        return bool(self.service or self.description or self.hosts or self.states)

    def __call__(self, event: Event) -> bool:
        if self.hosts and event.hostname not in self.hosts:
            return False
        if self.states and event.state not in self.states:
            return False
        if self.service is not None and self.service.search(str(event.service)) is None:
            return False
        description = self.description
        return description is None or description.search(str(event.description or "")) is not None


class Formatter:
    """How one format writes events, gaps, errors and heartbeats, each as bytes."""

    def __init__(self, name: str) -> None:
        if name not in FORMATS:
            raise BadRequest(f"format must be sse or jsonl, not {name!r}")
        self.name = name
        self.sse = name == "sse"
        self.contentType = FORMATS[name]

    def event(self, seq: int, event: Event) -> bytes:
        if self.sse:
            return f"id: {seq}\ndata: {eventJson(event, seq)}\n\n".encode()
        return (eventJson(event, seq) + "\n").encode()

    def gap(self, since: int, first: int, missed: int | None) -> bytes:
        data = {"since": since, "first": first, "missed": missed}
        if self.sse:  # the id makes a reconnection resume after the gap, not report it again
            return f"id: {first - 1}\nevent: gap\ndata: {dumps(data)}\n\n".encode()
        return (dumps({"gap": data}) + "\n").encode()

    def error(self, message: str, since: int) -> bytes:
        data = {"error": message, "since": since}
        if self.sse:
            return f"event: error\ndata: {dumps(data)}\n\n".encode()
        return (dumps(data) + "\n").encode()

    def opening(self, cursor: int) -> bytes:
        """Sent at once: the headers go out, and the client learns where it starts.

        An SSE message with an id and no data sets EventSource's last event
        id without firing an event, so a reconnection before the first
        event still resumes at the right place.
        """
        if self.sse:
            return f"retry: 2000\nid: {cursor}\n\n".encode()
        return (dumps({"since": cursor}) + "\n").encode()

    def heartbeat(self) -> bytes:
        return b": heartbeat\n\n" if self.sse else b"\n"
