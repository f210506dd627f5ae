"""The files of a `duct.buffers.disk.DiskBuffer`: segments, records and the ack checkpoint.

A buffer's directory holds append-only segment files named by a growing
number (``00000001.seg``), each a run of records::

    length   4 bytes, big-endian: the payload's size
    crc      4 bytes, big-endian: zlib.crc32 of the length bytes then the payload
    payload  ``length`` bytes

The CRC covers the length, so a zero-filled tail (what a file system may
leave after a power cut) is never read as records.  ``checkpoint`` names
the first record not yet acknowledged: one line of JSON and a line with its
CRC32, replaced atomically (temporary file, fsync, rename).  A ``lock``
file (flock) keeps a second buffer out of a directory in use.

An open buffer's files are a `SegmentStore`.  `duct.buffers.recovery`
checks and repairs them when a buffer opens, and opens the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.logger import Logger

if TYPE_CHECKING:
    from duct.buffers.recovery import Recovered

HEADER = struct.Struct(">II")
HEADER_SIZE = HEADER.size
_LENGTH = struct.Struct(">I")
MAX_RECORD = 64 * 1024 * 1024
"""No record is larger; a bigger length field marks damage."""

OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
SEGMENT_RE = re.compile(r"^(\d+)\.seg$")
CHECKPOINT = "checkpoint"

log = Logger(namespace="duct.buffers.segments")


def position(segment: int, offset: int) -> int:
    """A record's place on disk as one int, ordered as the records are."""
    return (segment << OFFSET_BITS) | offset


def segmentName(segment: int) -> str:
    return f"{segment:08d}.seg"


def encodeRecords(payloads: Sequence[bytes]) -> bytes:
    """The records for ``payloads``, ready for a single write."""
    parts: list[bytes] = []
    append = parts.append
    pack, packLength, crc32 = HEADER.pack, _LENGTH.pack, zlib.crc32
    for payload in payloads:
        size = len(payload)
        append(pack(size, crc32(payload, crc32(packLength(size)))))
        append(payload)
    return b"".join(parts)


def parseRecords(data: bytes, limit: int) -> tuple[list[bytes], int, bool]:
    """Up to ``limit`` whole records from the start of ``data``.

    Returns their payloads, the bytes they span, and whether a damaged
    record stopped the parse (an incomplete last record does not).
    """
    payloads: list[bytes] = []
    offset, end = 0, len(data)
    unpack, crc32 = HEADER.unpack_from, zlib.crc32
    while len(payloads) < limit and offset + HEADER_SIZE <= end:
        size, crc = unpack(data, offset)
        stop = offset + HEADER_SIZE + size
        if size > MAX_RECORD:
            return payloads, offset, True
        if stop > end:
            break
        payload = data[offset + HEADER_SIZE : stop]
        if crc32(payload, crc32(data[offset : offset + 4])) != crc:
            return payloads, offset, True
        payloads.append(payload)
        offset = stop
    return payloads, offset, False


def recordAt(data: bytes | memoryview, offset: int) -> int:
    """The size of the valid record at ``offset``, or 0 if there is none."""
    if offset + HEADER_SIZE > len(data):
        return 0
    size, crc = HEADER.unpack_from(data, offset)
    stop = offset + HEADER_SIZE + size
    if size > MAX_RECORD or stop > len(data):
        return 0
    if zlib.crc32(data[offset + HEADER_SIZE : stop], zlib.crc32(data[offset : offset + 4])) != crc:
        return 0
    return stop - offset


# -- the checkpoint ---------------------------------------------------------------


