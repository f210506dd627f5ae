"""The entries of bench/outputs.py for the time-series outputs: InfluxDB, remote write, scrape.

Each output runs as the agent builds it (a `DuctService` from a config)
against its real destination, Debian's influxd or prometheus started
under a temporary directory by the tests' helpers; beside each, a bare
client sends the same bodies, which is what the destination itself can
take.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from duct.objects import Event
from duct.testing import waitFor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from influxserver import findInflux, startInflux  # noqa: E402
from promserver import findPrometheus, startPrometheus  # noqa: E402

Result = dict[str, float]
Bench = Callable[[argparse.Namespace, Any], Awaitable[Result]]


def makeEvents(count: int) -> list[Event]:
    """Events over 1,000 series, a millisecond apart, ending now (receivers want them recent)."""
    start = time.time() - count / 1000 - 1
    return [
        Event(
            "ok",
            f"bench.{i % 1000}",
            None,
            float(i),
            60.0,
            hostname="bench.example",
            evtime=start + i / 1000,
        )  # fmt: skip
        for i in range(count)
    ]


def measure(started: tuple[float, float], events: int) -> Result:
    wall = time.perf_counter() - started[0]
    cpu = time.process_time() - started[1]
    return {"events_per_s": events / wall, "cpu_ms_per_1000": cpu * 1000 / events * 1000}


async def runOutput(
    reactor: Any, output: dict[str, Any], events: list[Event], then: Any = None
) -> Result:
    """Push ``events`` through the output ``output`` configures; wait for every one.

    ``then(out)``, if given, is awaited too before the time is taken (a scrape).
    """
    from duct.service import DuctService

    with tempfile.TemporaryDirectory() as state:
        config = {
            "state_dir": state,
            "outputs": [{"name": "out", "maxsize": len(events), **output}],
        }
        service = DuctService(config, reactor)
        out = service.outputs["out"]
        await out.start()
        started = time.perf_counter(), time.process_time()
        for start in range(0, len(events), 1000):
            out.eventsReceived(events[start : start + 1000])
        await waitFor(reactor, lambda: out.sent >= len(events), "every event sent", 600, 0.005)
        if then is not None:
            await then(out)
        result = measure(started, len(events))
        await out.stop()
    return result


async def postAll(
    reactor: Any, url: str, bodies: list[bytes], headers: dict[str, str], window: int, events: int
) -> Result:
    """POST ``bodies`` with treq, ``window`` at once: the bare client."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    client = HTTPClient(Agent(reactor, pool=pool))
    pending = list(reversed(bodies))

    async def post() -> None:
        while pending:
            response = await client.post(url, data=pending.pop(), headers=headers)
            await response.content()
            assert 200 <= response.code < 300, response.code

    started = time.perf_counter(), time.process_time()
    await DeferredList(
        [Deferred.fromCoroutine(post()) for _ in range(window)], fireOnOneErrback=True
    )
    result = measure(started, events)
    await pool.closeCachedConnections()
    return result


def defaults(cls: type) -> dict[str, Any]:
    from duct.options import declaredOptions

    return {name: option.default for name, option in declaredOptions(cls).items()}


def influx(root: Path) -> Any:
    binary = findInflux()
    assert binary, "influxd is needed: scripts/test-deps.sh"
    return startInflux(binary, root)


async def benchInflux(args: argparse.Namespace, reactor: Any) -> Result:
    with tempfile.TemporaryDirectory() as root:
        server = influx(Path(root))
        try:
            output = {"output": "duct.outputs.influxdb.InfluxDB", "url": server.url}
            return await runOutput(reactor, output, makeEvents(args.events))
        finally:
            server.server.stop()


async def benchInfluxBare(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.influxdb import InfluxDB
    from duct.testing import FakeDuct, configure

    settings = defaults(InfluxDB)
    encoder = InfluxDB(configure(InfluxDB, {}), FakeDuct())
    events = makeEvents(args.events)
    size = settings["batch_size"]
    bodies = [
        ("\n".join(encoder.point(e) or "" for e in events[i : i + size]) + "\n").encode()
        for i in range(0, len(events), size)
    ]
    with tempfile.TemporaryDirectory() as root:
        server = influx(Path(root))
        try:
            url = f"{server.url}/write?db=duct&precision=u"
            headers = {"Content-Type": "text/plain; charset=utf-8"}
            window = settings["max_in_flight"]
            return await postAll(reactor, url, bodies, headers, window, args.events)
        finally:
            server.server.stop()


def receiver(root: Path) -> Any:
    binary = findPrometheus()
    assert binary, "prometheus is needed: scripts/test-deps.sh"
    return startPrometheus(binary, root, receiver=True)


async def benchRemoteWrite(args: argparse.Namespace, reactor: Any) -> Result:
    with tempfile.TemporaryDirectory() as root:
        server = receiver(Path(root))
        try:
            output = {"output": "duct.outputs.prometheus.RemoteWrite", "url": server.writeURL}
            return await runOutput(reactor, output, makeEvents(args.events))
        finally:
            server.stop()


async def benchRemoteWriteBare(args: argparse.Namespace, reactor: Any) -> Result:
    from duct.outputs.remotewrite import HEADERS, RemoteWrite, encodeWriteRequest
    from duct.testing import FakeDuct, configure

    settings = defaults(RemoteWrite)
    encoder = RemoteWrite(configure(RemoteWrite, {"url": "http://x/"}), FakeDuct())
    events = makeEvents(args.events)
    size = settings["batch_size"]
    bodies = [
        encodeWriteRequest([s for e in events[i : i + size] if (s := encoder.sample(e))])
        for i in range(0, len(events), size)
    ]
    with tempfile.TemporaryDirectory() as root:
        server = receiver(Path(root))
        try:
            window = settings["max_in_flight"]
            return await postAll(reactor, server.writeURL, bodies, HEADERS, window, args.events)
        finally:
            server.stop()


async def benchScrape(args: argparse.Namespace, reactor: Any) -> Result:
    import treq

    async def scrape(out: Any) -> None:
        response = await treq.get(f"http://127.0.0.1:{out.port.getHost().port}/metrics")
        await response.content()

    output = {"output": "duct.outputs.prometheus.Prometheus", "port": 0}
    return await runOutput(reactor, output, makeEvents(args.events), scrape)


async def benchScrapeBare(args: argparse.Namespace, reactor: Any) -> Result:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    events = makeEvents(args.events)
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    started = time.perf_counter(), time.process_time()
    for e in events:
        name = "duct_" + e.service.replace(".", "_")
        gauge = gauges.get(name)
        if gauge is None:
            gauge = gauges[name] = Gauge(name, "bench", ["host"], registry=registry)
        gauge.labels(e.hostname).set(float(e.metric or 0))
    generate_latest(registry)
    return measure(started, len(events))


TSDB_BENCHES: dict[str, Bench] = {
    "influxdb": benchInflux,
    "influxdb-bare": benchInfluxBare,
    "remotewrite": benchRemoteWrite,
    "remotewrite-bare": benchRemoteWriteBare,
    "prometheus": benchScrape,
    "prometheus-bare": benchScrapeBare,
}
