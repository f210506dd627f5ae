"""Hostile-input benchmark: does a real agent hold while a peer misbehaves?

Runs the cases of ``tests/hostile_cases.py`` (the same ones as
``tests/test_hostile.py``), each against its own ``twistd -n duct`` agent:
a relay on TCP and UDP to a JSON lines file, a Riemann sink and a store,
with buffers of 20,000 events, while a good client sends Msgs of ten
events and waits for each ack.  Prints one line per case:

- ``held`` when, in every run, every good ack came (none waited over
  10 s), every acked event was delivered, the agent's RSS stayed under
  400 MB and no buffer went over its bound, and the case's own checks
  passed; else ``broke`` (``--why`` says what broke first);
- worst_ack_ms: the longest the good client waited for an ack;
- peak_rss_mb: the agent's peak resident memory, sampled every 0.1 s;
- refusals: what the agent counted for the case in ``/stats``
  (``repaired``, ``too_many_events``, ``too_large``, ``held``,
  ``refused_connections``, ``idle_closed``; 0 for the pattern case).

Each figure is the median of ``--runs`` runs.

    .venv/bin/python bench/hostile.py [--runs 3] [--cases a-utf8-tcp b-16mib-frame ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from agents import MB, Harness  # noqa: E402
from hostile_cases import CASES  # noqa: E402


async def runOnce(reactor: Any, name: str) -> dict[str, Any]:
    case = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(reactor, Path(tmp), extraSources=case.extraSources, sinkUp=case.sinkUp)
        why = None
        refusals = 0
        try:
            refusals = await case.run(harness)
        except Exception as e:  # noqa: BLE001 - a broken case is a result
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
        finally:
            await harness.cleanup()
        good = harness.good
        return {
            "held": why is None,
            "why": why,
            "worst_ack_ms": max(good.worstAck, good.waiting()) * 1000,
            "peak_rss_mb": harness.peakRss / MB,
            "refusals": refusals,
        }


async def main(reactor: Any, args: argparse.Namespace) -> None:
    print(f"{'case':<20} {'result':<7} {'worst_ack_ms':>12} {'peak_rss_mb':>11} {'refusals':>8}")
    reasons = []
    for name in args.cases:
        runs = [await runOnce(reactor, name) for _ in range(args.runs)]
        held = all(r["held"] for r in runs)
        worst = statistics.median(r["worst_ack_ms"] for r in runs)
        peak = statistics.median(r["peak_rss_mb"] for r in runs)
        refusals = statistics.median(r["refusals"] for r in runs)
        result = "held" if held else "broke"
        print(f"{name:<20} {result:<7} {worst:>12.0f} {peak:>11.1f} {refusals:>8g}", flush=True)
        reasons += [f"{name}: {r['why']}" for r in runs if r["why"]]
    if args.why:
        for line in reasons:
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Hostile-input benchmark")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--why", action="store_true", help="say what broke, run by run")
    arguments = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    task.react(lambda r: defer.ensureDeferred(main(r, arguments)))