def readCheckpoint(directory: str) -> tuple[tuple[int, int, int] | None, str]:
    """``((segment, offset, acked), "")``, or ``(None, why)``."""
    try:
        with open(os.path.join(directory, CHECKPOINT), "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable ({e})"
    try:
        body, crc = raw.split(b"\n")[:2]
        if int(crc, 16) != zlib.crc32(body):
            return None, "damaged (bad CRC)"
        data = json.loads(body)
        values = (data["segment"], data["offset"], data["acked"])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError(values)
    except (ValueError, KeyError, TypeError) as e:
        return None, f"damaged ({e!r})"
    return values, ""


def writeCheckpoint(directory: str, segment: int, offset: int, acked: int, sync: bool) -> None:
    body = json.dumps({"segment": segment, "offset": offset, "acked": acked}).encode()
    writeFile(os.path.join(directory, CHECKPOINT), b"%s\n%08x\n" % (body, zlib.crc32(body)), sync)


def writeFile(path: str, content: bytes, sync: bool) -> None:
    """Replace ``path`` atomically with ``content``."""
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def fsyncDirectory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the files of an open buffer ------------------------------------------------------


def lockDirectory(directory: str) -> int:
    """Create ``directory`` if needed and lock it; return the lock's descriptor.

    Raises RuntimeError if another buffer holds the lock.
    """
    os.makedirs(directory, exist_ok=True)
    lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        raise RuntimeError(f"disk buffer {directory} is in use by another buffer") from None
    return lock


class SegmentStore:
    """The segment files of one open buffer: appends at the tail, reads from the head.

    It counts the records written and not yet read (``unread``), per segment
    too, so that a segment found damaged while reading can be given up with
    a count of what it held.  `duct.buffers.recovery.openSegments` opens one.
    """

    def __init__(
        self,
        directory: str,
        name: str,
        sync: bool,
        segmentSize: int,
        lock: int,
        recovered: Recovered,
    ) -> None:
        """Use ``directory``, locked (`lockDirectory`) and recovered (`Recovered`)."""
        self.directory, self.name, self.sync, self.segmentSize = directory, name, sync, segmentSize
        self._lock = lock
        self.recovered = found = recovered
        self.segments = deque(segment for segment, *_ in found.segments)
        self.ends = {segment: end for segment, _, end, _, _ in found.segments}
        self.unreadIn = {segment: [count, size] for segment, _, _, count, size in found.segments}
        self.unread = sum(count for count, _ in self.unreadIn.values())
        self.unreadBytes = sum(size for _, size in self.unreadIn.values())
        self.readPos = position(found.segments[0][0], found.segments[0][1]) if self.unread else 0
        self._reader: tuple[int, int] | None = None  # (segment, fd)
        self.writeSegment, self.writeOffset, self._writer = found.highest, 0, -1
        self.dirty = False
        self.roll()

    def path(self, segment: int) -> str:
        return os.path.join(self.directory, segmentName(segment))

    @property
    def tail(self) -> int:
        """The position the next record will be written at."""
        return position(self.writeSegment, self.writeOffset)

    # -- writing --------------------------------------------------------------------

    def roll(self) -> None:
        """Start a new segment for writing."""
        if self._writer >= 0:
            if self.sync and self.dirty:
                os.fsync(self._writer)
            os.close(self._writer)
        self.writeSegment += 1
        self.writeOffset = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self._writer = os.open(self.path(self.writeSegment), flags, 0o644)
        if self.sync:
            fsyncDirectory(self.directory)
        self.segments.append(self.writeSegment)
        self.ends[self.writeSegment] = 0
        self.unreadIn[self.writeSegment] = [0, 0]
        self.dirty = False

    def append(self, records: bytes) -> int:
        """Write ``records`` at once; return where they start.

        On an error nothing of them stays in the file, and OSError is raised.
        """
        if self.writeOffset >= self.segmentSize:
            self.roll()
        start = self.writeOffset
        try:
            view = memoryview(records)
            while view:
                view = view[os.write(self._writer, view) :]
        except OSError:
            os.ftruncate(self._writer, start)
            raise
        self.writeOffset += len(records)
        self.ends[self.writeSegment] = self.writeOffset
        self.dirty = True
        return position(self.writeSegment, start)

    def addUnread(self, start: int, count: int, size: int) -> None:
        """Records written from ``start`` on are left on disk for `read`."""
        if not self.unread:
            self.readPos = start
        self.unread += count
        self.unreadBytes += size
        counts = self.unreadIn[start >> OFFSET_BITS]
        counts[0] += count
        counts[1] += size

    def fsync(self) -> None:
        if self.dirty:
            os.fsync(self._writer)
            self.dirty = False

    # -- reading --------------------------------------------------------------------

    def read(self, limit: int, budget: int) -> tuple[int, list[bytes], int, int]:
        """Up to ``limit`` unread records from about ``budget`` bytes, in order.

        Returns the position of the first, their payloads, and the records
        and bytes given up because their segment could not be read.
        """
        while self.unread:
            segment, offset = self.readPos >> OFFSET_BITS, self.readPos & OFFSET_MASK
            end = self.ends[segment]
            if offset < end:
                break
            later = [s for s in self.segments if s > segment]
            if not later:  # the counts are wrong: nothing more can be read
                return self.readPos, [], *self._giveUp(segment, self.unread, self.unreadBytes)
            self.readPos = position(later[0], 0)
        else:
            return self.readPos, [], 0, 0
        try:
            fd = self._open(segment)
            data = os.pread(fd, min(end - offset, budget), offset)
            payloads, used, damaged = parseRecords(data, limit)
            if not payloads and not damaged:  # one record larger than the read, or a short file
                size = HEADER_SIZE + int.from_bytes(data[:4], "big") if len(data) >= 4 else 0
                if HEADER_SIZE <= len(data) and size <= min(end - offset, MAX_RECORD):
                    payloads, used, damaged = parseRecords(os.pread(fd, size, offset), 1)
                damaged = not payloads
        except OSError:  # gone, or an I/O error: as unreadable as a bad CRC
            payloads, used, damaged = [], 0, True
        start = self.readPos
        self.readPos += used
        self.unread -= len(payloads)
        self.unreadBytes -= used
        counts = self.unreadIn[segment]
        counts[0] -= len(payloads)
        counts[1] -= used
        lost = self._giveUp(segment, *counts) if damaged else (0, 0)
        return start, payloads, *lost

    def _giveUp(self, segment: int, count: int, size: int) -> tuple[int, int]:
        log.warn(
            "disk buffer {output}: cannot read {segment} at offset {offset}; "
            "skipping the {count} records left in it",
            output=self.name,
            segment=self.path(segment),
            offset=self.readPos & OFFSET_MASK,
            count=count,
        )
        self.unreadIn[segment] = [0, 0]
        self.unread -= count
        self.unreadBytes -= size
        self.readPos = position(segment, self.ends[segment])
        return count, size

    def unreadPayloads(self) -> list[bytes]:
        """Every unread record, without reading it (for inspection)."""
        payloads: list[bytes] = []
        for segment in self.segments:
            if segment < self.readPos >> OFFSET_BITS or len(payloads) >= self.unread:
                continue
            first = segment == self.readPos >> OFFSET_BITS
            offset = self.readPos & OFFSET_MASK if first else 0
            data = os.pread(self._open(segment), self.ends[segment] - offset, offset)
            payloads.extend(parseRecords(data, self.unread - len(payloads))[0])
        return payloads

    def _open(self, segment: int) -> int:
        if self._reader is None or self._reader[0] != segment:
            self._closeReader()
            self._reader = (segment, os.open(self.path(segment), os.O_RDONLY))
        return self._reader[1]

    def _closeReader(self) -> None:
        if self._reader is not None:
            os.close(self._reader[1])
            self._reader = None

    # -- the end ---------------------------------------------------------------------

    def release(self, before: int) -> None:
        """Delete the segments wholly before position ``before``."""
        while self.segments[0] < before >> OFFSET_BITS:
            segment = self.segments.popleft()
            if self._reader is not None and self._reader[0] == segment:
                self._closeReader()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(segment))
            del self.ends[segment], self.unreadIn[segment]

    def close(self) -> None:
        os.fsync(self._writer)
        os.close(self._writer)
        self._closeReader()
        os.close(self._lock)
