"""The carbon, OpenTSDB and Elasticsearch entries of ``bench/outputs.py``.

- ``graphite``: `duct.outputs.graphite.Graphite`, plaintext, into Debian's
  carbon-cache (delivered: written, and the connection held
  ``confirm_after``);
- ``graphite-bare``: one socket writing the same lines as fast as carbon
  reads them (until the kernel took the last byte): carbon's own limit;
- ``opentsdb``: `duct.outputs.opentsdb.OpenTSDB` into victoria-metrics's
  ``/api/put``;
- ``opentsdb-bare``: treq posting the same bodies, as many at once as the
  output has in flight;
- ``elasticsearch``: `duct.outputs.elasticsearch.ElasticSearch` into a
  `twisted.web` ``_bulk`` sink in its own process that parses each body;
- ``elasticsearch-bare``: treq posting the same bodies to that sink.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from duct.objects import Event
from duct.options import declaredOptions
from duct.testing import FakeDuct, configure, waitFor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' helpers start carbon and victoria-metrics

Result = dict[str, float]
Bench = Callable[[argparse.Namespace, Any], Awaitable[Result]]

BULK_SINK = """
import json, sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

class Sink(Resource):
    isLeaf = True
    def render_POST(self, request):
        lines = request.content.read().split(b"\\n")
        items = [{"index": {"_id": json.loads(a)["index"]["_id"], "status": 201}}
                 for a, _ in zip(lines[0:-1:2], lines[1::2])]
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"took": 1, "errors": False, "items": items}).encode()

port = reactor.listenTCP(0, Site(Sink()), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


def makeEvents(count: int) -> list[Event]:
    start = time.time() - 80000  # within carbon's one-day store, a second apart per series
    return [
        Event(
            "ok",
            f"bench.{i % 1000}",
            None,
            float(i),
            60.0,
            hostname="bench",
            evtime=start + i // 1000,
        )
        for i in range(count)
    ]


def measure(started: tuple[float, float], events: int) -> Result:
    wall = time.perf_counter() - started[0]
    cpu = time.process_time() - started[1]
    return {"events_per_s": events / wall, "cpu_ms_per_1000": cpu * 1000 / events * 1000}


async def drive(output: Any, events: list[Event], reactor: Any) -> Result:
    await output.start()
    started = time.perf_counter(), time.process_time()
    for start in range(0, len(events), 1000):
        output.eventsReceived(events[start : start + 1000])
    await waitFor(reactor, lambda: output.sent >= len(events), "every event sent", 900, 0.005)
    result = measure(started, len(events))
    await output.stop()
    return result


def build(cls: type, config: dict[str, Any], reactor: Any, events: int) -> Any:
    config = {"maxsize": events, "max_bytes": events * 2000, **config}
    return cls(configure(cls, config), FakeDuct(clock=reactor, reactor=reactor))


class Carbon:
    def __enter__(self) -> Any:
        from carbonserver import findCarbon, startCarbon

        self.dir = tempfile.TemporaryDirectory(prefix="bench-carbon-")
        binary = findCarbon()
        assert binary, "carbon-cache is not installed: run scripts/test-deps.sh"
        self.server = startCarbon(binary, Path(self.dir.name))
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.dir.cleanup()


async def benchGraphite(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.graphite import Graphite

    with Carbon() as carbon:
        config = {"server": "127.0.0.1", "port": carbon.line}
        output = build(Graphite, config, reactor, args.events)
        return await drive(output, makeEvents(args.events), reactor)


async def benchGraphiteBare(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.graphite import Graphite

    with Carbon() as carbon:
        output = build(Graphite, {}, reactor, 1)
        events = makeEvents(args.events)
        size = declaredOptions(Graphite)["batch_size"].default
        chunks = [
            b"".join(output.encodeBatch(events[i : i + size])) for i in range(0, len(events), size)
        ]
        started = time.perf_counter(), time.process_time()
        with socket.create_connection(("127.0.0.1", carbon.line)) as sock:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # carbon closes once it has read everything
        return measure(started, len(events))


class Victoria:
    def __enter__(self) -> Any:
        from vmserver import findVictoriaMetrics, startVictoriaMetrics

        self.dir = tempfile.TemporaryDirectory(prefix="bench-vm-")
        binary = findVictoriaMetrics()
        assert binary, "victoria-metrics is not installed: run scripts/test-deps.sh"
        self.server = startVictoriaMetrics(binary, Path(self.dir.name))
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.dir.cleanup()


class Sink:
    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-c", BULK_SINK], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        return f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


async def benchOpenTSDB(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.opentsdb import OpenTSDB

    with Victoria() as server:
        output = build(OpenTSDB, {"url": server.url}, reactor, args.events)
        return await drive(output, makeEvents(args.events), reactor)


async def postAll(
    reactor: Any, url: str, bodies: list[bytes], window: int, kind: str, events: int
) -> Result:
    """POST ``bodies``, ``window`` at a time, on kept-alive connections; timed."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    client = HTTPClient(Agent(reactor, pool=pool))
    pending = list(reversed(bodies))

    async def post() -> None:
        while pending:
            body = pending.pop()
            response = await client.post(url, data=body, headers={"Content-Type": kind})
            await response.content()
            assert 200 <= response.code < 300, response.code

    started = time.perf_counter(), time.process_time()
    workers = [Deferred.fromCoroutine(post()) for _ in range(window)]
    await DeferredList(workers, fireOnOneErrback=True)
    result = measure(started, events)
    await pool.closeCachedConnections()
    return result


async def bareHTTP(
    args: argparse.Namespace, reactor: Any, cls: type, url: str, path: str, kind: str
) -> Result:
    """The bodies the output would send, posted by a bare treq client."""
    output = build(cls, {"url": url}, reactor, 1)
    options = declaredOptions(cls)
    size, window = options["batch_size"].default, options["max_in_flight"].default
    events = makeEvents(args.events)
    batches = [events[i : i + size] for i in range(0, len(events), size)]
    if cls.__name__ == "ElasticSearch":
        bodies = [b"".join(map(output.encodeItem, batch)) for batch in batches]
    else:
        bodies = [json.dumps(list(map(output.encodePoint, batch))).encode() for batch in batches]
    return await postAll(reactor, url + path, bodies, window, kind, len(events))


async def benchOpenTSDBBare(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.opentsdb import OpenTSDB

    with Victoria() as server:
        return await bareHTTP(args, reactor, OpenTSDB, server.url, "/api/put", "application/json")


async def benchElasticsearch(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.elasticsearch import ElasticSearch

    with Sink() as url:
        output = build(ElasticSearch, {"url": url}, reactor, args.events)
        return await drive(output, makeEvents(args.events), reactor)


async def benchElasticsearchBare(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.elasticsearch import ElasticSearch

    with Sink() as url:
        return await bareHTTP(args, reactor, ElasticSearch, url, "/_bulk", "application/x-ndjson")


CARBON_BENCHES: dict[str, Bench] = {
    "graphite": benchGraphite,
    "graphite-bare": benchGraphiteBare,
    "opentsdb": benchOpenTSDB,
    "opentsdb-bare": benchOpenTSDBBare,
    "elasticsearch": benchElasticsearch,
    "elasticsearch-bare": benchElasticsearchBare,
}
