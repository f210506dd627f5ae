"""The disk buffer's files: record format, checkpoint, recovery, and its in-memory state."""

from __future__ import annotations

from pathlib import Path

import pytest

from duct.buffers import recovery
from duct.buffers.readahead import Unacked
from duct.buffers.recovery import openSegments, recover, resync, scanSegment
from duct.buffers.segments import (
    HEADER_SIZE,
    MAX_RECORD,
    encodeRecords,
    parseRecords,
    position,
    readCheckpoint,
    recordAt,
    segmentName,
    writeCheckpoint,
)

PAYLOADS = [b"first", b"", b"third record", b"x" * 300]


def sizes(payloads: list[bytes]) -> list[int]:
    return [HEADER_SIZE + len(p) for p in payloads]


def writeSegment(directory: Path, segment: int, data: bytes) -> Path:
    path = directory / segmentName(segment)
    path.write_bytes(data)
    return path


# -- records -------------------------------------------------------------------------


def test_records_read_back_as_written_up_to_the_limit() -> None:
    data = encodeRecords(PAYLOADS)
    assert len(data) == sum(sizes(PAYLOADS))
    assert parseRecords(data, 100) == (PAYLOADS, len(data), False)
    assert parseRecords(data, 2) == (PAYLOADS[:2], sum(sizes(PAYLOADS[:2])), False)


def test_an_incomplete_last_record_stops_the_parse_without_damage() -> None:
    data = encodeRecords(PAYLOADS)
    payloads, used, damaged = parseRecords(data[:-10], 100)
    assert (payloads, used, damaged) == (PAYLOADS[:3], sum(sizes(PAYLOADS[:3])), False)


def test_a_flipped_byte_or_a_huge_length_is_damage() -> None:
    data = bytearray(encodeRecords(PAYLOADS))
    data[HEADER_SIZE + 1] ^= 0xFF  # in the first payload
    assert parseRecords(bytes(data), 100) == ([], 0, True)
    assert recordAt(bytes(data), 0) == 0
    huge = (MAX_RECORD + 1).to_bytes(4, "big") + bytes(4)
    assert parseRecords(huge + encodeRecords([b"a"]), 100) == ([], 0, True)


def test_zeros_are_never_a_record() -> None:
    assert recordAt(bytes(64), 0) == 0
    assert parseRecords(bytes(64), 100) == ([], 0, True)


def test_resync_finds_the_next_record_after_garbage() -> None:
    good = encodeRecords([b"after"])
    data = encodeRecords([b"before"]) + b"\x07garbage" + bytes(100) + good
    start = sizes([b"before"])[0]
    assert resync(data, start) == len(data) - len(good)
    assert resync(data[: -len(good)], start) is None


def test_a_scan_reports_runs_of_good_records_the_damage_between_and_a_torn_tail() -> None:
    head, tail = encodeRecords(PAYLOADS[:2]), encodeRecords(PAYLOADS[2:])
    data = head + b"\x01\x02\x03garbage!" + tail
    scan = scanSegment(data, 0)
    middle = len(head) + 11
    assert scan.runs == [(0, len(head), 2), (middle, len(data), 2)]
    assert (scan.damaged, scan.tail, scan.records) == (1, None, 4)
    torn = scanSegment(head + tail[:-5], 0)
    assert torn.runs == [(0, len(head) + sizes(PAYLOADS[2:3])[0], 3)]
    assert (torn.damaged, torn.tail) == (0, len(head) + sizes(PAYLOADS[2:3])[0])


# -- the checkpoint ------------------------------------------------------------------


def test_the_checkpoint_reads_back_and_says_why_when_it_cannot(tmp_path: Path) -> None:
    assert readCheckpoint(str(tmp_path)) == (None, "missing")
    writeCheckpoint(str(tmp_path), 3, 1024, 17, sync=True)
    assert readCheckpoint(str(tmp_path)) == ((3, 1024, 17), "")
    raw = (tmp_path / "checkpoint").read_bytes()
    (tmp_path / "checkpoint").write_bytes(raw.replace(b"1024", b"2048"))
    assert readCheckpoint(str(tmp_path)) == (None, "damaged (bad CRC)")


# -- recovery ------------------------------------------------------------------------


