"""EventRing: the most recent events the pipeline delivered, numbered, for /events.

Every event the pipeline routes gets the next number (``seq``, from 1 in
each process) and is kept here until newer ones push it out.  Readers ask
for the events after a number they have seen, so a client that lost its
connection resumes where it stopped, as long as the ring still holds that
point; `EventRing.first` says where it now starts.

The ring stores what the pipeline hands it, one chunk per batch, without
copying events or decoding anything: events relayed from Riemann stay as
the client's Msg (`EncodedEvents`) and are decoded only when a reader asks
for them.  Appending a batch costs one size estimate per `Event` (one per
relayed Msg) and no other per-event work, so that feeding the ring stays
cheap on the pipeline's hot path.

It is bounded in events and in bytes.  When either limit is passed, whole
chunks leave from the oldest end until the ring is 1/64 under its limits
(or only the newest batch is left); a single batch larger than a limit
keeps only its newest events.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Any

from twisted.logger import Logger

from duct.defaults import RING_MAX_BYTES, RING_SIZE
from duct.event import Event
from duct.protocol.riemann import (
    DecodeError,
    EncodedEvents,
    decodeEvent,
    decodeMsg,
    eventFromProto,
    sizesOf,
)

DEFAULT_SIZE = RING_SIZE
DEFAULT_MAX_BYTES = RING_MAX_BYTES

# A chunk is a tuple, cheaper to build than an object:
# (first seq, items, bytes, bytes of all earlier chunks, items are encoded)
_FIRST, _ITEMS, _BYTES, _BEFORE, _ENCODED = range(5)


def _firstOf(chunk: Any) -> int:
    return chunk[_FIRST]


def eventsSize(events: list[Event]) -> int:
    """What ``events`` cost held, by `duct.protocol.riemann.sizesOf`'s measure."""
    return sum(sizesOf(events))


def _decodeChunk(items: EncodedEvents, offset: int) -> list[Event | None]:
    """The events of a relayed chunk from ``offset`` on; None for one that does not decode."""
    try:
        return [eventFromProto(event) for event in decodeMsg(items.payload).events[offset:]]
    except DecodeError:  # one bad event: decode them one by one
        decoded: list[Event | None] = []
        for encoded in items.encoded[offset:]:
            try:
                decoded.append(decodeEvent(encoded))
            except DecodeError:
                decoded.append(None)
        return decoded


