"""Bounded event buffers between the pipeline and an output's writer.

An event stays in its buffer until the destination confirms it: the writer
`take`s a `Batch`, sends it, then either `ack`s it or `requeue`s it at the
head.  Every buffer is bounded in events and in bytes, and the output's
overflow policy decides what happens when it is full.  Each dropped event
is counted by reason.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from duct.lib.lograte import RateLimitedLog

__all__ = ["OVERFLOW_POLICIES", "Batch", "BufferBase", "MemoryBuffer", "eventSize"]

if TYPE_CHECKING:
    from duct.event import Event

OVERFLOW_POLICIES = ("block", "drop_oldest", "drop_newest")

# What a queued Event costs beyond its strings: the slotted object, its
# float time, the deque cell and the size we keep beside it.
_EVENT_OVERHEAD = 160


def eventSize(event: Event) -> int:
    """An estimate of the memory one queued event holds, in bytes."""
    size = _EVENT_OVERHEAD + len(event.service or "") + len(event.hostname or "")
    if event.description:
        size += len(event.description)
    if event.tags:
        size += 56 + sum(len(tag) + 49 for tag in event.tags)
    if event.attributes:
        size += 232 + sum(len(str(k)) + len(str(v)) + 98 for k, v in event.attributes.items())
    return size


class Batch:
    """Items taken from a buffer and not yet acknowledged."""

    __slots__ = ("deadlines", "events", "nbytes", "sizes")

    def __init__(
        self, events: list[Any], sizes: list[int], deadlines: list[float] | None = None
    ) -> None:
        self.events = events
        self.sizes = sizes
        self.deadlines = deadlines
        self.nbytes = sum(sizes)

    def __len__(self) -> int:
        return len(self.events)


class BufferBase:
    """What every buffer shares: limits, producers waiting for room, drop counts.

    A subclass keeps ``depth`` and ``nbytes`` and implements the producer
    and writer sides (``put``, ``take``, ``ack``, ``requeue``, ``discard``).
    """

    log = Logger()
    durable = False
    """Whether what the buffer holds survives a crash."""

    def __init__(self, name: str, clock: Any, maxsize: int, max_bytes: int, overflow: str) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
        self.name = name
        self.clock = clock
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.overflow = overflow
        self.drops: Counter[str] = Counter()
        self._waiters: list[Deferred[None]] = []
        self._dropLog = RateLimitedLog(self.log, clock)

    # -- what a subclass provides --------------------------------------------

    def __len__(self) -> int:
        """Items waiting to be taken."""
        raise NotImplementedError

    @property
    def depth(self) -> int:
        """Items held, waiting or in flight."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes held, waiting or in flight."""
        raise NotImplementedError

    def waiting(self) -> list[Any]:
        """A copy of the items waiting to be taken, head first."""
        raise NotImplementedError

    def put(
        self,
        items: Iterable[Any],
        sizes: Sequence[int] | None = None,
        deadlines: Sequence[float] | None = None,
    ) -> int:
        """Add items at the tail under the overflow policy; return how many were kept."""
        raise NotImplementedError

    def take(self, n: int) -> Batch | None:
        """Move up to ``n`` items from the head into flight."""
        raise NotImplementedError

    def ack(self, batch: Batch) -> None:
        """The destination confirmed ``batch``: forget it."""
        raise NotImplementedError

    def requeue(self, batch: Batch) -> None:
        """Delivery of ``batch`` failed: put it back at the head, in order."""
        raise NotImplementedError

    def discard(self, batch: Batch, reason: str) -> None:
        """Give up on ``batch``; count it under ``reason``."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Whether a producer may add events now."""
        return self.depth < self.maxsize and self.nbytes < self.max_bytes

    def whenWritable(self) -> Deferred[None]:
        """A Deferred that fires once the buffer has room."""
        d: Deferred[None] = Deferred()
        if self.writable:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def _wake(self) -> None:
        if self._waiters and self.writable:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def recordDrop(self, reason: str, count: int) -> None:
        """Count ``count`` dropped events under ``reason``, and log at a limited rate."""
        self.drops[reason] += count
        self._dropLog.emit(
            reason,
            "output {output} dropped {count} events ({reason}); {total} dropped so far",
            output=self.name,
            count=count,
            reason=reason,
            total=sum(self.drops.values()),
        )


