"""EventStream: one /events client, fed from the ring as fast as it reads.

The stream is an IPushProducer registered with the request: the transport
pauses it when its buffer is full and resumes it once the client has read.
While paused it writes nothing, so the client's place in the ring (the
number of the last event sent) is all it queues.  It writes in pieces of
``WRITE_SIZE`` bytes and stops as soon as it is paused, so the transport
holds at most its own buffer (64 KiB) plus one piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from duct.web.events.format import EventFilter, Formatter

if TYPE_CHECKING:
    from duct.web.events.ring import EventRing

CUTOFF_GRACE = 10.0
"""Seconds a cut-off client has to read its final message before the connection is aborted."""

READ_BATCH = 256
WRITE_SIZE = 16384
"""Bytes of events gathered into one write."""

SCAN_PER_TURN = 2048
"""Most events one stream reads before letting the reactor serve others."""


@dataclass(frozen=True)
class StreamLimits:
    """How far a paused client may fall behind, and how long it may read nothing."""

    maxLag: int
    """Events further behind than at its best."""
    maxLagBytes: int
    """Bytes further behind than at its best."""
    stallTimeout: float
    """Seconds paused."""


class StreamHub(Protocol):
    """What a stream reports to whoever serves it (the /events resource)."""

    def count(self, name: str) -> None:
        """Count one of ``name`` (a gap sent)."""

    def cutOff(self, stream: EventStream, reason: str, message: str) -> None:
        """``stream`` is about to be cut off for ``reason``; ``message`` says why."""

    def closed(self, stream: EventStream) -> None:
        """``stream`` has ended, whichever side ended it."""


@implementer(IPushProducer)
class EventStream:
    """One client's stream: its place in the ring, its filter, its format.

    :param hub: told of gaps, cut-offs and the end of the stream.
    :param clock: schedules writes and times pauses.
    """

    log = Logger()

    def __init__(
        self,
        hub: StreamHub,
        ring: EventRing,
        clock: Any,
        limits: StreamLimits,
        request: Any,
        formatter: Formatter,
        match: EventFilter,
        cursor: int,
    ) -> None:
        self.hub = hub
        self.ring = ring
        self.clock = clock
        self.limits = limits
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

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ring.unsubscribe(self.onEvents)
        if self._pumpCall is not None and self._pumpCall.active():
            self._pumpCall.cancel()
        self._pumpCall = None
        self.hub.closed(self)

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
                self.hub.count("gaps")
                self.cursor = ring.first - 1
                self._write(gap)
                continue
            batch = ring.read(self.cursor, READ_BATCH)
            if not batch:
                self.bestLag = self.bestLagBytes = 0
                return
            parts: list[bytes] = []
            size = 0
            for seq, item in batch:
                if match and not match(item):
                    continue
                data = event(seq, item)
                parts.append(data)
                size += len(data)
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

    def _send(self, parts: list[bytes]) -> None:
        self.sent += len(parts)
        self._write(b"".join(parts))

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
        limits = self.limits
        if events - self.bestLag > limits.maxLag:
            self.cutOff(
                "lag", f"fell {events - self.bestLag} events behind (limit {limits.maxLag})"
            )
        elif nbytes - self.bestLagBytes > limits.maxLagBytes:
            self.cutOff(
                "bytes",
                f"fell {nbytes - self.bestLagBytes} bytes behind (limit {limits.maxLagBytes})",
            )

    def checkStalled(self, now: float) -> bool:
        """Cut the client off if it has read nothing for too long; True if it was."""
        if self.paused and not self.closed and now - self.pausedAt >= self.limits.stallTimeout:
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
        self.hub.cutOff(self, reason, message)
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
            self.clock.callLater(CUTOFF_GRACE, _abort, channel.transport)


def _abort(transport: Any) -> None:
    if not getattr(transport, "disconnected", False) and hasattr(transport, "abortConnection"):
        transport.abortConnection()
