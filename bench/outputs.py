"""Outputs against their real destinations: events/s and CPU per 1,000 events.

For each output it knows (`BENCHES`, name -> async function), the script
starts the real destination in a process of its own, builds the output as
the agent does (a `DuctService` from a config), pushes ``--events`` events
through it and waits until the destination has confirmed every one.  It
prints JSON: for each entry, the median of ``--runs`` runs of events/s and
of this process's CPU milliseconds per 1,000 events (the destination's CPU
is its own process's, not counted).

Entries:

- ``http``: `duct.outputs.http.HTTP` (``format: json``, default options)
  POSTing to a `twisted.web` sink that parses each body and answers 200;
- ``http-bare``: a bare treq client posting the same bodies, as many at
  once as the output has in flight: what the sink itself can take.

- ``influxdb``: `duct.outputs.influxdb.InfluxDB` (v1, default options)
  writing to Debian's influxd; ``influxdb-bare``: treq posting the same
  line protocol bodies, ``max_in_flight`` at once;
- ``remotewrite``: `duct.outputs.prometheus.RemoteWrite` sending to
  Debian's prometheus with its receiver on; ``remotewrite-bare``: treq
  posting the same snappy bodies;
- ``prometheus``: `duct.outputs.prometheus.Prometheus` taking the events
  into its gauges, then one scrape of them over HTTP;
  ``prometheus-bare``: prometheus_client's own labelled Gauge set with
  the same values, then one exposition;
- ``graphite``, ``opentsdb``, ``elasticsearch`` and their ``-bare``
  twins: see ``bench/carbon_benches.py``.

Another output adds an async function ``(args, reactor) -> {"events_per_s",
"cpu_ms_per_1000"}`` to `BENCHES`.

    .venv/bin/python bench/outputs.py [--events N] [--runs R] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from duct.objects import Event
from duct.testing import waitFor

Result = dict[str, float]
Bench = Callable[[argparse.Namespace, Any], Awaitable[Result]]

SINK = """
import json, sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

class Sink(Resource):
    isLeaf = True
    events = 0
    def render_POST(self, request):
        Sink.events += len(json.loads(request.content.read()))
        return b"ok"
    def render_GET(self, request):
        return str(Sink.events).encode()

port = reactor.listenTCP(0, Site(Sink()), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


class Destination:
    """A destination process that prints its port on its first line."""

    def __init__(self, script: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def makeEvents(count: int) -> list[Event]:
    return [
        Event("ok", f"bench.{i % 1000}", None, float(i), 60.0, hostname="bench.example", evtime=1e9)
        for i in range(count)
    ]


def measure(started: tuple[float, float], events: int) -> Result:
    wall = time.perf_counter() - started[0]
    cpu = time.process_time() - started[1]
    return {"events_per_s": events / wall, "cpu_ms_per_1000": cpu * 1000 / events * 1000}


async def benchHTTP(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.service import DuctService

    sink = Destination(SINK)
    try:
        with tempfile.TemporaryDirectory() as state:
            config = {
                "state_dir": state,
                "outputs": [
                    {
                        "output": "duct.outputs.http.HTTP",
                        "name": "http",
                        "url": f"http://127.0.0.1:{sink.port}/events",
                        "maxsize": args.events,
                    }
                ],
            }
            service = DuctService(config, reactor)
            output = service.outputs["http"]
            events = makeEvents(args.events)
            await output.start()
            started = time.perf_counter(), time.process_time()
            for start in range(0, len(events), 1000):
                output.eventsReceived(events[start : start + 1000])
            await waitFor(
                reactor, lambda: output.sent >= args.events, "every event sent", 600, 0.005
            )
            result = measure(started, args.events)
            await output.stop()
        return result
    finally:
        sink.stop()


async def benchBare(args: argparse.Namespace, reactor: Any) -> Result:
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    from duct.lib.json import eventJson
    from duct.options import declaredOptions
    from duct.outputs.http import HTTP

    options = declaredOptions(HTTP)
    size, window = options["batch_size"].default, options["max_in_flight"].default
    events = makeEvents(args.events)
    bodies = [
        ("[" + ",".join(eventJson(e) for e in events[i : i + size]) + "]").encode()
        for i in range(0, len(events), size)
    ]
    sink = Destination(SINK)
    try:
        pool = HTTPConnectionPool(reactor, persistent=True)
        client = HTTPClient(Agent(reactor, pool=pool))
        url = f"http://127.0.0.1:{sink.port}/events"
        headers = {"Content-Type": "application/json"}
        pending = list(reversed(bodies))

        async def post() -> None:
            while pending:
                response = await client.post(url, data=pending.pop(), headers=headers)
                await response.content()
                assert response.code == 200

        started = time.perf_counter(), time.process_time()
        await DeferredList(
            [Deferred.fromCoroutine(post()) for _ in range(window)], fireOnOneErrback=True
        )
        result = measure(started, args.events)
        await pool.closeCachedConnections()
        return result
    finally:
        sink.stop()


BENCHES: dict[str, Bench] = {"http": benchHTTP, "http-bare": benchBare}

from carbon_benches import CARBON_BENCHES  # noqa: E402  (carbon, OpenTSDB, Elasticsearch)
from tsdb_benches import TSDB_BENCHES  # noqa: E402  (the time-series outputs)

BENCHES.update(TSDB_BENCHES)
BENCHES.update(CARBON_BENCHES)


async def main(args: argparse.Namespace, reactor: Any) -> dict[str, Any]:
    names = args.only or list(BENCHES)
    runs: dict[str, list[Result]] = {name: [] for name in names}
    for _ in range(args.runs):
        for name in names:
            runs[name].append(await BENCHES[name](args, reactor))
    return {
        name: {
            key: round(statistics.median(r[key] for r in results), 3)
            for key in ("events_per_s", "cpu_ms_per_1000")
        }
        for name, results in runs.items()
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per run")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are printed")
    parser.add_argument(
        "--only", "--outputs", nargs="*", choices=sorted(BENCHES), help="entries to run"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from twisted.internet import reactor
    from twisted.internet.task import react

    def go(reactorArg: Any) -> Deferred[None]:
        async def body() -> None:
            print(json.dumps({"events": args.events, **(await main(args, reactorArg))}, indent=1))

        return Deferred.fromCoroutine(body())

    del reactor
    react(go)


if __name__ == "__main__":
    run()
