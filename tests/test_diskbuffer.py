"""duct.buffers.disk: the DiskBuffer, its files, its recovery, and outputs that use it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent

from duct.buffers import bufferFromConfig
from duct.buffers.disk import DiskBatch, DiskBuffer
from duct.buffers.memory import MemoryBuffer
from duct.buffers.segments import HEADER_SIZE, encodeRecords
from duct.objects import Event
from duct.protocol.riemann import encodeEvent
from duct.testing import FakeDuct, RecordingOutput, configure

T0 = 1_700_000_000.123456


def makeEvents(n: int, start: int = 0) -> list[Event]:
    return [
        Event("ok", f"svc.{i}", None, float(i), 60.0, hostname="h", evtime=T0 + i)
        for i in range(start, start + n)
    ]


def record(i: int, size: int = 100) -> bytes:
    """A payload whose record is ``size`` bytes on disk."""
    return f"{i:08d}".encode().ljust(size - HEADER_SIZE, b".")


def records(n: int, start: int = 0, size: int = 100) -> list[bytes]:
    return [record(i, size) for i in range(start, start + n)]


def services(items: list[Any]) -> list[str]:
    return [event.service for event in items]


def names(*indexes: int) -> list[str]:
    return [f"svc.{i}" for i in indexes]


def drain(buffer: DiskBuffer, n: int = 1000) -> list[Any]:
    """Take and ack everything, in order."""
    out: list[Any] = []
    while (batch := buffer.take(n)) is not None:
        out.extend(batch.events)
        buffer.ack(batch)
    return out


def segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".seg"))


def warnings(logged: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.warn]


@pytest.fixture
def open_buffer(tmp_path: Path, clock: Clock) -> Any:
    """Opens DiskBuffers on tmp_path/buf and closes whatever is left open."""
    opened: list[DiskBuffer] = []

    def make(**kwargs: Any) -> DiskBuffer:
        kwargs.setdefault("sync", "never")
        buffer = DiskBuffer("out", clock, str(tmp_path / "buf"), **kwargs)
        opened.append(buffer)
        return buffer

    yield make
    for buffer in opened:
        buffer.close()


# -- MemoryBuffer's semantics ---------------------------------------------------------


def test_durable_flags() -> None:
    assert DiskBuffer.durable is True
    assert MemoryBuffer.durable is False


def test_depth_and_bytes_track_in_flight(open_buffer: Any) -> None:
    buffer = open_buffer(maxsize=3, codec="bytes")
    assert (len(buffer), buffer.depth, buffer.nbytes, buffer.writable) == (0, 0, 0, True)
    assert buffer.put([]) == 0
    assert buffer.put(records(2)) == 2
    assert (buffer.depth, buffer.nbytes, buffer.writable) == (2, 200, True)
    assert buffer.put(records(1, 2)) == 1
    assert not buffer.writable

    batch = buffer.take(2)
    assert isinstance(batch, DiskBatch)
    assert batch.events == records(2)
    assert (len(batch), batch.nbytes) == (2, 200)
    assert (len(buffer), buffer.depth, buffer.nbytes) == (1, 3, 300)
    assert (buffer.inFlightEvents, buffer.inFlightBytes, buffer.pendingBytes) == (2, 200, 100)
    assert not buffer.writable  # in-flight records still count

    buffer.ack(batch)
    assert (len(buffer), buffer.depth, buffer.nbytes, buffer.inFlightEvents) == (1, 1, 100, 0)
    assert buffer.writable


def test_take_from_empty_buffer(open_buffer: Any) -> None:
    buffer = open_buffer()
    assert buffer.take(10) is None
    buffer.put(makeEvents(1))
    buffer.ack(buffer.take(10))
    assert buffer.take(10) is None


def test_requeue_puts_the_batch_back_at_the_head_in_order(open_buffer: Any) -> None:
    buffer = open_buffer(readahead=4)
    buffer.put(makeEvents(10))
    first = buffer.take(3)
    second = buffer.take(3)
    assert services(first.events) == names(0, 1, 2)
    buffer.requeue(second)
    buffer.requeue(first)
    assert (buffer.inFlightEvents, buffer.inFlightBytes, buffer.depth) == (0, 0, 10)
    assert services(buffer.waiting()) == names(*range(10))
    assert services(drain(buffer, 4)) == names(*range(10))
    assert buffer.depth == buffer.nbytes == 0


def test_discard_counts_by_reason(open_buffer: Any) -> None:
    buffer = open_buffer()
    buffer.put(makeEvents(5))
    buffer.discard(buffer.take(2), "rejected")
    buffer.discard(buffer.take(1), "too_large")
    assert buffer.drops == {"rejected": 2, "too_large": 1}
    assert services(drain(buffer)) == names(3, 4)


def test_items_must_be_events_or_bytes(open_buffer: Any) -> None:
    with pytest.raises(TypeError):
        open_buffer().put([5])


def test_block_refuses_a_put_into_a_full_buffer(open_buffer: Any) -> None:
    buffer = open_buffer(maxsize=2)
    assert buffer.put(makeEvents(3)) == 3  # a put into a buffer with room is taken whole
    assert buffer.put(makeEvents(1)) == 0
    assert buffer.drops["overflow"] == 1


def test_drop_oldest_keeps_the_newest(open_buffer: Any) -> None:
    buffer = open_buffer(maxsize=3, overflow="drop_oldest")
    assert buffer.put(makeEvents(2)) == 2
    assert buffer.put(makeEvents(2, 2)) == 2
    assert buffer.put(makeEvents(5, 10)) == 3  # larger than the buffer: its newest stay
    assert buffer.drops["overflow"] == 6
    assert services(drain(buffer)) == names(12, 13, 14)


def test_drop_oldest_never_drops_in_flight(open_buffer: Any) -> None:
    buffer = open_buffer(maxsize=3, overflow="drop_oldest")
    buffer.put(makeEvents(3))
    batch = buffer.take(2)
    buffer.put(makeEvents(1, 3))
    assert buffer.drops["overflow"] == 1
    buffer.ack(batch)
    assert services(drain(buffer)) == names(3)


def test_drop_newest_refuses_what_does_not_fit(open_buffer: Any) -> None:
    buffer = open_buffer(maxsize=3, overflow="drop_newest")
    assert buffer.put(makeEvents(2)) == 2
    assert buffer.put(makeEvents(3, 2)) == 1
    assert buffer.drops["overflow"] == 2
    assert services(drain(buffer)) == names(0, 1, 2)


def test_invalid_settings(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(ValueError, match="overflow"):
        DiskBuffer("out", clock, str(tmp_path), overflow="spill")
    with pytest.raises(ValueError, match="sync"):
        DiskBuffer("out", clock, str(tmp_path), sync="sometimes")


# -- disk: order, persistence, acks -------------------------------------------------------


def test_order_is_kept_across_segments(open_buffer: Any, tmp_path: Path) -> None:
    buffer = open_buffer(segment_size=1000, codec="bytes", readahead=7)
    for start in range(0, 200, 5):
        buffer.put(records(5, start))
    assert len(segments(tmp_path / "buf")) == 20
    assert drain(buffer, 13) == records(200)


def test_unacked_events_survive_a_restart(open_buffer: Any) -> None:
    buffer = open_buffer()
    events = makeEvents(10)
    buffer.put(events[:4])
    buffer.put(events[4:])
    buffer.ack(buffer.take(3))
    buffer.take(2)  # in flight when the agent stops: replayed
    buffer.close()

    reopened = open_buffer()
    assert (reopened.depth, len(reopened)) == (7, 7)
    assert reopened.nbytes == sum(HEADER_SIZE + len(encodeEvent(e)) for e in events[3:])
    replayed = drain(reopened)
    assert replayed == events[3:]  # equal Events, decoded
    assert all(isinstance(event, Event) for event in replayed)


def test_bytes_codec_returns_bytes_and_encodes_events(open_buffer: Any) -> None:
    buffer = open_buffer(codec="bytes")
    event = makeEvents(1)[0]
    buffer.put([b"raw", event])
    assert buffer.take(10).events == [b"raw", encodeEvent(event)]


def test_out_of_order_acks_do_not_skip_the_unacked_batch(open_buffer: Any, tmp_path: Path) -> None:
    buffer = open_buffer(sync="always")  # the checkpoint is written at each ack
    buffer.put(makeEvents(6))
    buffer.take(2)
    second = buffer.take(2)
    checkpoint = (tmp_path / "buf" / "checkpoint").read_text()
    buffer.ack(second)
    assert buffer.depth == 4
    assert (tmp_path / "buf" / "checkpoint").read_text() == checkpoint  # still at svc.0
    buffer.close()

    reopened = open_buffer()
    # The unacked batch comes back; so does the one acked after it (at least once).
    assert services(drain(reopened)) == names(*range(6))


def test_the_checkpoint_moves_once_the_earlier_batch_is_acked(open_buffer: Any) -> None:
    buffer = open_buffer()
    buffer.put(makeEvents(6))
    first, second = buffer.take(2), buffer.take(2)
    buffer.ack(second)
    buffer.ack(first)
    buffer.close()
    assert services(drain(open_buffer())) == names(4, 5)


def test_acked_segments_are_deleted(open_buffer: Any, tmp_path: Path) -> None:
    buffer = open_buffer(segment_size=500, codec="bytes")
    for start in range(0, 50, 5):
        buffer.put(records(5, start))
    assert len(segments(tmp_path / "buf")) == 10
    buffer.ack(buffer.take(12))  # two segments and some of the third
    assert segments(tmp_path / "buf")[0] == "00000003.seg"
    assert len(segments(tmp_path / "buf")) == 8
    drain(buffer)
    assert segments(tmp_path / "buf") == ["00000010.seg"]  # the one being written
    buffer.close()
    reopened = open_buffer()
    assert segments(tmp_path / "buf") == ["00000011.seg"]
    assert reopened.depth == 0


def test_memory_stays_bounded_whatever_the_backlog(open_buffer: Any) -> None:
    buffer = open_buffer(codec="bytes", readahead=50, segment_size=64 * 1024)
    for start in range(0, 100_000, 1000):
        buffer.put([b"%d" % i for i in range(start, start + 1000)])
    assert buffer.depth == 100_000
    assert len(buffer._ahead.payloads) <= 50
    assert len(buffer._unacked.positions) <= 50
    taken = 0
    while (batch := buffer.take(20)) is not None:
        assert batch.events == [b"%d" % i for i in range(taken, taken + len(batch))]
        taken += len(batch)
        assert len(buffer._ahead.payloads) <= 50
        assert len(buffer._unacked.positions) <= 50
        buffer.ack(batch)
    assert taken == 100_000
    assert buffer.depth == buffer.nbytes == 0


def test_in_flight_batches_are_all_that_grows_memory(open_buffer: Any) -> None:
    buffer = open_buffer(codec="bytes", readahead=10)
    buffer.put(records(100))
    batches = [buffer.take(10) for _ in range(5)]
    buffer.ack(batches[4])
    assert len(buffer._ahead.payloads) <= 10
    assert len(buffer._unacked.positions) <= 60
    for batch in batches[:4]:
        buffer.ack(batch)
    assert not buffer._unacked._acked
    assert drain(buffer) == records(50, 50)


# -- limits on disk ---------------------------------------------------------------------


def test_max_bytes_drop_newest(open_buffer: Any) -> None:
    buffer = open_buffer(max_bytes=1000, overflow="drop_newest", codec="bytes")
    assert buffer.put(records(8)) == 8
    assert buffer.put(records(5, 8)) == 2
    assert (buffer.nbytes, buffer.drops["overflow"]) == (1000, 3)
    assert drain(buffer) == records(10)


def test_max_bytes_drop_oldest(open_buffer: Any) -> None:
    buffer = open_buffer(max_bytes=1000, overflow="drop_oldest", codec="bytes", readahead=3)
    buffer.put(records(8))
    assert buffer.put(records(5, 8)) == 5
    assert (buffer.nbytes, buffer.drops["overflow"]) == (1000, 3)
    assert drain(buffer) == records(10, 3)


def test_max_bytes_block_and_when_writable(open_buffer: Any) -> None:
    buffer = open_buffer(max_bytes=1000, codec="bytes")
    assert buffer.put(records(10)) == 10
    assert not buffer.writable
    assert buffer.put(records(1, 10)) == 0
    assert buffer.drops["overflow"] == 1
    fired: list[None] = []
    buffer.whenWritable().addCallback(fired.append)
    batch = buffer.take(1)
    assert not fired
    buffer.requeue(batch)
    assert not fired
    buffer.ack(buffer.take(1))
    assert fired == [None]
    assert buffer.put(records(1, 10)) == 1


# -- recovery ---------------------------------------------------------------------------


def test_a_torn_last_record_is_truncated(
    open_buffer: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    buffer = open_buffer(codec="bytes")
    buffer.put(records(5))
    buffer.close()
    segment = tmp_path / "buf" / "00000001.seg"
    os.truncate(segment, 450)  # half of the fifth record

    reopened = open_buffer(codec="bytes")
    assert reopened.tornTails == 1
    assert reopened.depth == 4
    assert segment.stat().st_size == 400
    assert any("torn" in line and "00000001.seg" in line for line in warnings(logged))
    assert drain(reopened) == records(4)


def test_a_zero_filled_tail_is_not_read_as_records(open_buffer: Any, tmp_path: Path) -> None:
    buffer = open_buffer(codec="bytes")
    buffer.put(records(3))
    buffer.close()
    with open(tmp_path / "buf" / "00000001.seg", "ab") as f:
        f.write(b"\0" * 4096)
    reopened = open_buffer(codec="bytes")
    assert (reopened.tornTails, reopened.corruptRecords) == (1, 0)
    assert drain(reopened) == records(3)


def test_a_damaged_segment_is_set_aside_and_its_readable_records_kept(
    open_buffer: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    buffer = open_buffer(codec="bytes", segment_size=1000)
    for start in range(0, 30, 10):
        buffer.put(records(10, start))
    buffer.close()
    directory = tmp_path / "buf"
    middle = directory / "00000002.seg"
    data = bytearray(middle.read_bytes())
    data[450:452] = b"##"  # inside the fifth record of the middle segment
    middle.write_bytes(bytes(data))

    reopened = open_buffer(codec="bytes")
    assert (reopened.corruptSegments, reopened.corruptRecords) == (1, 1)
    assert reopened.drops["corrupt"] == 1
    assert (directory / "00000002.seg.corrupt").read_bytes() == bytes(data)
    assert reopened.depth == 29
    lines = warnings(logged)
    assert any("00000002.seg" in line and "damaged" in line for line in lines)
    assert drain(reopened) == records(14) + records(15, 15)


def test_damage_with_a_broken_length_is_skipped_by_resynchronising(
    open_buffer: Any, tmp_path: Path
) -> None:
    buffer = open_buffer(codec="bytes")
    buffer.put(records(10))
    buffer.close()
    segment = tmp_path / "buf" / "00000001.seg"
    data = bytearray(segment.read_bytes())
    data[300:304] = b"\xff\x00\x00\x07"  # the fourth record's length
    data[510:530] = b"\x00" * 20  # and the sixth record's payload
    segment.write_bytes(bytes(data))

    reopened = open_buffer(codec="bytes")
    assert reopened.corruptRecords == 2
    assert drain(reopened) == records(3) + [record(4)] + records(4, 6)


def test_a_missing_checkpoint_replays_from_the_oldest_segment(
    open_buffer: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    buffer = open_buffer(codec="bytes", segment_size=500)
    for start in range(0, 20, 5):
        buffer.put(records(5, start))
    buffer.ack(buffer.take(7))
    buffer.close()
    (tmp_path / "buf" / "checkpoint").unlink()

    reopened = open_buffer(codec="bytes")
    assert drain(reopened) == records(15, 5)  # from the oldest segment left: nothing lost
    assert any("checkpoint missing" in line for line in warnings(logged))


@pytest.mark.parametrize("content", [b"", b"garbage", b'{"segment": 1}\n00000000\n'])
def test_a_damaged_checkpoint_replays_from_the_oldest_segment(
    open_buffer: Any, tmp_path: Path, logged: list[dict[str, Any]], content: bytes
) -> None:
    buffer = open_buffer(codec="bytes")
    buffer.put(records(5))
    buffer.ack(buffer.take(2))
    buffer.close()
    (tmp_path / "buf" / "checkpoint").write_bytes(content)
    assert drain(open_buffer(codec="bytes")) == records(5)
    assert any("checkpoint damaged" in line for line in warnings(logged))


def test_the_checkpoint_is_json_with_a_crc(open_buffer: Any, tmp_path: Path) -> None:
    buffer = open_buffer(codec="bytes", sync="always")
    buffer.put(records(5))
    buffer.ack(buffer.take(2))
    body, crc = (tmp_path / "buf" / "checkpoint").read_bytes().splitlines()
    assert json.loads(body) == {"segment": 1, "offset": 200, "acked": 2}


def test_an_undecodable_record_is_dropped_and_counted(open_buffer: Any) -> None:
    buffer = open_buffer()
    events = makeEvents(2)
    buffer.put([events[0], b"\xff\xff not protobuf", events[1]])
    assert drain(buffer) == events
    assert buffer.drops["undecodable"] == 1
    assert buffer.depth == 0


def test_a_directory_is_used_by_one_buffer_at_a_time(open_buffer: Any) -> None:
    open_buffer()
    with pytest.raises(RuntimeError, match="in use"):
        open_buffer()


def test_a_failed_write_leaves_no_partial_record(
    open_buffer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = open_buffer(codec="bytes")
    buffer.put(records(2))
    realWrite = os.write

    def full(fd: int, data: Any) -> int:
        realWrite(fd, bytes(data[:30]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    assert buffer.put(records(3, 2)) == 0
    monkeypatch.undo()
    assert buffer.drops["write_error"] == 3
    assert buffer.put(records(1, 5)) == 1
    assert drain(buffer) == records(2) + [record(5)]


# -- sync modes ---------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    realFsync = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        realFsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_sync_always_fsyncs_each_put(open_buffer: Any, fsyncs: list[int]) -> None:
    buffer = open_buffer(sync="always", codec="bytes")
    fsyncs.clear()
    for i in range(5):
        buffer.put(records(10, i * 10))
    assert len(fsyncs) == 5


def test_sync_interval_fsyncs_on_the_clock(
    open_buffer: Any, fsyncs: list[int], clock: Clock
) -> None:
    buffer = open_buffer(sync="interval", sync_interval=2.0, codec="bytes")
    fsyncs.clear()
    for i in range(5):
        buffer.put(records(10, i * 10))
    assert fsyncs == []
    clock.advance(1.9)
    assert fsyncs == []
    clock.advance(0.1)
    assert len(fsyncs) == 1  # the segment; the checkpoint has not moved
    buffer.ack(buffer.take(10))
    clock.advance(2.0)
    assert len(fsyncs) == 2  # the checkpoint, written at the tick
    clock.advance(2.0)
    assert len(fsyncs) == 2  # nothing changed
    buffer.close()
    assert not clock.getDelayedCalls()


def test_sync_never_leaves_it_to_the_os(
    open_buffer: Any, fsyncs: list[int], clock: Clock, tmp_path: Path
) -> None:
    buffer = open_buffer(sync="never", codec="bytes")
    for i in range(5):
        buffer.put(records(10, i * 10))
    buffer.ack(buffer.take(10))
    checkpoint = tmp_path / "buf" / "checkpoint"
    assert json.loads(checkpoint.read_bytes().splitlines()[0])["acked"] == 0
    clock.advance(60)
    assert json.loads(checkpoint.read_bytes().splitlines()[0])["acked"] == 10  # at the tick
    assert fsyncs == []


# -- outputs ------------------------------------------------------------------------------


def test_an_output_with_a_disk_buffer_delivers_through_it(tmp_path: Path) -> None:
    duct = FakeDuct()
    path = str(tmp_path / "rec")
    config = configure(
        RecordingOutput,
        {"name": "rec", "flush_interval": 0, "buffer": {"type": "disk", "path": path}},
    )
    output = RecordingOutput(config, duct)
    assert isinstance(output.buffer, DiskBuffer)
    output.failing = True
    events = makeEvents(5)
    assert output.eventsReceived(events) == 5
    duct.clock.advance(0)
    assert output.written == []
    output.failing = False
    duct.clock.advance(output.retryInitial)
    assert output.written == events
    assert output.buffer.depth == 0
    output.stop()
    assert output.buffer._closed


def test_an_output_keeps_its_backlog_across_a_restart(tmp_path: Path) -> None:
    config = configure(
        RecordingOutput, {"name": "rec", "buffer": {"type": "disk", "sync": "always"}}
    )
    duct = FakeDuct()
    duct.config["state_dir"] = str(tmp_path)
    output = RecordingOutput(config, duct)
    output.failing = True
    output.eventsReceived(makeEvents(3))
    duct.clock.advance(1.0)
    output.stop()
    assert (tmp_path / "buffers" / "rec" / "checkpoint").exists()

    restarted = FakeDuct()
    restarted.config["state_dir"] = str(tmp_path)
    again = RecordingOutput(config, restarted)
    assert again.buffer.depth == 3
    again.flush()
    restarted.clock.advance(0)
    assert services(again.written) == names(0, 1, 2)
    again.stop()


def test_the_default_buffer_is_in_memory(clock: Clock) -> None:
    buffer = bufferFromConfig("out", clock, {"maxsize": 5, "buffer": {"max_bytes": 1000}})
    assert isinstance(buffer, MemoryBuffer)
    assert (buffer.maxsize, buffer.max_bytes) == (5, 1000)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"type": "tape"}, "buffer.type"),
        ({"type": "disk", "size": 5}, "buffer.size"),
        ({"type": "disk", "sync": "sometimes"}, "buffer.sync"),
        ({"type": "disk", "sync_interval": 0}, "buffer.sync_interval"),
        ({"type": "disk", "max_bytes": "lots"}, "buffer.max_bytes"),
        ({"type": "disk", "path": ""}, "buffer.path"),
        ({"type": "memory", "sync": "always"}, "buffer.sync"),
    ],
)
def test_bad_buffer_settings_name_the_key(
    clock: Clock, tmp_path: Path, settings: dict[str, Any], key: str
) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        bufferFromConfig("out", clock, {"buffer": settings}, stateDir=str(tmp_path))


def test_an_output_with_bad_buffer_settings_raises(tmp_path: Path) -> None:
    config = configure(RecordingOutput, {"buffer": {"type": "disk", "flavour": "x"}})
    with pytest.raises(ValueError, match="buffer.flavour"):
        RecordingOutput(config, FakeDuct())


def test_records_are_length_and_crc_framed() -> None:
    blob = encodeRecords([b"ab", b""])
    assert len(blob) == 2 * HEADER_SIZE + 2
    assert blob[:4] == b"\0\0\0\x02"
    assert blob[HEADER_SIZE : HEADER_SIZE + 2] == b"ab"


def crash(buffer: DiskBuffer) -> None:
    """Stop using ``buffer`` as a killed process would: no checkpoint, no flush."""
    buffer._store.close()
    buffer._closed = True
    if buffer._syncLoop is not None and buffer._syncLoop.running:
        buffer._syncLoop.stop()


def test_a_crash_before_the_checkpoint_is_written_replays_acked_events(
    open_buffer: Any,
) -> None:
    buffer = open_buffer(sync="interval", codec="bytes")
    buffer.put(records(6))
    buffer.ack(buffer.take(4))
    crash(buffer)  # before the interval wrote the moved checkpoint
    assert drain(open_buffer(codec="bytes")) == records(6)  # at least once


def test_damage_in_the_checkpointed_segment(open_buffer: Any, tmp_path: Path) -> None:
    buffer = open_buffer(codec="bytes")
    buffer.put(records(10))
    buffer.ack(buffer.take(3))
    buffer.close()
    segment = tmp_path / "buf" / "00000001.seg"
    data = bytearray(segment.read_bytes())
    data[650] ^= 0xFF  # the seventh record
    segment.write_bytes(bytes(data))

    reopened = open_buffer(codec="bytes")
    assert reopened.corruptRecords == 1
    assert reopened.depth == 6
    reopened.close()
    again = open_buffer(codec="bytes")  # the copy and the checkpoint agree
    assert again.corruptRecords == 0
    assert drain(again) == records(3, 3) + records(3, 7)


@pytest.mark.parametrize("overflow", ["block", "drop_oldest", "drop_newest"])
@pytest.mark.parametrize("seed", range(4))
def test_behaves_as_a_memory_buffer(
    open_buffer: Any, clock: Clock, overflow: str, seed: int
) -> None:
    """Random puts, takes, acks, requeues and discards give what a MemoryBuffer gives."""
    import random

    rng = random.Random(seed)
    disk = open_buffer(
        codec="bytes", overflow=overflow, maxsize=60, segment_size=700, readahead=rng.randint(1, 9)
    )
    memory = MemoryBuffer("out", clock, maxsize=60, overflow=overflow)
    inFlight: list[tuple[Any, Any]] = []
    n = 0
    for _ in range(600):
        op = rng.random()
        if op < 0.4:
            count = rng.randint(0, 12)
            items = records(count, n, size=rng.choice([20, 100]))
            n += count
            assert disk.put(items) == memory.put(items, sizes=[1] * count)
        elif op < 0.7:
            size = rng.randint(1, 15)
            d, m = disk.take(size), memory.take(size)
            assert (d is None) == (m is None)
            if d is not None:
                assert d.events == m.events
                inFlight.append((d, m))
        elif inFlight:
            d, m = inFlight.pop(rng.randrange(len(inFlight)))
            action = rng.choice(["ack", "ack", "requeue", "discard"])
            if action == "discard":
                disk.discard(d, "rejected")
                memory.discard(m, "rejected")
            else:
                getattr(disk, action)(d)
                getattr(memory, action)(m)
        assert (disk.depth, len(disk), disk.writable) == (
            memory.depth,
            len(memory),
            memory.writable,
        )
        assert disk.drops == memory.drops
    for d, m in inFlight:
        disk.ack(d)
        memory.ack(m)
    assert disk.waiting() == memory.waiting()
    assert drain(disk, 7) == [item for item in memory.waiting()]
    assert disk.nbytes == 0


def test_a_segment_damaged_while_open_is_skipped_and_counted(
    open_buffer: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    buffer = open_buffer(codec="bytes", readahead=2)
    buffer.put(records(10))  # two in memory, eight left on disk
    os.truncate(tmp_path / "buf" / "00000001.seg", 300)
    assert drain(buffer) == records(3)
    assert (buffer.drops["corrupt"], buffer.corruptRecords) == (7, 1)
    assert buffer.depth == buffer.nbytes == len(buffer) == 0
    assert any("cannot read" in line and "00000001.seg" in line for line in warnings(logged))
    assert buffer.put(records(1, 10)) == 1
    assert drain(buffer) == [record(10)]


def test_an_unreadable_segment_is_moved_aside_on_open(open_buffer: Any, tmp_path: Path) -> None:
    buffer = open_buffer(codec="bytes")
    buffer.put(records(3))
    buffer.close()
    (tmp_path / "buf" / "00000002.seg").mkdir()  # opening it fails
    reopened = open_buffer(codec="bytes")
    assert reopened.corruptSegments == 1
    assert (tmp_path / "buf" / "00000002.seg.corrupt").is_dir()
    assert drain(reopened) == records(3)
