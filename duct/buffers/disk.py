"""DiskBuffer: an output's buffer kept in append-only files, surviving a crash.

It has `duct.buffers.memory.MemoryBuffer`'s interface and limits.  Each put is one
write to a segment file (format in `duct.buffers.segments`); memory holds only a
bounded read-ahead of records and the batches in flight.  An ack moves the
checkpoint once every earlier batch is acked too, and wholly acked segments
are deleted.  On open, the records from the checkpoint on are replayed, in
order, before new ones: delivery is at least once.

``sync``: ``always`` fsyncs before `put` returns (and the checkpoint at each
ack that moves it); ``interval`` fsyncs segment and checkpoint every
``sync_interval`` seconds of the buffer's clock; ``never`` leaves it to the
OS (the checkpoint is still written every ``sync_interval``).  A checkpoint
that lags only means events delivered twice after a crash, never lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.task import LoopingCall

from duct.buffers import SYNC_MODES
from duct.buffers.base import pick
from duct.buffers.memory import Batch, BufferBase
from duct.buffers.readahead import ReadAhead, Unacked
from duct.buffers.recovery import openSegments
from duct.buffers.segments import (
    HEADER_SIZE,
    MAX_RECORD,
    OFFSET_BITS,
    OFFSET_MASK,
    encodeRecords,
    writeCheckpoint,
)
from duct.defaults import MAX_DISK_BYTES
from duct.event import Event
from duct.lib.encodeeach import describeError, encodeEach
from duct.protocol.riemann import decodeEvent, encodeEvent

__all__ = ["CODECS", "DiskBatch", "DiskBuffer"]

CODECS = ("event", "bytes")


def _encode(item: Any) -> bytes:
    if isinstance(item, Event):
        return encodeEvent(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"a disk buffer stores Events or bytes, not {type(item).__name__}")


def describeEvent(event: Any) -> str:
    """An event's host and service, for the log."""
    return f"{getattr(event, 'hostname', '?')} {getattr(event, 'service', '?')}"


class DiskBatch(Batch):
    """A batch taken from a DiskBuffer, with its records' bytes and sequence numbers."""

    __slots__ = ("seqs", "payloads")

    def __init__(self, events: list[Any], payloads: list[bytes], seqs: list[int]) -> None:
        super().__init__(events, [HEADER_SIZE + len(p) for p in payloads])
        self.payloads = payloads
        self.seqs = seqs

    def select(self, indices: Sequence[int]) -> DiskBatch:
        """A batch of the records at ``indices`` (ascending), with their payloads and seqs."""
        return DiskBatch(
            pick(self.events, indices), pick(self.payloads, indices), pick(self.seqs, indices)
        )


