"""MemoryBuffer: a bounded in-memory FIFO between the pipeline and an output's writer.

Its interface is `duct.buffers.base.BufferBase`'s (re-exported here with
`Batch`): the writer takes batches, then acks or requeues each.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from duct.buffers.base import OVERFLOW_POLICIES, Batch, BufferBase
from duct.protocol.riemann import eventSize, sizesOf

__all__ = ["OVERFLOW_POLICIES", "Batch", "BufferBase", "MemoryBuffer", "eventSize"]


class MemoryBuffer(BufferBase):
    """A bounded in-memory FIFO of events.

    A crash loses what it holds; ``duct check`` says so for each output
    that uses one.  A ``grouped`` buffer takes items that each hold
    several events (``counts`` in `put`), such as the Msgs a Riemann relay
    passes on whole: it counts and limits events all the same, drops whole
    items, and `take` never splits one.
    """

    def __init__(
        self,
        name: str,
        clock: Any,
        maxsize: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        overflow: str = "block",
        expiring: bool = False,
        grouped: bool = False,
    ) -> None:
        super().__init__(name, clock, maxsize, max_bytes, overflow)
        # Parallel deques, not tuples: 16 bytes an item instead of 72.
        self._items: deque[Any] = deque()
        self._sizes: deque[int] = deque()
        self._deadlines: deque[float] | None = deque() if expiring else None
        self._counts: deque[int] | None = deque() if grouped else None
        self.pendingEvents = 0
        self.pendingBytes = 0
        self.inFlightEvents = 0
        self.inFlightBytes = 0

    @property
    def grouped(self) -> bool:
        """Whether an item may hold several events."""
        return self._counts is not None

    # -- state ------------------------------------------------------------

    def __len__(self) -> int:
        """Events waiting to be taken."""
        return self.pendingEvents

    def waiting(self) -> list[Any]:
        """A copy of the items waiting to be taken, head first."""
        return list(self._items)

    @property
    def depth(self) -> int:
        """Events held, waiting or in flight."""
        return self.pendingEvents + self.inFlightEvents

    @property
    def nbytes(self) -> int:
        return self.pendingBytes + self.inFlightBytes

    @property
    def writable(self) -> bool:
        """Whether a producer may add events now."""
        return (
            self.pendingEvents + self.inFlightEvents < self.maxsize
            and self.pendingBytes + self.inFlightBytes < self.max_bytes
        )

    def hasRoom(self, count: int = 1, nbytes: int | None = None) -> bool:
        """Whether ``count`` events, of ``nbytes`` bytes when known, fit within both limits now."""
        if self.pendingEvents + self.inFlightEvents + count > self.maxsize:
            return False
        held = self.pendingBytes + self.inFlightBytes
        return held < self.max_bytes if nbytes is None else held + nbytes <= self.max_bytes

    # -- producer side ----------------------------------------------------

    def putItem(self, item: Any, size: int, count: int = 1) -> int:
        """`put` one item of ``count`` events (more than one in a grouped buffer only)."""
        if self._deadlines is not None or self.overflow == "drop_oldest" or self._counts is None:
            return self.put([item], [size], None, [count])
        if not self.writable:
            self.recordDrop("overflow", count)
            return 0
        self._items.append(item)
        self._sizes.append(size)
        if self._counts is not None:
            self._counts.append(count)
        self.pendingBytes += size
        self.pendingEvents += count
        return count

    def put(
        self,
        items: Iterable[Any],
        sizes: Sequence[int] | None = None,
        deadlines: Sequence[float] | None = None,
        counts: Sequence[int] | None = None,
    ) -> int:
        """Add items at the tail; return how many events were kept.

        Items are Events, or whatever form an output queues (encoded bytes
        for Riemann); ``sizes`` gives each one's cost in bytes and defaults
        to `sizesOf`.  ``deadlines`` (clock seconds) lets `take` expire
        items that waited too long.  ``counts`` (grouped buffers only) says
        how many events each item holds.

        With ``block``, a producer is expected to wait for `writable`; a put
        that arrives while the buffer is already full is refused and counted.
        A put into a buffer with room is taken whole, so the limits may be
        overshot by at most one put.
        """
        if not isinstance(items, list):
            items = list(items)
        if not items:
            return 0
        if sizes is None:
            sizes = sizesOf(items)
        if counts is None or self._counts is None:
            counts = None
            total = len(items)
        else:
            total = sum(counts)
        if self.overflow == "block":
            if not self.writable:
                self.recordDrop("overflow", total)
                return 0
            self._append(items, sizes, deadlines, counts, total)
            return total
        if self.overflow == "drop_newest":
            kept = keptEvents = 0
            while kept < len(items) and self.writable:
                one = slice(kept, kept + 1)
                events = 1 if counts is None else counts[kept]
                self._append(
                    items[one],
                    sizes[one],
                    deadlines[one] if deadlines else None,
                    counts[one] if counts is not None else None,
                    events,
                )
                kept += 1
                keptEvents += events
            if keptEvents < total:
                self.recordDrop("overflow", total - keptEvents)
            return keptEvents
        older = self.pendingEvents
        self._append(items, sizes, deadlines, counts, total)
        dropped = 0
        while self._items and not self._withinLimits():
            dropped += self._popleft()
        if dropped:
            self.recordDrop("overflow", dropped)
        # Once the older events are gone, the oldest of this put go next.
        return total - max(0, dropped - older)

    def _withinLimits(self) -> bool:
        return self.depth <= self.maxsize and self.nbytes <= self.max_bytes

    def _append(
        self,
        items: list[Any],
        sizes: Sequence[int],
        deadlines: Sequence[float] | None,
        counts: Sequence[int] | None,
        total: int,
    ) -> None:
        self._items.extend(items)
        self._sizes.extend(sizes)
        self.pendingBytes += sum(sizes)
        self.pendingEvents += total
        if self._deadlines is not None:
            self._deadlines.extend(deadlines if deadlines else [math.inf] * len(items))
        if self._counts is not None:
            self._counts.extend(counts if counts is not None else [1] * len(items))

    def _popleft(self) -> int:
        """Drop the item at the head; return how many events it held."""
        self._items.popleft()
        self.pendingBytes -= self._sizes.popleft()
        if self._deadlines is not None:
            self._deadlines.popleft()
        count = 1 if self._counts is None else self._counts.popleft()
        self.pendingEvents -= count
        return count

    # -- writer side ------------------------------------------------------

    def take(self, n: int) -> Batch | None:
        """Move up to ``n`` events from the head into flight.

        Items whose deadline has passed are dropped on the way, counted as
        ``expired``.  In a grouped buffer, whole items are taken while they
        fit in ``n``, and always at least one.
        """
        if self._deadlines is not None:
            self._expire()
        if not self._items:
            return None
        items, sizes = self._items, self._sizes
        counts: list[int] | None = None
        if self._counts is None:
            count = min(n, len(items))
        else:
            pending = self._counts
            counts = [pending.popleft()]
            events = counts[0]
            while pending and events + pending[0] <= n:
                events += pending[0]
                counts.append(pending.popleft())
            count = len(counts)
        deadlines = None
        if self._deadlines is not None:
            popDeadline = self._deadlines.popleft
            deadlines = [popDeadline() for _ in range(count)]
        if count == 1:
            taken, takenSizes = [items.popleft()], [sizes.popleft()]
        else:
            taken = [items.popleft() for _ in range(count)]
            takenSizes = [sizes.popleft() for _ in range(count)]
        batch = Batch(taken, takenSizes, deadlines, counts)
        self.pendingBytes -= batch.nbytes
        self.pendingEvents -= batch.count
        self.inFlightEvents += batch.count
        self.inFlightBytes += batch.nbytes
        return batch

    def _expire(self) -> None:
        assert self._deadlines is not None
        now = self.clock.seconds()
        if not any(deadline < now for deadline in self._deadlines):
            return
        keep = [i for i, deadline in enumerate(self._deadlines) if deadline >= now]
        items, sizes, deadlines = list(self._items), list(self._sizes), list(self._deadlines)
        counts = list(self._counts) if self._counts is not None else [1] * len(items)
        self._items = deque(items[i] for i in keep)
        self._sizes = deque(sizes[i] for i in keep)
        self._deadlines = deque(deadlines[i] for i in keep)
        if self._counts is not None:
            self._counts = deque(counts[i] for i in keep)
        self.pendingBytes = sum(self._sizes)
        before, self.pendingEvents = self.pendingEvents, sum(counts[i] for i in keep)
        self.recordDrop("expired", before - self.pendingEvents)
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
            self._deadlines.extendleft(reversed(batch.deadlines or [math.inf] * len(batch.events)))
        if self._counts is not None:
            self._counts.extendleft(reversed(batch.counts or [1] * len(batch.events)))
        self.pendingBytes += batch.nbytes
        self.pendingEvents += batch.count

    def discard(self, batch: Batch, reason: str) -> None:
        """Give up on ``batch`` (rejected, expired, too large); count it."""
        self._settle(batch)
        self.recordDrop(reason, len(batch))

    def moveInto(
        self, output: Any, events: Callable[[Batch], Any] | None = None
    ) -> tuple[int, int]:
        """Hand every event waiting here to ``output``, behind what it already holds.

        Used when ``output`` replaces the one this buffer belongs to.
        ``events`` turns the batch taken into what ``eventsReceived`` takes
        (the old output's `batchEvents`: Riemann bytes stay encoded); they
        are decoded for an output that takes only Events.  Each event keeps
        its own time.  Returns how many were offered and how many
        ``output``'s buffer kept; what it refused is counted there as
        dropped.  Events in flight stay here.
        """
        batch = self.take(len(self))
        if batch is None:
            return 0, 0
        items: Any = batch.events if events is None else events(batch)
        if not output.acceptsEncoded and hasattr(items, "decode"):
            items = items.decode()
        kept = output.eventsReceived(items)
        self.ack(batch)
        return len(batch), kept

    def _settle(self, batch: Batch, wake: bool = True) -> None:
        self.inFlightEvents -= batch.count
        self.inFlightBytes -= batch.nbytes
        if wake:
            self._wake()
