"""What an /events client asked for, and how its stream is written.

`EventFilter` is the query's service regex, hosts and states; `Formatter`
writes events, gaps, errors and heartbeats as Server-Sent Events or as JSON
lines, always as bytes; `eventJson` is one event's JSON with its ``seq``.
Nothing here knows of requests or the ring.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import overload

from duct.event import Event
from duct.lib.json import dumps, eventJson

__all__ = ["FORMATS", "MAX_REGEX", "BadRequest", "EventFilter", "Formatter", "count", "eventJson"]

MAX_REGEX = 1000
"""The longest service regex accepted, in characters."""

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


class EventFilter:
    """Which events a client asked for: service regex, hosts, states."""

    __slots__ = ("service", "hosts", "states")

    def __init__(
        self, service: str | None = None, hosts: Iterable[str] = (), states: Iterable[str] = ()
    ) -> None:
        if service is not None and len(service) > MAX_REGEX:
            raise BadRequest(f"service regex is longer than {MAX_REGEX} characters")
        try:
            self.service = re.compile(service) if service else None
        except re.error as e:
            raise BadRequest(f"bad service regex {service!r}: {e}") from None
        self.hosts = frozenset(hosts)
        self.states = frozenset(states)

    def __bool__(self) -> bool:
        return bool(self.service or self.hosts or self.states)

    def __call__(self, event: Event) -> bool:
        if self.hosts and event.hostname not in self.hosts:
            return False
        if self.states and event.state not in self.states:
            return False
        return self.service is None or self.service.search(str(event.service)) is not None


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
