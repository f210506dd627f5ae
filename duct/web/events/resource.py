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

from collections import Counter
from typing import Any

from twisted.internet import task
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from duct.lib.lograte import RateLimitedLog
from duct.web.events.format import BadRequest, EventFilter, Formatter, count
from duct.web.events.ring import EventRing
from duct.web.events.stream import EventStream, StreamLimits
from duct.web.responses import jsonError

HEARTBEAT = 15.0
"""Seconds between heartbeats: a comment (SSE) or an empty line (JSON lines)."""

STALL_TIMEOUT = 60.0
"""Seconds a client may read nothing (its stream paused) before it is cut off."""


class EventsResource(Resource):
    """``GET /events``: a live, resumable stream of the ring's events.

    Query: ``format`` (``sse``, the default, or ``jsonl``); ``since=N`` or
    ``recent=N``; ``service`` and ``description`` (regular expressions, run
    by RE2, searched in the service name and the description), ``host`` and
    ``state`` (exact; each may be repeated).  Other
    parameters are ignored; a bad one is answered 400 with ``{"error": why}``.

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
        self.limits = StreamLimits(
            maxLag=maxLag if maxLag is not None else max(1, ring.size // 2),
            maxLagBytes=maxLagBytes if maxLagBytes is not None else max(1, ring.maxBytes // 2),
            stallTimeout=stallTimeout,
        )
        self.heartbeatInterval = heartbeat
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
            self.count("bad_requests")
            return jsonError(request, 400, str(e))
        request.setHeader(b"content-type", formatter.contentType)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # no buffering in a reverse proxy
        stream = EventStream(
            self, self.ring, self.clock, self.limits, request, formatter, match, cursor
        )
        self.streams.add(stream)
        self.count("streams")
        if not self._heartbeat.running:
            self._heartbeat.start(self.heartbeatInterval, now=False)
        stream.start(gap)
        return NOT_DONE_YET

    def render_HEAD(self, request: Any) -> bytes:
        """The headers a GET would get, and no stream (which would never end)."""
        try:
            formatter = self._parse(request)[0]
        except BadRequest as e:
            jsonError(request, 400, str(e))  # the headers a GET gets, without the body
            return b""
        request.setHeader(b"content-type", formatter.contentType)
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

        formatter = Formatter(one("format") or "sse")
        match = EventFilter(
            one("service"), args.get("host", []), args.get("state", []), one("description")
        )
        since, recent = count(one("since"), "since"), count(one("recent"), "recent")
        if since is not None and recent is not None:
            raise BadRequest("give since or recent, not both")
        if since is None:
            header = request.getHeader(b"last-event-id")
            if header and header.strip():
                since = count(header.decode("ascii", "replace").strip(), "Last-Event-ID")
        ring = self.ring
        if since is not None:
            if ring.first - 1 <= since <= ring.last:
                return formatter, match, since, None
            # Older than the ring, or newer than any event: the agent restarted.
            missed = ring.first - 1 - since if since < ring.first else None
            self.count("gaps")
            return formatter, match, ring.first - 1, formatter.gap(since, ring.first, missed)
        if recent:
            return formatter, match, self._recentStart(recent, match), None
        return formatter, match, ring.last, None

    def _recentStart(self, recent: int, match: EventFilter) -> int:
        """The cursor after which the last ``recent`` matching events follow."""
        found = 0
        for seq, event in self.ring.backwards():
            if not match or match(event):
                found += 1
                if found >= recent:
                    return seq - 1
        return self.ring.first - 1

    # -- streams: the hub each one reports to ------------------------------------------

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def closed(self, stream: EventStream) -> None:
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


def eventsResource(ring: EventRing, clock: Any, **limits: Any) -> EventsResource:
    """The /events resource for ``ring``: ``root.putChild(b"events", eventsResource(...))``."""
    return EventsResource(ring, clock, **limits)
