"""What every buffer shares: `Batch`, what a writer takes, and `BufferBase`.

An event stays in its buffer until the destination confirms it: the writer
`take`s a `Batch`, sends it, then either `ack`s it or `requeue`s it at the
head.  Every buffer is bounded in events and in bytes, and the output's
overflow policy decides what happens when it is full.  Each dropped event
is counted by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from duct.lib.lograte import RateLimitedLog

__all__ = ["OVERFLOW_POLICIES", "Batch", "BufferBase", "pick"]

OVERFLOW_POLICIES = ("block", "drop_oldest", "drop_newest")


class Batch:
    """Items taken from a buffer and not yet acknowledged.

    ``counts``, when given, says how many events each item holds (an item
    of a grouped buffer is a Msg's worth); otherwise each item is one event.
    ``len()`` is the number of events.

    A batch the destination refused in part is cut into pieces (`split`,
    `select`) of the same kind; each piece is then acked, requeued or
    discarded on its own, in any order, and the pieces together account
    for exactly the events and bytes of the whole.
    """

    __slots__ = ("counts", "deadlines", "events", "nbytes", "sizes", "count")

    def __init__(
        self,
        events: list[Any],
        sizes: list[int],
        deadlines: list[float] | None = None,
        counts: list[int] | None = None,
    ) -> None:
        self.events = events
        self.sizes = sizes
        self.deadlines = deadlines
        self.counts = counts
        self.nbytes = sum(sizes)
        self.count = len(events) if counts is None else sum(counts)

    def __len__(self) -> int:
        return self.count

    def split(self, n: int) -> tuple[Batch, Batch]:
        """The first ``n`` items and the rest, as two batches of this kind."""
        size = len(self.events)
        return self.select(range(n)), self.select(range(n, size))

    def select(self, indices: Sequence[int]) -> Batch:
        """A batch of the items at ``indices`` (ascending), of this kind."""
        return Batch(
            pick(self.events, indices),
            pick(self.sizes, indices),
            None if self.deadlines is None else pick(self.deadlines, indices),
            None if self.counts is None else pick(self.counts, indices),
        )


def pick(values: list[Any], indices: Sequence[int]) -> list[Any]:
    """``values`` at ``indices``: a slice when they are a range."""
    if isinstance(indices, range) and indices.step == 1:
        return values[indices.start : indices.stop]
    if not indices:
        return []
    if len(indices) == 1:
        return [values[indices[0]]]
    return list(itemgetter(*indices)(values))


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
        self._waiters: list[tuple[int, int | None, Deferred[None]]] = []
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
        counts: Sequence[int] | None = None,
    ) -> int:
        """Add items at the tail under the overflow policy; return how many events were kept.

        ``counts`` is for a grouped buffer: how many events each item holds.
        """
        raise NotImplementedError

    def putItem(self, item: Any, size: int, count: int = 1) -> int:
        """`put` one item of ``count`` events (more than one in a grouped buffer only)."""
        return self.put([item], [size], None, None if count == 1 else [count])

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
        """Whether a producer may add events now: room for one more."""
        return self.depth < self.maxsize and self.nbytes < self.max_bytes

    def hasRoom(self, count: int = 1, nbytes: int | None = None) -> bool:
        """Whether ``count`` events, of ``nbytes`` bytes when known, fit within both limits now.

        Without ``nbytes`` (events not yet measured) the byte limit is checked
        as `writable` does: some room left.
        """
        if self.depth + count > self.maxsize:
            return False
        held = self.nbytes
        return held < self.max_bytes if nbytes is None else held + nbytes <= self.max_bytes

    def canEverHold(self, count: int, nbytes: int | None = None) -> str | None:
        """None if ``count`` events (``nbytes`` bytes) fit the empty buffer, else the limit."""
        if count > self.maxsize:
            return "maxsize"
        if nbytes is not None and nbytes > self.max_bytes:
            return "max_bytes"
        return None

    def whenWritable(self) -> Deferred[None]:
        """A Deferred that fires once the buffer has room for one event."""
        return self.whenRoom(1)

    def whenRoom(self, count: int, nbytes: int | None = None) -> Deferred[None]:
        """A Deferred that fires once `hasRoom` is true for ``count`` and ``nbytes``.

        Waiters are woken in the order they came, each as soon as it fits;
        `forgetWaiter` drops one no longer wanted.
        """
        d: Deferred[None] = Deferred()
        if self.hasRoom(count, nbytes):
            d.callback(None)
        else:
            self._waiters.append((count, nbytes, d))
        return d

    def forgetWaiter(self, d: Deferred[None]) -> None:
        """Stop waiting with ``d`` (from `whenRoom`), if it still waits."""
        self._waiters = [w for w in self._waiters if w[2] is not d]

    def _wake(self) -> None:
        # A woken producer puts at once, which may wake (or fill) this buffer
        # again: look afresh after each one.
        waiters = self._waiters
        while waiters:
            for i, (count, nbytes, d) in enumerate(waiters):
                if self.hasRoom(count, nbytes):
                    del waiters[i]
                    d.callback(None)
                    break
            else:
                return
            waiters = self._waiters

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
