"""Pipeline cost per event: sources -> aggregation/triggers/routing -> buffered outputs.

Prints JSON with medians of several runs:

- events_per_s and cpu_ms_per_1000: events pushed through the pipeline into
  a Null output and written, with a rule set and a Counter64 aggregation on
  half of them;
- jsonlines_cpu_ms_per_1000: the same into a JSONLines file output;
- bytes_per_buffered_event: memory a MemoryBuffer holds per queued event
  while its destination is down (tracemalloc, 100,000 events).

    .venv/bin/python bench/pipeline.py [--events N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import tracemalloc
from typing import Any

from duct.aggregators import Counter64
from duct.buffers.memory import MemoryBuffer
from duct.objects import Event
from duct.service import DuctService
from duct.testing import FakeDuct


def makeBatches(total: int, size: int) -> list[list[Event]]:
    batches = []
    for start in range(0, total, size):
        batch = []
        for i in range(start, min(start + size, total)):
            service = f"bench.{i % 50}"
            aggregation = Counter64 if i % 2 else None
            batch.append(
                Event(
                    "ok",
                    service,
                    "bench",
                    float(i),
                    60.0,
                    tags=["bench"],
                    hostname="bench.example",
                    aggregation=aggregation,
                    evtime=i / 1000.0,
                )
            )
        batches.append(batch)
    return batches


def runPipeline(total: int, output: dict[str, Any]) -> tuple[float, float]:
    """Return (events/s by wall clock, CPU ms per 1000 events)."""
    clock = FakeDuct().clock
    config = {
        "outputs": [{**output, "name": "out", "maxsize": total * 2, "batch_size": 1000}],
        "sources": [
            {
                "service": "bench",
                "source": "duct.objects.Source",
                "critical": {r"bench\.1$": "> 100"},
                "warning": {r"bench\.2": "> 50"},
            }
        ],
    }
    service = DuctService(config, reactor=clock)
    source = service.sources[0]
    batches = makeBatches(total, 100)
    out = service.outputs["out"]
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        source.queueBack(batch)
        if len(out.buffer) >= 1000:
            clock.advance(0)
    clock.advance(out.flushInterval)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    assert out.buffer.depth == 0 and out.sent > total * 0.49, (out.buffer.depth, out.sent)
    return total / wall, cpu * 1000 / (total / 1000)


def bytesPerBufferedEvent(total: int) -> float:
    events = makeBatches(total, total)[0]
    for e in events:
        e.aggregation = None
    buffer = MemoryBuffer("bench", FakeDuct().clock, maxsize=total * 2, max_bytes=2**40)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buffer.put(events)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # The events themselves are counted too: they were created before
    # tracing started, so add their own size, measured the same way.
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    copies = makeBatches(total, total)[0]
    eventsBytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del copies
    return (after - before + eventsBytes) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    null: list[tuple[float, float]] = []
    jsonl: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "events.jsonl")
        for _ in range(args.runs):
            null.append(runPipeline(args.events, {"output": "duct.outputs.null.Null"}))
            jsonl.append(
                runPipeline(args.events, {"output": "duct.outputs.file.JSONLines", "path": path})[1]
            )
            os.remove(path)
    print(
        json.dumps(
            {
                "events": args.events,
                "runs": args.runs,
                "events_per_s": round(statistics.median(r[0] for r in null)),
                "cpu_ms_per_1000": round(statistics.median(r[1] for r in null), 3),
                "jsonlines_cpu_ms_per_1000": round(statistics.median(jsonl), 3),
                "bytes_per_buffered_event": round(bytesPerBufferedEvent(100_000)),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
