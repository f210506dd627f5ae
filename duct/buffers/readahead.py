"""A disk buffer's state in memory: records read ahead, and where the checkpoint may move.

`ReadAhead` holds the few records read from a `duct.buffers.segments.SegmentStore`
into memory, and `Unacked` the positions of those taken and not yet acked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from duct.buffers.segments import HEADER_SIZE

if TYPE_CHECKING:
    from duct.buffers.segments import SegmentStore


# -- acknowledgements --------------------------------------------------------------


class Unacked:
    """The positions of records read from disk and not yet acknowledged.

    Each record read gets a sequence number.  Acks may arrive out of order
    (several batches in flight, a batch requeued): `first` is the position
    of the oldest record not acked, as far as the checkpoint may move.
    """

    def __init__(self) -> None:
        self.positions: deque[int] = deque()  # from sequence number `base` on
        self.base = self.next = 0
        self._acked: set[int] = set()  # acked beyond the first unacked

    def add(self, pos: int) -> int:
        self.positions.append(pos)
        self.next += 1
        return self.next - 1

    def remove(self, seqs: list[int]) -> None:
        low, high = min(seqs), max(seqs)
        if low == self.base and high - low + 1 == len(seqs):  # the usual case: the head
            for _ in seqs:
                self.positions.popleft()
            self.base = high + 1
        else:
            self._acked.update(seqs)
        while self.base in self._acked:
            self._acked.remove(self.base)
            self.positions.popleft()
            self.base += 1

    @property
    def first(self) -> int | None:
        return self.positions[0] if self.positions else None


# -- reading ahead -------------------------------------------------------------------


class ReadAhead:
    """The oldest records not yet taken, read from a `SegmentStore` into memory.

    It holds at most ``records`` records and about ``nbytes`` bytes (more
    only when a batch is requeued or a larger batch is asked for), whatever
    the backlog on disk.  Each record read is numbered in `Unacked`.
    """

    def __init__(self, store: SegmentStore, unacked: Unacked, records: int, nbytes: int) -> None:
        self.store, self.unacked, self.records, self.nbytes = store, unacked, records, nbytes
        self.payloads: deque[bytes] = deque()
        self.seqs: deque[int] = deque()
        self.size = 0

    def __len__(self) -> int:
        return len(self.payloads)

    def _full(self, limit: int) -> bool:
        return len(self.payloads) >= limit or (bool(self.payloads) and self.size >= self.nbytes)

    def _add(self, payloads: Sequence[bytes], pos: int) -> int:
        """Admit records stored from ``pos`` on, in order; return the position after them."""
        for payload in payloads:
            self.payloads.append(payload)
            self.seqs.append(self.unacked.add(pos))
            pos += HEADER_SIZE + len(payload)
            self.size += HEADER_SIZE + len(payload)
        return pos

    def written(self, payloads: list[bytes], pos: int) -> None:
        """Records just written from ``pos`` on: those that fit skip the disk.

        Only while nothing older waits unread on disk; the others are left there.
        """
        count = 0
        if not self.store.unread:
            while count < len(payloads) and not self._full(self.records):
                pos = self._add(payloads[count : count + 1], pos)
                count += 1
        if count < len(payloads):
            self.store.addUnread(pos, len(payloads) - count, self.store.tail - pos)

    def fill(self, want: int) -> tuple[int, int]:
        """Read until ``want`` (or the read-ahead) records are held.

        Returns the records and bytes lost in segments that could not be read.
        """
        limit, lost, lostBytes = max(want, self.records), 0, 0
        store = self.store
        while store.unread and not self._full(limit):
            need = limit - len(self.payloads)
            average = store.unreadBytes // store.unread + 1
            budget = max(4096, min(need * average, self.nbytes - self.size))
            pos, payloads, count, size = store.read(need, budget)
            self._add(payloads, pos)
            lost, lostBytes = lost + count, lostBytes + size
        return lost, lostBytes

    def pop(self, count: int) -> tuple[list[bytes], list[int]]:
        payloads = [self.payloads.popleft() for _ in range(count)]
        self.size -= sum(HEADER_SIZE + len(p) for p in payloads)
        return payloads, [self.seqs.popleft() for _ in range(count)]

    def pushBack(self, payloads: list[bytes], seqs: list[int]) -> None:
        self.payloads.extendleft(reversed(payloads))
        self.seqs.extendleft(reversed(seqs))
        self.size += sum(HEADER_SIZE + len(p) for p in payloads)
