"""The local store's costs: writing batches to SQLite, and answering the dashboard.

Prints JSON with medians of several runs:

- write_events_per_s and write_cpu_ms_per_1000: events written by
  StoreDatabase.write in batches of --batch (the work of the store's
  writer thread), spread over --series series;
- bytes_per_point: the database file's size per stored point;
- series_query_ms: /api/series' query for one series holding --history
  points, downsampled to 300;
- services_query_ms: /api/services' query with --series series;
- cleanup_ms: a cleanup that removes every point of the --series series
  and a tenth of the long one's.

    .venv/bin/python bench/store.py [--events N] [--series S] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

from duct.objects import Event
from duct.outputs.store_db import StoreDatabase


def makeBatches(total: int, series: int, size: int) -> list[list[Event]]:
    batches = []
    for start in range(0, total, size):
        batches.append(
            [
                Event(
                    "ok",
                    f"bench.{i % series}",
                    "bench",
                    float(i % 97),
                    60.0,
                    hostname="bench.example",
                    evtime=1_000_000.0 + i // series,
                )
                for i in range(start, min(start + size, total))
            ]
        )
    return batches


def oneRun(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "store.sqlite")
        db = StoreDatabase(path)
        batches = makeBatches(args.events, args.series, args.batch)
        wall, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            db.write(batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        db.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = os.path.getsize(path)

        # One long series for the range query.
        history = [
            Event("ok", "long", None, float(i % 13), 60.0, hostname="h", evtime=2_000_000.0 + i)
            for i in range(args.history)
        ]
        for start in range(0, len(history), args.batch):
            db.write(history[start : start + args.batch])
        reader = StoreDatabase(path, readOnly=True)
        started = time.perf_counter()
        points = reader.series("h", "long", 2_000_000.0, 2_000_000.0 + args.history, 300)
        seriesMs = (time.perf_counter() - started) * 1000
        assert points is not None and len(points) <= 300
        started = time.perf_counter()
        services = reader.services()
        servicesMs = (time.perf_counter() - started) * 1000
        assert len(services) == args.series + 1

        started = time.perf_counter()
        db.cleanup(2_000_000.0 + args.history / 10)
        cleanupMs = (time.perf_counter() - started) * 1000
        reader.close()
        db.close()
    return {
        "write_events_per_s": args.events / wall,
        "write_cpu_ms_per_1000": cpu * 1000 / (args.events / 1000),
        "bytes_per_point": size / args.events,
        "series_query_ms": seriesMs,
        "services_query_ms": servicesMs,
        "cleanup_ms": cleanupMs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--series", type=int, default=500)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--history", type=int, default=604_800 // 10, help="points in one series")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [oneRun(args) for _ in range(args.runs)]
    result: dict[str, Any] = {
        "events": args.events,
        "series": args.series,
        "batch": args.batch,
        "history_points": args.history,
        "runs": args.runs,
    }
    for name in runs[0]:
        value = statistics.median(run[name] for run in runs)
        result[name] = round(value, 3 if value < 100 else 0)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
