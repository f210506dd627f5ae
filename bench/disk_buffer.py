"""DiskBuffer cost, through a real relay and through the buffer alone, per sync mode.

Prints JSON with medians of several runs.  ``relay`` runs a real ``twistd``
Riemann relay (listener to RiemannTCP output, as bench/riemann_relay.py
does) with the output's buffer on disk:

- ``relay.<sync>.events_per_s`` and ``cpu_ms_per_1000``: the events
  sent by 4 clients, 100 per Msg, each Msg awaiting its ack (and so, for
  ``sync: always``, its fsync), until the sink has them all;
- ``relay.backlog_disk`` and ``backlog_memory``: with the sink down, 100,000 events queued:
  the agent's RSS growth and the bytes per event in the segment files,
  beside the same backlog in a memory buffer.

``buffer`` measures put + take + ack on a DiskBuffer alone:

- ``buffer.<sync>.events_per_s``: 100,000 encoded events (~100-byte records) put
  in batches of 100, each batch taken and acked at once (the reader keeps
  up: records go from the write straight into the read-ahead window);
- ``buffer.<sync>.backlog_events_per_s``: the same events all put first, then
  taken and acked in batches of 100 (read back from the segment files);
- ``buffer.bytes_per_event_on_disk``: segment bytes per buffered event;
- ``buffer.rss_growth_bytes``: how much the resident set of a fresh Python process
  grows while a DiskBuffer holds a 100,000-event backlog, beside the same
  backlog in a MemoryBuffer.

    .venv/bin/python bench/disk_buffer.py [--events N] [--runs R] [--dir DIR]

DIR should be on the disk the agent would use (fsync on tmpfs costs nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
from twisted.internet.task import Clock

from duct.buffers.disk import DiskBuffer
from duct.buffers.memory import MemoryBuffer
from duct.objects import Event
from duct.protocol.riemann import encodeEvent

BATCH = 100


def payload(i: int) -> bytes:
    """A ~92-byte encoded Riemann event: a 100-byte record with its header."""
    event = Event("ok", f"bench.svc.{i % 1000}", "bench", float(i), 60.0, ["bench"], "bench.host")
    event.attributes = {"dc": "eu-1"}
    event.time = 1_700_000_000 + i / 1000
    return encodeEvent(event)


def openBuffer(directory: str, sync: str, events: int) -> DiskBuffer:
    return DiskBuffer(
        "bench", Clock(), directory, sync=sync, codec="bytes", maxsize=events * 2, max_bytes=2**40
    )


def steady(payloads: list[bytes], sync: str, root: str) -> float:
    directory = tempfile.mkdtemp(dir=root)
    buffer = openBuffer(directory, sync, len(payloads))
    start = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        buffer.put(payloads[i : i + BATCH])
        batch = buffer.take(BATCH)
        assert batch is not None
        buffer.ack(batch)
    buffer.clock.advance(buffer.syncInterval)  # the interval mode's last fsync
    elapsed = time.perf_counter() - start
    assert buffer.depth == 0
    buffer.close()
    shutil.rmtree(directory)
    return len(payloads) / elapsed


def backlog(payloads: list[bytes], sync: str, root: str) -> tuple[float, float]:
    """(events/s, bytes on disk per event)."""
    directory = tempfile.mkdtemp(dir=root)
    buffer = openBuffer(directory, sync, len(payloads))
    start = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        buffer.put(payloads[i : i + BATCH])
    onDisk = sum(
        os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory) if ".seg" in n
    )
    taken = 0
    while (batch := buffer.take(BATCH)) is not None:
        taken += len(batch)
        buffer.ack(batch)
    buffer.clock.advance(buffer.syncInterval)
    elapsed = time.perf_counter() - start
    assert taken == len(payloads) and buffer.depth == 0
    buffer.close()
    shutil.rmtree(directory)
    return len(payloads) / elapsed, onDisk / len(payloads)


def rssChild(kind: str, events: int, root: str) -> None:
    """In a fresh process: print the RSS growth while ``kind`` holds a backlog."""
    template = [payload(i) for i in range(BATCH)]  # the producer's own batch, reused
    directory = tempfile.mkdtemp(dir=root)
    process = psutil.Process()
    buffer: MemoryBuffer | DiskBuffer
    if kind == "disk":
        buffer = openBuffer(directory, "interval", events)
    else:
        buffer = MemoryBuffer("bench", Clock(), maxsize=events * 2, max_bytes=2**40)
    buffer.put(list(template), sizes=[len(p) for p in template])  # warm up: imports, timers
    warm = buffer.take(BATCH)
    assert warm is not None
    buffer.ack(warm)
    before = process.memory_info().rss
    for _ in range(0, events, BATCH):
        # Copies, as bytes arriving from a socket would be.
        items = [bytes(bytearray(p)) for p in template]
        buffer.put(items, sizes=[len(p) for p in items])
    assert buffer.depth == events
    print(process.memory_info().rss - before)
    if isinstance(buffer, DiskBuffer):
        buffer.close()
    shutil.rmtree(directory)


def rssGrowth(kind: str, events: int, root: str) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", kind, "--events", str(events), "--dir", root],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the segment files")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-relay", dest="relay", action="store_false", help="measure the buffer alone"
    )
    args = parser.parse_args()
    root = args.dir or tempfile.gettempdir()
    if args.rss_child:
        rssChild(args.rss_child, args.events, root)
        return
    payloads = [payload(i) for i in range(args.events)]
    result: dict[str, object] = {
        "events": args.events,
        "runs": args.runs,
        "batch": BATCH,
        "record_bytes": round(statistics.mean(len(p) + 8 for p in payloads), 1),
        "filesystem": next(
            (p.fstype for p in psutil.disk_partitions(all=True) if p.mountpoint == _mount(root)),
            "?",
        ),
    }
    if args.relay:
        result["relay"] = relayFigures(args.events, args.runs)
    buffer: dict[str, object] = {}
    result["buffer"] = buffer
    perEvent: list[float] = []
    for sync in ("always", "interval", "never"):
        steadyRuns, backlogRuns = [], []
        for _ in range(args.runs):
            steadyRuns.append(steady(payloads, sync, root))
            rate, size = backlog(payloads, sync, root)
            backlogRuns.append(rate)
            perEvent.append(size)
        buffer[sync] = {
            "events_per_s": round(statistics.median(steadyRuns)),
            "backlog_events_per_s": round(statistics.median(backlogRuns)),
        }
    buffer["bytes_per_event_on_disk"] = round(statistics.median(perEvent), 1)
    buffer["rss_growth_bytes"] = {
        kind: statistics.median(rssGrowth(kind, args.events, root) for _ in range(args.runs))
        for kind in ("disk", "memory")
    }
    print(json.dumps(result, indent=2))


def relayFigures(events: int, runs: int) -> dict[str, object]:
    """Run the relay measurements of bench/riemann_relay.py with a disk buffer."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import riemann_relay as relay
    from twisted.internet import defer, task

    figures: dict[str, object] = {}

    async def measure(reactor: object) -> None:
        for sync in ("always", "interval", "never"):
            results = [await relay.relayRun(events, 100, sync) for _ in range(runs)]
            figures[sync] = {
                key: round(statistics.median(r[key] for r in results), 2)
                for key in ("events_per_s", "cpu_ms_per_1000", "ack_p99_ms")
            }
        for kind, sync in (("disk", "interval"), ("memory", None)):
            results = [await relay.bufferedRun(100_000, sync) for _ in range(runs)]
            figures[f"backlog_{kind}"] = {
                key: round(statistics.median(r[key] for r in results), 2) for key in results[0]
            }

    try:
        task.react(lambda reactor: defer.ensureDeferred(measure(reactor)))
    except SystemExit as e:  # react exits when done
        if e.code:
            raise
    return figures


def _mount(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


if __name__ == "__main__":
    main()
