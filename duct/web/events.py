"""/events: the pipeline's events as a live stream that a client can resume.

A client reads Server-Sent Events (``text/event-stream``, what a browser's
EventSource reads) or, with ``?format=jsonl``, one JSON object a line.
Each event carries its number in the `duct.ring.EventRing` (``seq``), so a
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
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from duct.event import Event
from duct.ratelimit import RateLimitedLog
from duct.ring import EventRing

HEARTBEAT = 15.0
"""Seconds between heartbeats: a comment (SSE) or an empty line (JSON lines)."""

STALL_TIMEOUT = 60.0
CUTOFF_GRACE = 10.0
"""Seconds a cut-off client has to read its final message before the connection is aborted."""

MAX_REGEX = 1000
READ_BATCH = 256
WRITE_SIZE = 16384
"""Bytes of events gathered into one write; a client's transport holds at most its
buffer (64 KiB, when it pauses the stream) plus one such write."""
SCAN_PER_TURN = 2048
"""Most events one stream reads before letting the reactor serve others."""

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


@implementer(IPushProducer)
class EventStream:
    """One client's stream: its place in the ring, its filter, its format."""

    log = Logger()

    def __init__(
        self,
        resource: EventsResource,
        request: Any,
        formatter: Formatter,
        match: EventFilter,
        cursor: int,
    ) -> None:
        self.resource = resource
        self.ring = resource.ring
        self.clock = resource.clock
        self.request = request
        self.formatter = formatter
        self.match = match
        self.cursor = cursor
        """The number of the last event this client has been sent (or skipped)."""
        self.paused = False
        self.pausedAt = 0.0
        self.pauses = 0
        """Times the transport paused the stream (its buffer was full)."""
        self.closed = False
        self.bestLag, self.bestLagBytes = self._behind()
        self.sent = 0
        """Events written."""
        self.written = 0
        """Bytes written."""
        self.writtenWhilePaused = 0
        self._pumpCall: Any = None
        self._abortCall: Any = None

    # -- lifecycle ------------------------------------------------------------

    def start(self, gap: bytes | None) -> None:
        request = self.request
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)
        self.ring.subscribe(self.onEvents)
        self._write(self.formatter.opening(self.cursor) + (gap or b""))
        self._schedulePump()

    def _finished(self, _: object) -> None:
        self._close()
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ring.unsubscribe(self.onEvents)
        if self._pumpCall is not None and self._pumpCall.active():
            self._pumpCall.cancel()
        self._pumpCall = None
        self.resource.streamClosed(self)

    # -- IPushProducer: the transport says whether the client is reading ----------

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.pausedAt = self.clock.seconds()
            self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        if not self.closed:
            self._schedulePump()

    def stopProducing(self) -> None:
        self._close()

    # -- feeding ----------------------------------------------------------------

    def onEvents(self) -> None:
        """The ring took new events (called on the pipeline's path: keep it cheap)."""
        if self.paused:
            self._checkLag()
        else:
            self._schedulePump()

    def _schedulePump(self) -> None:
        if self._pumpCall is None and not self.closed:
            self._pumpCall = self.clock.callLater(0, self._pump)

    def _pump(self) -> None:
        self._pumpCall = None
        ring, match, event = self.ring, self.match, self.formatter.event
        scanned = 0
        while not self.paused and not self.closed:
            if self.cursor < ring.first - 1:  # the ring dropped events not yet sent
                gap = self.formatter.gap(self.cursor, ring.first, ring.first - 1 - self.cursor)
                self.resource.counters["gaps"] += 1
                self.cursor = ring.first - 1
                self._write(gap)
                continue
            batch = ring.read(self.cursor, READ_BATCH)
            if not batch:
                self.bestLag = self.bestLagBytes = 0
                return
            parts: list[str] = []
            size = 0
            for seq, item in batch:
                if match and not match(item):
                    continue
                text = event(seq, item)
                parts.append(text)
                size += len(text)
                if size >= WRITE_SIZE:  # write in pieces, and stop as soon as told to
                    self.cursor = seq
                    self._send(parts)
                    parts, size = [], 0
                    if self.paused or self.closed:
                        self._caughtUpTo()
                        return
            self.cursor = batch[-1][0]
            if parts:
                self._send(parts)
            self._caughtUpTo()
            scanned += len(batch)
            if scanned >= SCAN_PER_TURN:
                self._schedulePump()
                return

    def _send(self, parts: list[str]) -> None:
        self.sent += len(parts)
        self._write("".join(parts).encode())

    def _write(self, data: bytes) -> None:
        self.written += len(data)
        if self.paused:
            self.writtenWhilePaused += len(data)
        self.request.write(data)

    # -- slow clients -------------------------------------------------------------

    def _behind(self) -> tuple[int, int]:
        """How far behind the newest event this client is: events, and bytes held."""
        return self.ring.last - self.cursor, self.ring.bytesAfter(self.cursor)

    def _caughtUpTo(self) -> None:
        """Remember the closest this client has come to the newest event."""
        events, nbytes = self._behind()
        self.bestLag = min(self.bestLag, events)
        self.bestLagBytes = min(self.bestLagBytes, nbytes)

    def _checkLag(self) -> None:
        """Cut the client off if it fell back too far from the best it did.

        A client catching up from an old ``since`` starts far behind, and
        pauses each time its transport is full: that is not falling behind.
        What counts is how much further back it is than at its best.
        """
        if self.closed:
            return
        events, nbytes = self._behind()
        resource = self.resource
        if events - self.bestLag > resource.maxLag:
            self.cutOff(
                "lag", f"fell {events - self.bestLag} events behind (limit {resource.maxLag})"
            )
        elif nbytes - self.bestLagBytes > resource.maxLagBytes:
            self.cutOff(
                "bytes",
                f"fell {nbytes - self.bestLagBytes} bytes behind (limit {resource.maxLagBytes})",
            )

    def checkStalled(self, now: float) -> bool:
        """Cut the client off if it has read nothing for too long; True if it was."""
        if self.paused and not self.closed and now - self.pausedAt >= self.resource.stallTimeout:
            self.cutOff("stalled", f"read nothing for {now - self.pausedAt:.0f}s")
            return True
        return False

    def heartbeat(self) -> None:
        if not self.paused and not self.closed:
            self._write(self.formatter.heartbeat())

    def cutOff(self, reason: str, detail: str) -> None:
        """Send a final error message and disconnect; count it under ``reason``."""
        if self.closed:
            return
        message = f"too slow: {detail}; disconnecting (resume with since={self.cursor})"
        self.resource.cutOff(self, reason, message)
        request = self.request
        channel = request.channel
        self._close()
        self._write(self.formatter.error(message, self.cursor))
        request.unregisterProducer()
        request.finish()
        if channel is not None:
            # The channel's own close: the transport then closes once the
            # final bytes are out, instead of waiting to resume the channel.
            channel.loseConnection()
            # A client that reads nothing never lets the final bytes out: abort then.
            self._abortCall = self.clock.callLater(CUTOFF_GRACE, _abort, channel.transport)


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


def _abort(transport: Any) -> None:
    if not getattr(transport, "disconnected", False) and hasattr(transport, "abortConnection"):
        transport.abortConnection()


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
