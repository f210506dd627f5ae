"""Checking a disk buffer's files when it opens, and setting damage aside.

`recover` never raises on a damaged file: it truncates a torn last record,
copies the readable records out of a damaged segment (keeping the original
as ``*.corrupt``) and falls back to the oldest segment when the checkpoint
is missing or damaged.  `openSegments` locks a buffer's directory, recovers
it and opens its `duct.buffers.segments.SegmentStore`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field

from twisted.logger import Logger

from duct.buffers.segments import (
    HEADER,
    HEADER_SIZE,
    SEGMENT_RE,
    SegmentStore,
    lockDirectory,
    readCheckpoint,
    recordAt,
    segmentName,
    writeCheckpoint,
    writeFile,
)

_NONZERO = re.compile(rb"[^\x00]")

log = Logger(namespace="duct.buffers.recovery")


def openSegments(directory: str, name: str, sync: bool, segmentSize: int) -> SegmentStore:
    """Lock ``directory``, repair what is damaged in it, and open its segments.

    Raises RuntimeError if another buffer has it open.
    """
    lock = lockDirectory(directory)
    try:
        for leftover in os.listdir(directory):
            if leftover.endswith(".tmp"):
                os.unlink(os.path.join(directory, leftover))
        recovered = recover(directory, name, sync)
        return SegmentStore(directory, name, sync, segmentSize, lock, recovered)
    except BaseException:
        os.close(lock)
        raise


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
