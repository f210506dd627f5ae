"""/events: the pipeline's events as a live stream that a client can resume.

A client reads Server-Sent Events (``text/event-stream``, what a browser's
EventSource reads) or, with ``?format=jsonl``, one JSON object a line.
Each event carries its number in the `duct.web.events.ring.EventRing` (``seq``), so a
client that reconnects asks for what follows the last one it saw:
``?since=N``, or the ``Last-Event-ID`` header EventSource sends by itself.
``?recent=N`` starts with the last N events that pass the filters.  When
the ring no longer holds the point asked for, the stream says so first (a
``gap`` message with the first number it still has) and goes on from the
oldest event held.

A client's queue is its place in the ring, not a copy of the events: the
stream writes only while the connection takes data (the transport pauses
it as a producer when its buffer is full), so the bytes waiting for one
client stay within the transport's buffer plus one write.  A client that
is not reading while the ring moves on, and so falls more than ``maxLag``
events or ``maxLagBytes`` bytes further behind than it has been at its
best, or that reads nothing for ``stallTimeout`` seconds, is sent a final
``error`` message and disconnected; each cut-off is counted by reason.
(Catching up from an old ``since`` is not falling behind.)  If the ring
drops events a client has not been sent yet, its stream reports a gap and
goes on.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from twisted.internet import task
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from duct.event import Event
from duct.lib.lograte import RateLimitedLog
from duct.web.events.ring import EventRing
from duct.web.events.stream import EventStream

HEARTBEAT = 15.0
"""Seconds between heartbeats: a comment (SSE) or an empty line (JSON lines)."""

STALL_TIMEOUT = 60.0
"""Seconds a client may read nothing (its stream paused) before it is cut off."""

MAX_REGEX = 1000
"""The longest service regex accepted, in characters."""

FORMATS = {
    "sse": b"text/event-stream; charset=utf-8",
    "jsonl": b"application/x-ndjson; charset=utf-8",
}

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str).encode


def eventJson(seq: int, event: Event) -> str:
    """One event as JSON: `Event.asDict` and its ``seq``; NaN and infinity become null."""
    data = {"seq": seq, **event.asDict()}
    try:
        return _encode(data)
    except ValueError:
        finite = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in data.items()
        }
        return _encode(finite)


class BadRequest(ValueError):
    """A request /events cannot serve; the message says why."""


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
    """How one format writes events, gaps, errors and heartbeats."""

    def __init__(self, name: str) -> None:
        self.sse = name == "sse"

    def event(self, seq: int, event: Event) -> str:
        if self.sse:
            return f"id: {seq}\ndata: {eventJson(seq, event)}\n\n"
        return eventJson(seq, event) + "\n"

    def gap(self, since: int, first: int, missed: int | None) -> bytes:
        data = {"since": since, "first": first, "missed": missed}
        if self.sse:  # the id makes a reconnection resume after the gap, not report it again
            return f"id: {first - 1}\nevent: gap\ndata: {_encode(data)}\n\n".encode()
        return (_encode({"gap": data}) + "\n").encode()

    def error(self, message: str, since: int) -> bytes:
        data = {"error": message, "since": since}
        if self.sse:
            return f"event: error\ndata: {_encode(data)}\n\n".encode()
        return (_encode(data) + "\n").encode()

    def opening(self, cursor: int) -> bytes:
        """Sent at once: the headers go out, and the client learns where it starts.

        An SSE message with an id and no data sets EventSource's last event
        id without firing an event, so a reconnection before the first
        event still resumes at the right place.
        """
        if self.sse:
            return f"retry: 2000\nid: {cursor}\n\n".encode()
        return (_encode({"since": cursor}) + "\n").encode()

    def heartbeat(self) -> bytes:
        return b": heartbeat\n\n" if self.sse else b"\n"


class EventsResource(Resource):
    """``GET /events``: a live, resumable stream of the ring's events.

    Query: ``format`` (``sse``, the default, or ``jsonl``); ``since=N`` or
    ``recent=N``; ``service`` (a regular expression searched in the service
    name), ``host`` and ``state`` (exact; each may be repeated).  Other
    parameters are ignored.

    :param ring: the `EventRing` the pipeline feeds.
    :param clock: drives heartbeats, stall detection and writes.
    :param maxLag: events a paused client may fall behind (default: half the ring).
    :param maxLagBytes: bytes it may fall behind (default: half the ring's bytes).
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        ring: EventRing,
        clock: Any,
        maxLag: int | None = None,
        maxLagBytes: int | None = None,
        heartbeat: float = HEARTBEAT,
        stallTimeout: float = STALL_TIMEOUT,
    ) -> None:
        super().__init__()
        self.ring = ring
        self.clock = clock
        self.maxLag = maxLag if maxLag is not None else max(1, ring.size // 2)
        self.maxLagBytes = maxLagBytes if maxLagBytes is not None else max(1, ring.maxBytes // 2)
        self.heartbeatInterval = heartbeat
        self.stallTimeout = stallTimeout
        self.streams: set[EventStream] = set()
        self.counters: Counter[str] = Counter()
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = clock
        self._cutoffLog = RateLimitedLog(self.log, clock)

    def stats(self) -> dict[str, Any]:
        """Clients connected, and counts of streams, cut-offs, gaps and bad requests."""
        return {"clients": len(self.streams), **self.counters, "ring": self.ring.stats()}

    # -- requests -----------------------------------------------------------------

    def render_GET(self, request: Any) -> bytes | int:
        try:
            formatter, match, cursor, gap = self._parse(request)
        except BadRequest as e:
            self.counters["bad_requests"] += 1
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"{e}\n".encode()
        request.setHeader(b"content-type", FORMATS["sse" if formatter.sse else "jsonl"])
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # no buffering in a reverse proxy
        stream = EventStream(self, request, formatter, match, cursor)
        self.streams.add(stream)
        self.counters["streams"] += 1
        if not self._heartbeat.running:
            self._heartbeat.start(self.heartbeatInterval, now=False)
        stream.start(gap)
        return NOT_DONE_YET

    def render_HEAD(self, request: Any) -> bytes:
        """The headers a GET would get, and no stream (which would never end)."""
        try:
            formatter = self._parse(request)[0]
        except BadRequest:
            request.setResponseCode(400)
            return b""
        request.setHeader(b"content-type", FORMATS["sse" if formatter.sse else "jsonl"])
        return b""

    def _parse(self, request: Any) -> tuple[Formatter, EventFilter, int, bytes | None]:
        args = {
            key.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in values]
            for key, values in (request.args or {}).items()
        }

        def one(name: str) -> str | None:
            values = args.get(name)
            if values and len(values) > 1:
                raise BadRequest(f"{name} is given {len(values)} times")
            return values[0] if values else None

        fmt = one("format") or "sse"
        if fmt not in FORMATS:
            raise BadRequest(f"format must be sse or jsonl, not {fmt!r}")
        formatter = Formatter(fmt)
        match = EventFilter(one("service"), args.get("host", []), args.get("state", []))
        since, recent = _count(one("since"), "since"), _count(one("recent"), "recent")
        if since is not None and recent is not None:
            raise BadRequest("give since or recent, not both")
        if since is None:
            header = request.getHeader(b"last-event-id")
            if header and header.strip():
                since = _count(header.decode("ascii", "replace").strip(), "Last-Event-ID")
        ring = self.ring
        if since is not None:
            if ring.first - 1 <= since <= ring.last:
                return formatter, match, since, None
            # Older than the ring, or newer than any event: the agent restarted.
            missed = ring.first - 1 - since if since < ring.first else None
            self.counters["gaps"] += 1
            return formatter, match, ring.first - 1, formatter.gap(since, ring.first, missed)
        if recent:
            return formatter, match, self._recentStart(recent, match), None
        return formatter, match, ring.last, None

    def _recentStart(self, count: int, match: EventFilter) -> int:
        """The cursor after which the last ``count`` matching events follow."""
        found = 0
        for seq, event in self.ring.backwards():
            if not match or match(event):
                found += 1
                if found >= count:
                    return seq - 1
        return self.ring.first - 1

    # -- streams ----------------------------------------------------------------------

    def streamClosed(self, stream: EventStream) -> None:
        self.streams.discard(stream)
        if not self.streams and self._heartbeat.running:
            self._heartbeat.stop()

    def cutOff(self, stream: EventStream, reason: str, message: str) -> None:
        self.counters["cutoffs"] += 1
        self.counters[f"cutoffs.{reason}"] += 1
        peer = stream.request.getClientAddress()
        self._cutoffLog.emit(
            "cutoff",
            "/events: cut off {peer}: {message}; {total} clients cut off so far",
            peer=getattr(peer, "host", peer),
            message=message,
            total=self.counters["cutoffs"],
        )

    def _beat(self) -> None:
        now = self.clock.seconds()
        for stream in list(self.streams):
            if not stream.checkStalled(now):
                stream.heartbeat()


def _count(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise BadRequest(f"{name} must be a non-negative integer, not {value!r}")
    return number


def eventsResource(ring: EventRing, clock: Any, **limits: Any) -> EventsResource:
    """The /events resource for ``ring``: ``root.putChild(b"events", eventsResource(...))``."""
    return EventsResource(ring, clock, **limits)