class MemoryBuffer(BufferBase):
    """A bounded in-memory FIFO of events.

    A crash loses what it holds; ``duct check`` says so for each output
    that uses one.
    """

    def __init__(
        self,
        name: str,
        clock: Any,
        maxsize: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        overflow: str = "block",
        expiring: bool = False,
        codec: str = "event",
    ) -> None:
        super().__init__(name, clock, maxsize, max_bytes, overflow)
        self.codec = codec
        """``event``: it holds Events; ``bytes``: encoded Riemann events (Riemann outputs)."""
        # Parallel deques, not tuples: 16 bytes an item instead of 72.
        self._items: deque[Any] = deque()
        self._sizes: deque[int] = deque()
        self._deadlines: deque[float] | None = deque() if expiring else None
        self.pendingBytes = 0
        self.inFlightEvents = 0
        self.inFlightBytes = 0

    # -- state ------------------------------------------------------------

    def __len__(self) -> int:
        """Events waiting to be taken."""
        return len(self._items)

    def waiting(self) -> list[Any]:
        """A copy of the items waiting to be taken, head first."""
        return list(self._items)

    @property
    def depth(self) -> int:
        """Events held, waiting or in flight."""
        return len(self._items) + self.inFlightEvents

    @property
    def nbytes(self) -> int:
        return self.pendingBytes + self.inFlightBytes

    # -- producer side ----------------------------------------------------

    def put(
        self,
        items: Iterable[Any],
        sizes: Sequence[int] | None = None,
        deadlines: Sequence[float] | None = None,
    ) -> int:
        """Add items at the tail; return how many were kept.

        Items are Events, or whatever form an output queues (encoded bytes
        for Riemann); ``sizes`` gives each one's cost in bytes and defaults
        to `eventSize`.  ``deadlines`` (clock seconds) lets `take` expire
        items that waited too long.

        With ``block``, a producer is expected to wait for `writable`; a put
        that arrives while the buffer is already full is refused and counted.
        A put into a buffer with room is taken whole, so the limits may be
        overshot by at most one put.
        """
        items = list(items)
        if not items:
            return 0
        if sizes is None:
            sizes = [eventSize(item) for item in items]
        if self.overflow == "block":
            if not self.writable:
                self.recordDrop("overflow", len(items))
                return 0
            self._append(items, sizes, deadlines)
            return len(items)
        if self.overflow == "drop_newest":
            kept = 0
            while kept < len(items) and self.writable:
                one = slice(kept, kept + 1)
                self._append(items[one], sizes[one], deadlines[one] if deadlines else None)
                kept += 1
            if kept < len(items):
                self.recordDrop("overflow", len(items) - kept)
            return kept
        older = len(self._items)
        self._append(items, sizes, deadlines)
        dropped = 0
        while self._items and not self._withinLimits():
            self._popleft()
            dropped += 1
        if dropped:
            self.recordDrop("overflow", dropped)
        # Once the older events are gone, the oldest of this put go next.
        return len(items) - max(0, dropped - older)

    def _withinLimits(self) -> bool:
        return self.depth <= self.maxsize and self.nbytes <= self.max_bytes

    def _append(
        self, items: list[Any], sizes: Sequence[int], deadlines: Sequence[float] | None
    ) -> None:
        self._items.extend(items)
        self._sizes.extend(sizes)
        self.pendingBytes += sum(sizes)
        if self._deadlines is not None:
            self._deadlines.extend(deadlines if deadlines else [math.inf] * len(items))

    def _popleft(self) -> None:
        self._items.popleft()
        self.pendingBytes -= self._sizes.popleft()
        if self._deadlines is not None:
            self._deadlines.popleft()

    # -- writer side ------------------------------------------------------

    def take(self, n: int) -> Batch | None:
        """Move up to ``n`` items from the head into flight.

        Items whose deadline has passed are dropped on the way, counted as
        ``expired``.
        """
        if self._deadlines is not None:
            self._expire()
        if not self._items:
            return None
        count = min(n, len(self._items))
        items, sizes = self._items, self._sizes
        deadlines = None
        if self._deadlines is not None:
            popDeadline = self._deadlines.popleft
            deadlines = [popDeadline() for _ in range(count)]
        taken = [items.popleft() for _ in range(count)]
        batch = Batch(taken, [sizes.popleft() for _ in range(count)], deadlines)
        self.pendingBytes -= batch.nbytes
        self.inFlightEvents += count
        self.inFlightBytes += batch.nbytes
        return batch

    def _expire(self) -> None:
        assert self._deadlines is not None
        now = self.clock.seconds()
        if not any(deadline < now for deadline in self._deadlines):
            return
        keep = [i for i, deadline in enumerate(self._deadlines) if deadline >= now]
        expired = len(self._items) - len(keep)
        items, sizes, deadlines = list(self._items), list(self._sizes), list(self._deadlines)
        self._items = deque(items[i] for i in keep)
        self._sizes = deque(sizes[i] for i in keep)
        self._deadlines = deque(deadlines[i] for i in keep)
        self.pendingBytes = sum(self._sizes)
        self.recordDrop("expired", expired)
        self._wake()

    def ack(self, batch: Batch) -> None:
        """The destination confirmed ``batch``: forget it."""
        self._settle(batch)

    def requeue(self, batch: Batch) -> None:
        """Delivery of ``batch`` failed: put it back at the head, in order."""
        self._settle(batch, wake=False)
        self._items.extendleft(reversed(batch.events))
        self._sizes.extendleft(reversed(batch.sizes))
        if self._deadlines is not None:
            self._deadlines.extendleft(reversed(batch.deadlines or [math.inf] * len(batch)))
        self.pendingBytes += batch.nbytes

    def discard(self, batch: Batch, reason: str) -> None:
        """Give up on ``batch`` (rejected, expired, too large); count it."""
        self._settle(batch)
        self.recordDrop(reason, len(batch))

    def moveInto(self, output: Any) -> tuple[int, int]:
        """Hand every item waiting here to ``output``, behind what it already holds.

        Used when ``output`` replaces the one this buffer belongs to: the
        items go in the form ``output`` takes (encoded ones stay encoded for
        an output that accepts them), each keeping its own time.  Returns
        how many were offered and how many ``output``'s buffer kept; what it
        refused is counted there as dropped.  Items in flight stay here.
        """
        batch = self.take(len(self._items))
        if batch is None:
            return 0, 0
        items: Any = batch.events
        if self.codec == "bytes":
            from duct.protocol.riemann import EncodedEvents

            items = EncodedEvents(list(items))
            if not output.acceptsEncoded:
                items = items.decode()
        kept = output.eventsReceived(items)
        self.ack(batch)
        return len(batch), kept

    def _settle(self, batch: Batch, wake: bool = True) -> None:
        self.inFlightEvents -= len(batch)
        self.inFlightBytes -= batch.nbytes
        if wake:
            self._wake()
