"""The files of a `duct.buffers.disk.DiskBuffer`: segments, records and the ack checkpoint.

A buffer's directory holds append-only segment files named by a growing
number (``00000001.seg``), each a run of records::

    length   4 bytes, big-endian: the payload's size
    crc      4 bytes, big-endian: zlib.crc32 of the length bytes then the payload
    payload  ``length`` bytes

The CRC covers the length, so a zero-filled tail (what a file system may
leave after a power cut) is never read as records.  ``checkpoint`` names
the first record not yet acknowledged: one line of JSON and a line with its
CRC32, replaced atomically (temporary file, fsync, rename).

`recover` reads the directory when a buffer opens.  It never raises on a
damaged file: it truncates a torn last record, copies readable records out
of a damaged segment (keeping the original as ``*.corrupt``) and falls back
to the oldest segment when the checkpoint is missing or damaged.  A ``lock``
file (flock) keeps a second buffer out of a directory in use.

An open buffer's files are a `SegmentStore`; `ReadAhead` holds the few
records read into memory, and `Unacked` where the checkpoint may move.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import struct
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.logger import Logger

HEADER = struct.Struct(">II")
HEADER_SIZE = HEADER.size
_LENGTH = struct.Struct(">I")
MAX_RECORD = 64 * 1024 * 1024
"""No record is larger; a bigger length field marks damage."""

OFFSET_BITS = 40
OFFSET_MASK = (1 << OFFSET_BITS) - 1
SEGMENT_RE = re.compile(r"^(\d+)\.seg$")
CHECKPOINT = "checkpoint"
_NONZERO = re.compile(rb"[^\x00]")

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


def resync(data: bytes, offset: int) -> int | None:
    """The offset of the next valid record after damage at ``offset``, if any."""
    view = memoryview(data)
    if offset + HEADER_SIZE <= len(data):  # first trust the damaged record's length
        after = offset + HEADER_SIZE + HEADER.unpack_from(data, offset)[0]
        if after < len(data) and recordAt(view, after):
            return after
    candidate = offset + 1
    last = len(data) - HEADER_SIZE
    while candidate <= last:
        if not any(view[candidate : candidate + HEADER_SIZE]):
            # A valid header is never all zeros: skip to the next nonzero byte.
            found = _NONZERO.search(data, candidate)
            if found is None:
                return None
            candidate = max(candidate + 1, found.start() - HEADER_SIZE + 1)
            continue
        if recordAt(view, candidate):
            return candidate
        candidate += 1
    return None


@dataclass
class Scan:
    """What `scanSegment` found: runs of good records and the damage between them."""

    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, records)
    damaged: int = 0  # damaged regions followed by good records
    tail: int | None = None  # where unreadable bytes run to the end of the file

    @property
    def records(self) -> int:
        return sum(count for _, _, count in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(end - start for start, end, _ in self.runs)


def scanSegment(data: bytes, start: int) -> Scan:
    """Check every record of a segment from ``start`` on."""
    scan = Scan()
    view = memoryview(data)
    offset = runStart = start
    count = 0
    while offset < len(data):
        size = recordAt(view, offset)
        if size:
            offset += size
            count += 1
            continue
        if count:
            scan.runs.append((runStart, offset, count))
        following = resync(data, offset)
        if following is None:
            scan.tail = offset
            return scan
        scan.damaged += 1
        offset = runStart = following
        count = 0
    if count:
        scan.runs.append((runStart, offset, count))
    return scan


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


# -- recovery when a buffer opens ---------------------------------------------------


@dataclass
class Recovered:
    """The segments to replay, each with where its unacked records start."""

    segments: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    # (segment, start, end, records, bytes)
    highest: int = 0
    acked: int = 0
    corruptRecords: int = 0
    corruptSegments: int = 0
    tornTails: int = 0


def recover(directory: str, name: str, sync: bool) -> Recovered:
    """Check the segments in ``directory`` and repair what is damaged."""
    found = sorted(
        int(match.group(1)) for match in map(SEGMENT_RE.match, os.listdir(directory)) if match
    )
    checkpoint, why = readCheckpoint(directory)
    result = Recovered(highest=max(found, default=0))
    if checkpoint is None:
        if found:
            log.warn(
                "disk buffer {output}: checkpoint {why} in {path}; replaying from the oldest "
                "segment, {segment} (events may be delivered twice)",
                output=name,
                why=why,
                path=directory,
                segment=segmentName(found[0]),
            )
        first, offset = 0, 0
    else:
        first, offset, result.acked = checkpoint
        result.highest = max(result.highest, first)
    for segment in found:
        path = os.path.join(directory, segmentName(segment))
        if segment < first:  # wholly acknowledged; its deletion was interrupted
            with contextlib.suppress(OSError):
                os.unlink(path)
            continue
        start = offset if segment == first else 0
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            result.corruptSegments += 1
            result.corruptRecords += 1
            aside = _asideName(path)
            log.warn(
                "disk buffer {output}: cannot read {segment} ({error}); moving it to {aside}",
                output=name,
                segment=path,
                error=e,
                aside=aside,
            )
            with contextlib.suppress(OSError):
                os.rename(path, aside)
            continue
        if start > len(data):
            log.warn(
                "disk buffer {output}: checkpoint is past the end of {segment}; "
                "replaying the whole segment",
                output=name,
                segment=segmentName(segment),
            )
            start = 0
        scan = scanSegment(data, start)
        last = segment == found[-1]
        if scan.damaged or (scan.tail is not None and not last):
            start = _setAside(directory, segment, data, scan, start, result, name, sync)
        elif scan.tail is not None:
            result.tornTails += 1
            log.warn(
                "disk buffer {output}: truncated a torn record at the end of {segment} "
                "({count} bytes at offset {offset})",
                output=name,
                segment=path,
                count=len(data) - scan.tail,
                offset=scan.tail,
            )
            os.truncate(path, scan.tail)
        if os.path.exists(path):
            end = start + scan.nbytes if scan.runs else start
            result.segments.append((segment, start, end, scan.records, scan.nbytes))
    return result


def _asideName(path: str) -> str:
    aside, n = path + ".corrupt", 0
    while os.path.exists(aside):
        n += 1
        aside = f"{path}.corrupt.{n}"
    return aside


def _setAside(
    directory: str,
    segment: int,
    data: bytes,
    scan: Scan,
    start: int,
    result: Recovered,
    name: str,
    sync: bool,
) -> int:
    """Keep a damaged segment as ``*.corrupt`` and its readable records in a new copy.

    Returns the offset where the copy's records start (0).
    """
    path = os.path.join(directory, segmentName(segment))
    aside = _asideName(path)
    try:
        os.link(path, aside)
    except OSError:
        shutil.copyfile(path, aside)
    damage = scan.damaged + (scan.tail is not None)
    result.corruptSegments += 1
    result.corruptRecords += damage
    log.warn(
        "disk buffer {output}: {segment} is damaged ({damage} unreadable region(s)); "
        "moved it aside to {aside} and kept its {count} readable records",
        output=name,
        segment=path,
        damage=damage,
        aside=aside,
        count=scan.records,
    )
    if start:  # the copy's offsets differ: make the checkpoint point at its start first
        writeCheckpoint(directory, segment, 0, result.acked, sync)
    if scan.runs:
        writeFile(path, b"".join(data[a:b] for a, b, _ in scan.runs), sync)
    else:
        os.unlink(path)
    return 0


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


# -- the files of an open buffer ------------------------------------------------------


class SegmentStore:
    """The segment files of one open buffer: appends at the tail, reads from the head.

    It counts the records written and not yet read (``unread``), per segment
    too, so that a segment found damaged while reading can be given up with
    a count of what it held.
    """

    def __init__(self, directory: str, name: str, sync: bool, segmentSize: int) -> None:
        self.directory, self.name, self.sync, self.segmentSize = directory, name, sync, segmentSize
        os.makedirs(directory, exist_ok=True)
        self._lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise RuntimeError(f"disk buffer {directory} is in use by another buffer") from None
        for leftover in os.listdir(directory):
            if leftover.endswith(".tmp"):
                os.unlink(os.path.join(directory, leftover))
        self.recovered = found = recover(directory, name, sync)
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