def test_recovery_truncates_a_torn_record_at_the_end_of_the_last_segment(
    tmp_path: Path,
) -> None:
    data = encodeRecords(PAYLOADS)
    path = writeSegment(tmp_path, 1, data[:-7])
    found = recover(str(tmp_path), "out", sync=False)
    kept = sum(sizes(PAYLOADS[:3]))
    assert path.stat().st_size == kept
    assert found.tornTails == 1 and found.corruptSegments == 0
    assert found.segments == [(1, 0, kept, 3, kept)]


def test_recovery_sets_a_damaged_segment_aside_and_keeps_its_readable_records(
    tmp_path: Path,
) -> None:
    head, tail = encodeRecords(PAYLOADS[:2]), encodeRecords(PAYLOADS[2:])
    damaged = head + b"\xffdamage\xff" + tail
    path = writeSegment(tmp_path, 1, damaged)
    writeSegment(tmp_path, 2, encodeRecords([b"later"]))
    found = recover(str(tmp_path), "out", sync=False)
    assert (tmp_path / f"{segmentName(1)}.corrupt").read_bytes() == damaged
    assert parseRecords(path.read_bytes(), 100) == (PAYLOADS, len(head) + len(tail), False)
    assert (found.corruptSegments, found.corruptRecords) == (1, 1)
    assert [(segment, records) for segment, _, _, records, _ in found.segments] == [(1, 4), (2, 1)]


def test_recovery_starts_at_the_checkpoint_and_deletes_segments_before_it(
    tmp_path: Path,
) -> None:
    old = writeSegment(tmp_path, 1, encodeRecords([b"acked"]))
    writeSegment(tmp_path, 2, encodeRecords(PAYLOADS))
    offset = sum(sizes(PAYLOADS[:1]))
    writeCheckpoint(str(tmp_path), 2, offset, 5, sync=False)
    found = recover(str(tmp_path), "out", sync=False)
    assert not old.exists()
    end = sum(sizes(PAYLOADS))
    assert found.segments == [(2, offset, end, 3, end - offset)]
    assert (found.acked, found.highest) == (5, 2)


def test_without_a_checkpoint_recovery_replays_from_the_oldest_segment(tmp_path: Path) -> None:
    writeSegment(tmp_path, 4, encodeRecords([b"a"]))
    writeSegment(tmp_path, 5, encodeRecords([b"b", b"c"]))
    found = recover(str(tmp_path), "out", sync=False)
    assert [(segment, start, records) for segment, start, _, records, _ in found.segments] == [
        (4, 0, 1),
        (5, 0, 2),
    ]
    assert (found.highest, found.acked) == (5, 0)


def test_open_segments_locks_the_directory_and_clears_temporary_files(tmp_path: Path) -> None:
    directory = tmp_path / "buf"
    directory.mkdir()
    (directory / "checkpoint.tmp").write_bytes(b"half written")
    writeSegment(directory, 1, encodeRecords(PAYLOADS))
    store = openSegments(str(directory), "out", sync=False, segmentSize=1 << 20)
    try:
        assert not (directory / "checkpoint.tmp").exists()
        assert (store.unread, store.readPos, store.writeSegment) == (4, position(1, 0), 2)
        with pytest.raises(RuntimeError, match="in use by another buffer"):
            openSegments(str(directory), "out", sync=False, segmentSize=1 << 20)
    finally:
        store.close()
    openSegments(str(directory), "out", sync=False, segmentSize=1 << 20).close()


def test_a_failed_recovery_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(directory: str, name: str, sync: bool) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(recovery, "recover", fail)
    with pytest.raises(OSError, match="disk on fire"):
        openSegments(str(tmp_path), "out", sync=False, segmentSize=1 << 20)
    monkeypatch.undo()
    openSegments(str(tmp_path), "out", sync=False, segmentSize=1 << 20).close()


# -- acknowledgements ----------------------------------------------------------------


def test_the_checkpoint_moves_only_past_records_acked_without_a_hole() -> None:
    unacked = Unacked()
    seqs = [unacked.add(pos) for pos in (10, 20, 30, 40)]
    assert seqs == [0, 1, 2, 3] and unacked.first == 10
    unacked.remove([2, 3])  # a later batch acked first
    assert unacked.first == 10
    unacked.remove([0])
    assert unacked.first == 20
    unacked.remove([1])
    assert unacked.first is None