class DiskBuffer(BufferBase):
    """A bounded FIFO of records on disk, with MemoryBuffer's interface.

    :param codec: ``event`` stores Events encoded (`encodeEvent`) and `take`
        returns Events; ``bytes`` stores bytes as they are and returns bytes
        (Events put into it are encoded).  Sizes are the bytes on disk.
    :param readahead: records (``readahead_bytes``: bytes) read ahead into memory.
    """

    durable = True

    def __init__(
        self,
        name: str,
        clock: Any,
        path: str,
        maxsize: int = 100_000,
        max_bytes: int = MAX_DISK_BYTES,
        overflow: str = "block",
        sync: str = "interval",
        sync_interval: float = 1.0,
        codec: str = "event",
        segment_size: int = 16 * 1024 * 1024,
        readahead: int = 1000,
        readahead_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if sync not in SYNC_MODES or codec not in CODECS:
            raise ValueError(f"sync must be one of {SYNC_MODES} and codec one of {CODECS}")
        super().__init__(name, clock, maxsize, max_bytes, overflow)
        self.path = path
        self.sync, self.syncInterval, self.codec = sync, sync_interval, codec
        self.inFlightEvents = self.inFlightBytes = 0
        self._syncLoop: LoopingCall | None = None
        self._checkpointDirty = self._closed = False
        self._store = store = openSegments(path, name, sync != "never", segment_size)
        self._unacked = Unacked()
        self._ahead = ReadAhead(store, self._unacked, readahead, readahead_bytes)
        found = store.recovered
        self.corruptRecords, self.corruptSegments = found.corruptRecords, found.corruptSegments
        self.tornTails, self.ackedTotal = found.tornTails, found.acked
        if found.corruptRecords:
            self.recordDrop("corrupt", found.corruptRecords)
        self._depth, self._nbytes = store.unread, store.unreadBytes
        self._checkpointPos = -1
        self._advance(force=True)
        if self._depth:
            self.log.info(
                "disk buffer {output}: {count} events to replay from {path}",
                output=name,
                count=self._depth,
                path=path,
            )

    def close(self) -> None:
        """Write out everything, checkpoint, and close the files."""
        if self._closed:
            return
        if self._syncLoop is not None and self._syncLoop.running:
            self._syncLoop.stop()
        self._writeCheckpoint(sync=True)
        self._store.close()
        self._closed = True

    # -- state -----------------------------------------------------------------

    def __len__(self) -> int:
        """Events waiting to be taken."""
        return self._depth - self.inFlightEvents

    @property
    def depth(self) -> int:
        """Events on disk not yet acked, waiting or in flight."""
        return self._depth

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def pendingBytes(self) -> int:
        return self._nbytes - self.inFlightBytes

    def waiting(self) -> list[Any]:
        """The items waiting to be taken, head first (reads the whole backlog)."""
        payloads = list(self._ahead.payloads) + self._store.unreadPayloads()
        return [self._decode(p) for p in payloads] if self.codec == "event" else payloads

    # -- producer side -----------------------------------------------------------

    def put(
        self,
        items: Iterable[Any],
        sizes: Sequence[int] | None = None,
        deadlines: Sequence[float] | None = None,
        counts: Sequence[int] | None = None,
    ) -> int:
        """Append items in one write; return how many were kept.

        ``sizes`` and ``deadlines`` are ignored: sizes are the bytes on disk,
        and records on disk do not expire.  A disk buffer is never grouped:
        each item is one event, and ``counts`` must be None.
        """
        if counts is not None:
            raise ValueError("a disk buffer holds one event per item")
        if not isinstance(items, list):
            items = list(items)
        try:
            payloads = [_encode(item) for item in items]
        except Exception:
            payloads = self._encodeEach(items)
        if not payloads:
            return 0
        if self._closed:
            self.recordDrop("closed", len(payloads))
            return 0
        if any(len(p) > MAX_RECORD for p in payloads):
            self.recordDrop("too_large", sum(len(p) > MAX_RECORD for p in payloads))
            payloads = [p for p in payloads if len(p) <= MAX_RECORD]
        n = len(payloads)
        if self.overflow == "block":
            if not self.writable:
                self.recordDrop("overflow", n)
                return 0
        elif self.overflow == "drop_newest":
            depth, size, kept = self._depth, self._nbytes, 0
            while kept < n and depth < self.maxsize and size < self.max_bytes:
                depth, size, kept = depth + 1, size + HEADER_SIZE + len(payloads[kept]), kept + 1
            if kept < n:
                self.recordDrop("overflow", n - kept)
            payloads = payloads[:kept]
        else:
            payloads = self._makeRoom(payloads)
        return self._append(payloads) if payloads else 0

    def _encodeEach(self, items: list[Any]) -> list[bytes]:
        """Encode what can be; drop the Events that cannot (``unencodable``)."""
        for item in items:
            if not isinstance(item, (Event, bytes, bytearray, memoryview)):
                _encode(item)  # raises the TypeError: a caller's mistake, not an odd event
        payloads, failed, error = encodeEach(items, _encode)
        if failed:
            self._dropLog.emit(
                "unencodable",
                "disk buffer {output}: cannot encode {count} events ({error}); "
                "dropped, the first for {event}",
                output=self.name,
                count=len(failed),
                error=describeError(error),
                event=describeEvent(items[failed[0]]),
            )
            self.recordDrop("unencodable", len(failed))
        return payloads

    def _makeRoom(self, payloads: list[bytes]) -> list[bytes]:
        """drop_oldest: drop waiting records, then the oldest new ones, to fit."""
        count, size = len(payloads), sum(HEADER_SIZE + len(p) for p in payloads)
        dropped = skip = 0
        while len(self) and (
            self._depth + count > self.maxsize or self._nbytes + size > self.max_bytes
        ):
            if not self._ahead:
                self._fill(1)
                continue
            oldest, seqs = self._ahead.pop(1)
            self._forget(seqs, 1, HEADER_SIZE + len(oldest[0]))
            dropped += 1
        while skip < count and (
            self._depth + count - skip > self.maxsize or self._nbytes + size > self.max_bytes
        ):
            size -= HEADER_SIZE + len(payloads[skip])
            skip += 1
        if dropped + skip:
            self.recordDrop("overflow", dropped + skip)
            self._advance()
        return payloads[skip:]

    def _append(self, payloads: list[bytes]) -> int:
        records = encodeRecords(payloads)
        try:
            start = self._store.append(records)
        except OSError as e:
            self._dropLog.emit(
                "write",
                "disk buffer {output}: cannot write to {path}: {error}",
                output=self.name,
                path=self.path,
                error=e,
            )
            self.recordDrop("write_error", len(payloads))
            return 0
        self._depth += len(payloads)
        self._nbytes += len(records)
        self._ahead.written(payloads, start)
        if self.sync == "always":
            self._store.fsync()
        elif self.sync == "interval":
            self._startSyncLoop()
        return len(payloads)

    def _fill(self, want: int) -> None:
        lost, lostBytes = self._ahead.fill(want)
        if lost or lostBytes:  # a segment became unreadable under us
            self.corruptRecords += 1
            self._depth -= lost
            self._nbytes -= lostBytes
            self.recordDrop("corrupt", lost)
            self._advance()

    # -- writer side -------------------------------------------------------------

    def take(self, n: int) -> DiskBatch | None:
        """Move up to ``n`` records from the head into flight, oldest first."""
        while n > 0 and not self._closed:
            if len(self._ahead) < n and self._store.unread:
                self._fill(n)
            if not self._ahead:
                return None
            payloads, seqs = self._ahead.pop(min(n, len(self._ahead)))
            events: list[Any] = payloads
            if self.codec == "event":
                events = [self._decode(p) for p in payloads]
                if any(event is None for event in events):
                    payloads, seqs, events = self._dropUndecodable(payloads, seqs, events)
            if events:
                batch = DiskBatch(events, payloads, seqs)
                self.inFlightEvents += len(batch)
                self.inFlightBytes += batch.nbytes
                return batch
        return None

    def _decode(self, payload: bytes) -> Event | None:
        try:
            return decodeEvent(payload)
        except Exception:
            return None

    def _dropUndecodable(
        self, payloads: list[bytes], seqs: list[int], events: list[Any]
    ) -> tuple[list[bytes], list[int], list[Any]]:
        bad = [i for i, event in enumerate(events) if event is None]
        self._forget(
            [seqs[i] for i in bad], len(bad), sum(HEADER_SIZE + len(payloads[i]) for i in bad)
        )
        self.recordDrop("undecodable", len(bad))
        self._advance()
        keep = [i for i, event in enumerate(events) if event is not None]
        return [payloads[i] for i in keep], [seqs[i] for i in keep], [events[i] for i in keep]

    def ack(self, batch: Batch) -> None:
        """The destination confirmed ``batch``."""
        if self._closed:
            return  # its records are replayed at the next open
        if not isinstance(batch, DiskBatch):
            raise TypeError(f"not a batch of this buffer: {batch!r}")
        self.inFlightEvents -= len(batch)
        self.inFlightBytes -= batch.nbytes
        self._forget(batch.seqs, len(batch), batch.nbytes)
        self._advance()
        self._wake()

    def requeue(self, batch: Batch) -> None:
        """Delivery failed: the batch goes back to the head, in order."""
        if self._closed:
            return
        if not isinstance(batch, DiskBatch):
            raise TypeError(f"not a batch of this buffer: {batch!r}")
        self.inFlightEvents -= len(batch)
        self.inFlightBytes -= batch.nbytes
        self._ahead.pushBack(batch.payloads, batch.seqs)

    def discard(self, batch: Batch, reason: str) -> None:
        """Give up on ``batch``; count it."""
        self.ack(batch)
        self.recordDrop(reason, len(batch))

    def _forget(self, seqs: list[int], count: int, size: int) -> None:
        """Records leave the buffer, acked or dropped."""
        self._depth -= count
        self._nbytes -= size
        self.ackedTotal += count
        self._unacked.remove(seqs)

    def _advance(self, force: bool = False) -> None:
        """Move the checkpoint to the first unacked record; delete acked segments."""
        first = self._unacked.first
        if first is None:
            first = self._store.readPos if self._store.unread else self._store.tail
        if first == self._checkpointPos and not force:
            return
        self._checkpointPos = first
        self._checkpointDirty = True
        self._store.release(first)
        if force or self.sync == "always":
            self._writeCheckpoint(sync=self.sync != "never")
        else:  # at the next tick: a rename per ack would cost more than the write
            self._startSyncLoop()

    def _writeCheckpoint(self, sync: bool) -> None:
        pos = self._checkpointPos
        writeCheckpoint(self.path, pos >> OFFSET_BITS, pos & OFFSET_MASK, self.ackedTotal, sync)
        self._checkpointDirty = False

    # -- syncing -------------------------------------------------------------------

    def _startSyncLoop(self) -> None:
        if self._syncLoop is None:
            self._syncLoop = LoopingCall(self.syncNow)
            self._syncLoop.clock = self.clock
        if not self._syncLoop.running:
            self._syncLoop.start(self.syncInterval, now=False)

    def syncNow(self) -> None:
        """Write the checkpoint and fsync what was written, if they changed."""
        if self._closed:
            return
        if self.sync != "never":
            self._store.fsync()
        if self._checkpointDirty:
            self._writeCheckpoint(sync=self.sync != "never")
