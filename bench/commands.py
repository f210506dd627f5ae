"""How many command checks per second one agent runs, and the CPU each costs.

For each command (``/bin/true`` and Nagios' ``check_load``), ``--checks``
runs go through one Command source's queue, ``--concurrency`` at a time, on
the real reactor: each is a job, spawned, read, parsed into events.  Prints
JSON with the medians of ``--runs``:

- ``checks_per_s``: checks finished per wall-clock second;
- ``agent_cpu_ms_per_check``: CPU of the agent process (user + system) per check;
- ``child_cpu_ms_per_check``: CPU of the commands themselves per check.

    .venv/bin/python bench/commands.py [--checks N] [--concurrency C] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import DeferredList, ensureDeferred

from duct.sources.command import Command
from duct.testing import FakeDuct

COMMANDS = {
    "true": ["/bin/true"],
    "check_load": ["/usr/lib/nagios/plugins/check_load", "-w", "99,99,99", "-c", "99,99,99"],
}


async def once(argv: list[str], checks: int, concurrency: int) -> dict[str, float]:
    duct = FakeDuct(reactor=reactor, config={"queues": {"default": {"concurrency": concurrency}}})
    source: Any = Command({"service": "bench", "command": argv}, lambda events: None, duct)
    before, started = os.times(), time.perf_counter()
    jobs = [source.submit() for _ in range(checks)]
    await DeferredList([job.whenEnded() for job in jobs])
    wall, after = time.perf_counter() - started, os.times()
    failed = [job for job in jobs if job.state != "finished" or job.result.code != 0]
    if failed:
        raise SystemExit(f"{len(failed)} checks failed: {failed[0].result}")
    agent = (after.user - before.user) + (after.system - before.system)
    child = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {
        "checks_per_s": checks / wall,
        "agent_cpu_ms_per_check": 1000 * agent / checks,
        "child_cpu_ms_per_check": 1000 * child / checks,
    }


async def main(reactor: Any, args: argparse.Namespace) -> None:
    results: dict[str, Any] = {"checks": args.checks, "concurrency": args.concurrency}
    for name, argv in COMMANDS.items():
        if not os.path.exists(argv[0]):
            results[name] = f"{argv[0]} is not installed"
            continue
        runs = [await once(argv, args.checks, args.concurrency) for _ in range(args.runs)]
        results[name] = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    task.react(lambda r: ensureDeferred(main(r, arguments)))