class EventRing:
    """A bounded, numbered history of delivered events.

    :param size: the most events held.
    :param maxBytes: the most bytes held (estimated as the output buffers
        estimate them; relayed events count their encoded size).
    """

    log = Logger()

    def __init__(self, size: int = DEFAULT_SIZE, maxBytes: int = DEFAULT_MAX_BYTES) -> None:
        if size < 1 or maxBytes < 1:
            raise ValueError("an event ring must hold at least one event and one byte")
        self.size = size
        self.maxBytes = maxBytes
        self._chunks: list[Any] = []
        self._head = 0  # chunks before this index have left the ring
        self._next = 1
        self._first = 1
        self._count = 0
        self._bytes = 0
        self._totalBytes = 0
        self.evicted = 0
        """Events pushed out of the ring so far."""
        self.undecodable = 0
        """Relayed events whose bytes failed to decode when read (skipped)."""
        self._listeners: list[Callable[[], None]] = []

    # -- state ------------------------------------------------------------

    @property
    def first(self) -> int:
        """The number of the oldest event held (`next` when the ring is empty)."""
        return self._first

    @property
    def next(self) -> int:
        """The number the next event will get."""
        return self._next

    @property
    def last(self) -> int:
        """The number of the newest event so far (0 before the first)."""
        return self._next - 1

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held, estimated."""
        return self._bytes

    def stats(self) -> dict[str, int]:
        return {
            "events": self._count,
            "bytes": self._bytes,
            "first": self._first,
            "last": self.last,
            "evicted": self.evicted,
            "undecodable": self.undecodable,
        }

    # -- writing (the pipeline's hot path) ----------------------------------

    def add(self, events: list[Event] | EncodedEvents) -> None:
        """Number and keep a batch of delivered events; tell the listeners."""
        encoded = isinstance(events, EncodedEvents)
        items: Any
        if encoded:
            items = events  # kept whole: an EncodedEvents is built per Msg and never changed
            nbytes = events.nbytes  # type: ignore[union-attr]
        else:
            items = list(events)  # a source may reuse its list
            nbytes = sum(sizesOf(items))
        count = len(items)
        if not count:
            return
        first = self._next
        self._next = first + count
        if count > self.size or nbytes > self.maxBytes:
            # Too large for the ring: keep only its newest part, and nothing
            # older, so that what the ring holds stays contiguous.
            first, items, nbytes = self._trim(first, items)
            self._evictAll()
            self._first = first
            count = len(items)
            if not count:
                self._notify()
                return
        self._chunks.append((first, items, nbytes, self._totalBytes, encoded))
        self._totalBytes += nbytes
        self._count += count
        self._bytes += nbytes
        if self._count > self.size or self._bytes > self.maxBytes:
            self._evict()
        if self._listeners:
            self._notify()

    def _trim(self, first: int, items: Any) -> tuple[int, list[Any], int]:
        """The newest part of an oversized batch that fits the ring alone."""
        if isinstance(items, EncodedEvents):
            items = items.encoded
        if len(items) > self.size:
            dropped = len(items) - self.size
            items = items[dropped:]
            first += dropped
            self.evicted += dropped
        sizes = sizesOf(items)
        total = sum(sizes)
        start = 0
        while total > self.maxBytes and start < len(items):
            total -= sizes[start]
            start += 1
        self.evicted += start
        return first + start, items[start:], total

    def _evict(self) -> None:
        """Drop the oldest chunks, down to a little under the limits.

        Going 1/64 below them means that, once full, the ring evicts once
        every many batches rather than on each, which keeps the cost of a
        one-event batch low.  The newest chunk always stays (it fits on its
        own, see `_trim`).
        """
        chunks = self._chunks
        count, nbytes, head = self._count, self._bytes, self._head
        targetCount = self.size - self.size // 64
        targetBytes = self.maxBytes - self.maxBytes // 64
        newest = len(chunks) - 1
        while (count > targetCount or nbytes > targetBytes) and head < newest:
            chunk = chunks[head]
            chunks[head] = None
            head += 1
            count -= len(chunk[_ITEMS])
            nbytes -= chunk[_BYTES]
        self.evicted += self._count - count
        self._count, self._bytes = count, nbytes
        self._first = chunks[head][_FIRST]
        if head > 64 and head * 2 > len(chunks):
            del chunks[:head]
            head = 0
        self._head = head

    def _evictAll(self) -> None:
        self.evicted += self._count
        self._chunks = []
        self._head = 0
        self._count = 0
        self._bytes = 0

    # -- listening ------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each batch is added."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # a reader's fault must not stop delivery
                self.log.failure("an event stream failed on new events")

    # -- reading ----------------------------------------------------------------

    def _index(self, seq: int) -> int:
        """Index in ``_chunks`` of the chunk holding ``seq`` (which the ring holds)."""
        index = bisect_right(self._chunks, seq, lo=self._head, key=_firstOf) - 1
        return max(index, self._head)

    def read(self, after: int, limit: int) -> list[tuple[int, Event]]:
        """Up to ``limit`` events numbered after ``after``, oldest first, decoded.

        Starts at `first` if ``after`` is older than what the ring holds.
        """
        start = max(after + 1, self._first)
        if start >= self._next or limit < 1:
            return []
        found: list[tuple[int, Event]] = []
        chunks = self._chunks
        for index in range(self._index(start), len(chunks)):
            first, items, _, _, encoded = chunks[index]
            offset = start - first if start > first else 0
            if encoded and isinstance(items, EncodedEvents):
                items, offset, first = _decodeChunk(items, offset), 0, first + offset
            for position in range(offset, len(items)):
                item = items[position]
                if encoded:
                    if isinstance(item, bytes):
                        try:
                            item = decodeEvent(item)
                        except DecodeError:
                            item = None
                    if item is None:
                        self.undecodable += 1
                        continue
                found.append((first + position, item))
                if len(found) >= limit:
                    return found
        return found

    def backwards(self) -> Iterator[tuple[int, Event]]:
        """Every event held, newest first, decoded."""
        chunks = self._chunks
        for index in range(len(chunks) - 1, self._head - 1, -1):
            first, items, _, _, encoded = chunks[index]
            if encoded and isinstance(items, EncodedEvents):
                items = _decodeChunk(items, 0)
            for position in range(len(items) - 1, -1, -1):
                item = items[position]
                if encoded and isinstance(item, bytes):
                    try:
                        item = decodeEvent(item)
                    except DecodeError:
                        item = None
                if item is None:
                    continue
                yield first + position, item

    def bytesAfter(self, seq: int) -> int:
        """About how many bytes the ring holds in events numbered after ``seq``.

        Counted by whole chunks, so it may include the part of a batch up
        to ``seq``: an upper bound, in O(log n).
        """
        if seq >= self.last:
            return 0
        if seq < self._first:
            return self._bytes
        chunk = self._chunks[self._index(seq + 1)]
        return self._totalBytes - chunk[_BEFORE]
