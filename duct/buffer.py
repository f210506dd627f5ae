"""Bounded event buffers between the pipeline and an output's writer.

An event stays in its buffer until the destination confirms it: the writer
`take`s a `Batch`, sends it, then either `ack`s it or `requeue`s it at the
head.  Every buffer is bounded in events and in bytes, and the output's
overflow policy decides what happens when it is full.  Each dropped event
is counted by reason.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from duct.ratelimit import RateLimitedLog

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
    """Events taken from a buffer and not yet acknowledged."""

    __slots__ = ("events", "nbytes", "sizes")

    def __init__(self, events: list[Event], sizes: list[int]) -> None:
        self.events = events
        self.sizes = sizes
        self.nbytes = sum(sizes)

    def __len__(self) -> int:
        return len(self.events)


class MemoryBuffer:
    """A bounded in-memory FIFO of events.

    A crash loses what it holds; ``duct check`` says so for each output
    that uses one.
    """

    log = Logger()
    durable = False

    def __init__(
        self,
        name: str,
        clock: Any,
        maxsize: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        overflow: str = "block",
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
        self.name = name
        self.clock = clock
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.overflow = overflow
        self._pending: deque[tuple[Event, int]] = deque()
        self.pendingBytes = 0
        self.inFlightEvents = 0
        self.inFlightBytes = 0
        self.drops: Counter[str] = Counter()
        self._waiters: list[Deferred[None]] = []
        self._dropLog = RateLimitedLog(self.log, clock)

    # -- state ------------------------------------------------------------

    def __len__(self) -> int:
        """Events waiting to be taken."""
        return len(self._pending)

    @property
    def depth(self) -> int:
        """Events held, waiting or in flight."""
        return len(self._pending) + self.inFlightEvents

    @property
    def nbytes(self) -> int:
        return self.pendingBytes + self.inFlightBytes

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

    # -- producer side ----------------------------------------------------

    def put(self, events: Iterable[Event]) -> int:
        """Add events at the tail; return how many were kept.

        With ``block``, a producer is expected to wait for `writable`; a put
        that arrives while the buffer is already full is refused and counted.
        A put into a buffer with room is taken whole, so the limits may be
        overshot by at most one put.
        """
        items = [(event, eventSize(event)) for event in events]
        if not items:
            return 0
        if self.overflow == "block":
            if not self.writable:
                self.recordDrop("overflow", len(items))
                return 0
            self._append(items)
            return len(items)
        if self.overflow == "drop_newest":
            kept = 0
            for item in items:
                if not self.writable:
                    break
                self._append((item,))
                kept += 1
            if kept < len(items):
                self.recordDrop("overflow", len(items) - kept)
            return kept
        older = len(self._pending)
        self._append(items)
        dropped = 0
        while self._pending and not self._withinLimits():
            _, size = self._pending.popleft()
            self.pendingBytes -= size
            dropped += 1
        if dropped:
            self.recordDrop("overflow", dropped)
        # Once the older events are gone, the oldest of this put go next.
        return len(items) - max(0, dropped - older)

    def _withinLimits(self) -> bool:
        return self.depth <= self.maxsize and self.nbytes <= self.max_bytes

    def _append(self, items: Iterable[tuple[Event, int]]) -> None:
        for item in items:
            self._pending.append(item)
            self.pendingBytes += item[1]

    # -- writer side ------------------------------------------------------

    def take(self, n: int) -> Batch | None:
        """Move up to ``n`` events from the head into flight."""
        if not self._pending:
            return None
        count = min(n, len(self._pending))
        popleft = self._pending.popleft
        taken = [popleft() for _ in range(count)]
        batch = Batch([event for event, _ in taken], [size for _, size in taken])
        self.pendingBytes -= batch.nbytes
        self.inFlightEvents += count
        self.inFlightBytes += batch.nbytes
        return batch

    def ack(self, batch: Batch) -> None:
        """The destination confirmed ``batch``: forget it."""
        self._settle(batch)

    def requeue(self, batch: Batch) -> None:
        """Delivery of ``batch`` failed: put it back at the head, in order."""
        self._settle(batch, wake=False)
        self._pending.extendleft(reversed(list(zip(batch.events, batch.sizes, strict=True))))
        self.pendingBytes += batch.nbytes

    def discard(self, batch: Batch, reason: str) -> None:
        """Give up on ``batch`` (rejected, expired, too large); count it."""
        self._settle(batch)
        self.recordDrop(reason, len(batch))

    def _settle(self, batch: Batch, wake: bool = True) -> None:
        self.inFlightEvents -= len(batch)
        self.inFlightBytes -= batch.nbytes
        if wake and self._waiters and self.writable:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def recordDrop(self, reason: str, count: int) -> None:
        self.drops[reason] += count
        self._dropLog.emit(
            reason,
            "output {output} dropped {count} events ({reason}); {total} dropped so far",
            output=self.name,
            count=count,
            reason=reason,
            total=sum(self.drops.values()),
        )
