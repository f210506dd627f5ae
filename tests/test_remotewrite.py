"""Prometheus remote write: the request on a Clock, then a real Prometheus receiving it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from promserver import PrometheusServer, findPrometheus, startPrometheus
from test_prometheus import Prometheus as PrometheusAPI
from twisted.web.resource import Resource
from twisted.web.server import Request

from duct.objects import Event
from duct.outputs.prometheus import RemoteWrite
from duct.outputs.remotewrite import decodeWriteRequest
from duct.testing import FakeDuct, OutputHarness, StubHTTP, configure, waitFor

T0 = 1_700_000_000.5


def event(service: str, metric: Any = 1.5, evtime: float = T0, **kwargs: Any) -> Event:
    kwargs.setdefault("hostname", "h1")
    return Event("ok", service, None, metric, 60.0, evtime=evtime, **kwargs)


class Receiver(Resource):
    """A remote write receiver: checks the headers, decodes, refuses series ``bad`` with 400."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.series: list[tuple[dict[str, str], list[tuple[float, int]]]] = []
        self.code = 204

    def render_POST(self, request: Request) -> bytes:
        assert request.getHeader("content-encoding") == "snappy"
        assert request.getHeader("content-type") == "application/x-protobuf"
        assert request.getHeader("x-prometheus-remote-write-version") == "0.1.0"
        written = decodeWriteRequest(request.content.read())
        got = [
            ({label.name: label.value for label in ts.labels},
             [(s.value, s.timestamp) for s in ts.samples])
            for ts in written.timeseries
        ]  # fmt: skip
        if self.code != 204:
            request.setResponseCode(self.code)
            return b"unavailable"
        if any(labels["__name__"] == "duct_bad" for labels, _ in got):
            request.setResponseCode(400)
            return b"out of order sample"
        self.series.extend(got)
        request.setResponseCode(204)
        return b""


def runStub(harness: OutputHarness, stub: StubHTTP) -> None:
    for _ in range(200):
        stub.flush()
        if not harness.buffered:
            return
        harness.run(0.5)


def test_a_write_request_as_remote_write_defines_it() -> None:
    receiver = Receiver()
    stub = StubHTTP(receiver)
    h = OutputHarness(RemoteWrite, {"url": "http://prom:9090/api/v1/write", "flush_interval": 0})
    stub.install(h.output.http)
    h.start()
    h.send([
        event("disk.used", 2.0, evtime=T0 + 1, attributes={"mount": "/", "Zone": "a"}),
        event("disk.used", 1.0, attributes={"mount": "/", "Zone": "a"}),
        event("up", None),
    ])  # fmt: skip
    runStub(h, stub)
    (labels, points), = receiver.series  # fmt: skip
    assert list(labels) == ["Zone", "__name__", "host", "mount"]  # sorted, as required
    assert labels["__name__"] == "duct_disk_used"
    assert points == [(1.0, 1_700_000_000_500), (2.0, 1_700_000_001_500)]  # in time order
    assert h.sent == 3 and h.output.skipped == 1


def test_a_400_drops_the_samples_at_fault_and_a_503_is_retried() -> None:
    receiver = Receiver()
    stub = StubHTTP(receiver)
    h = OutputHarness(RemoteWrite, {"url": "http://prom:9090/api/v1/write"})
    stub.install(h.output.http)
    h.start()
    h.send([event(f"ok{i}", float(i)) for i in range(4)] + [event("bad")])
    runStub(h, stub)
    assert sorted(labels["__name__"] for labels, _ in receiver.series) == [
        "duct_ok0", "duct_ok1", "duct_ok2", "duct_ok3",
    ]  # fmt: skip
    assert h.dropped == {"rejected": 1}
    receiver.code = 503
    h.send([event("later")])
    h.run(3)
    stub.flush()
    assert h.retries >= 1 and h.buffered == 1
    receiver.code = 429
    h.run(3)
    stub.flush()
    assert h.buffered == 1
    receiver.code = 204
    runStub(h, stub)
    assert receiver.series[-1][0]["__name__"] == "duct_later"
    assert h.dropped == {"rejected": 1}


@pytest.mark.parametrize(
    "config, key",
    [({}, "url"), ({"url": "prom:9090"}, "url"), ({"url": "http://p/w", "labels": 3}, "labels")],
)
def test_bad_options_name_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{key}: "):
        configure(RemoteWrite, config)


# -- a real Prometheus ---------------------------------------------------------------------


def realOutput(reactor: Any, url: str, **config: Any) -> RemoteWrite:
    duct = FakeDuct(clock=reactor, reactor=reactor)
    settings = {"url": url, "flush_interval": 0.05, "retry_initial": 0.1, "retry_max": 0.5}
    output = RemoteWrite(configure(RemoteWrite, {**settings, **config}), duct)
    output.start()
    return output


@pytest_twisted.ensureDeferred
async def test_prometheus_stores_what_remote_write_sends(
    reactor: Any, prometheus_receiver: PrometheusServer
) -> None:
    api = PrometheusAPI(reactor, prometheus_receiver.port)
    output = realOutput(reactor, prometheus_receiver.writeURL)
    now = time.time()
    try:
        output.eventsReceived([
            event("rw.latency", 0.125, evtime=now, hostname="web 1", attributes={"dc": "east"}),
            event("rw.requests", 17, evtime=now),
        ])  # fmt: skip
        await output.flush()
        await api.waitFor('duct_rw_latency{host="web 1",dc="east"}', 0.125)
        await api.waitFor('duct_rw_requests{host="h1"}', 17)
        # A sample older than its series' newest is out of order: Prometheus
        # refuses the request (400), and only that sample is dropped.
        output.eventsReceived([
            event("rw.requests", 18, evtime=now + 1),
            event("rw.latency", 9, evtime=now - 30, hostname="web 1", attributes={"dc": "east"}),
            event("rw.other", 5, evtime=now + 1),
        ])  # fmt: skip
        await output.flush()
        assert output.eventsRejected == 1
        await api.waitFor('duct_rw_requests{host="h1"}', 18)
        await api.waitFor('duct_rw_other{host="h1"}', 5)
        await api.waitFor('duct_rw_latency{host="web 1"}', 0.125)
    finally:
        await output.stop()
        await api.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_prometheus_going_away_and_coming_back_loses_nothing(
    reactor: Any, tmp_path: Path
) -> None:
    binary = findPrometheus()
    assert binary, "Debian's prometheus is required: run scripts/test-deps.sh"
    prometheus = startPrometheus(binary, tmp_path, receiver=True)
    api = PrometheusAPI(reactor, prometheus.port)
    output = realOutput(reactor, prometheus.writeURL, batch_size=10)
    start = time.time() - 60
    try:
        output.eventsReceived([event("restart", float(i), evtime=start + i) for i in range(5)])
        await output.flush()
        prometheus.stop()
        output.eventsReceived([event("restart", float(i), evtime=start + i) for i in range(5, 25)])
        await waitFor(reactor, lambda: output.failures >= 2, "failed writes")
        assert output.buffer.depth == 20
        prometheus.server.start()
        await waitFor(reactor, lambda: not output.buffer.depth, "the backlog delivered", 30)
        await api.waitFor('count_over_time(duct_restart{host="h1"}[5m])', 25)
        assert output.eventsRejected == 0
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nprometheus said:\n{prometheus.server.output()[-3000:]}"
        ) from None
    finally:
        await output.stop()
        prometheus.stop()
        await api.pool.closeCachedConnections()
