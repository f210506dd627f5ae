"""OpenTSDB and Bosun: points, against victoria-metrics's /api/put, and OpenTSDB's details."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from fakeapis import PutAPI, Served
from vmserver import VictoriaMetrics

from duct import testing
from duct.objects import Event
from duct.outputs.bosun import Bosun
from duct.outputs.opentsdb import OpenTSDB, encodePoint, failedIndices
from duct.testing import FakeDuct, configure


def event(service: str, metric: Any, when: float, host: str = "web1", **kw: Any) -> Event:
    return Event(kw.pop("state", "ok"), service, None, metric, 60, hostname=host, evtime=when, **kw)


def test_a_point_has_metric_timestamp_value_and_tags() -> None:
    e = event(
        "disk free /var", 12.5, 1700000000.123, host="web1.example", attributes={"dc": "east 1"}
    )
    assert encodePoint(e) == {
        "metric": "disk_free_/var",
        "timestamp": 1700000000123,
        "value": 12.5,
        "tags": {"host": "web1.example", "state": "ok", "dc": "east_1"},
    }
    for bad in (None, float("nan"), float("-inf"), "3"):
        with pytest.raises(ValueError):
            encodePoint(event("x", bad, 1.0))


def test_tags_that_clean_to_nothing_are_left_out() -> None:
    e = event("cpu", 1.0, 1.0, host="web1", attributes={"  ": "x", "dc": "  ", "rack": "r 1"})
    e.state = "  "
    assert encodePoint(e)["tags"] == {"host": "web1", "rack": "r_1"}
    with pytest.raises(ValueError, match="no host"):
        encodePoint(event("cpu", 1.0, 1.0, host=" ", state=None))


def test_details_name_the_failed_points_by_index() -> None:
    points = [encodePoint(event(f"m{i % 2}", i, 1700000000 + i)) for i in range(4)]
    answer = {
        "errors": [{"datapoint": {**points[2], "value": "2"}, "error": "Unable to parse value"}],
        "failed": 1,
        "success": 3,
    }
    assert failedIndices(points, answer) == ([2], "Unable to parse value")
    assert failedIndices(points, {"failed": 1}) == ([], "")


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ValueError, match="url"):
        configure(OpenTSDB, {"url": "localhost:4242"})
    with pytest.raises(ValueError, match="maxrate"):
        configure(OpenTSDB, {"maxrate": 0})
    with pytest.raises(ValueError, match="interval"):
        configure(Bosun, {"interval": "soon"})
    with pytest.raises(ValueError, match="unknown key"):
        configure(OpenTSDB, {"uri": "http://x"})


def realOutput(cls: type[OpenTSDB], reactor: Any, url: str, **config: Any) -> OpenTSDB:
    config = {
        "url": url,
        "interval": 0.01,
        "retry_initial": 0.05,
        "retry_max": 0.3,
        "timeout": 5,
        **config,
    }
    return cls(configure(cls, config), FakeDuct(clock=reactor, reactor=reactor))


def exported(server: VictoriaMetrics, name: str) -> dict[tuple[str, int], float]:
    """What victoria-metrics holds for metric ``name``: (host, ms) -> value."""
    found: dict[tuple[str, int], float] = {}
    for series in server.export(f'{{__name__="{name}"}}'):
        for ms, value in zip(series["timestamps"], series["values"], strict=True):
            found[(series["metric"].get("host", ""), ms)] = value
    return found


def series(name: str, count: int, start: float) -> list[Event]:
    return [event(name, float(i), start + i, host=f"h{i % 3}") for i in range(count)]


def want(events: list[Event]) -> dict[tuple[str, int], float]:
    return {(e.hostname, int(e.time * 1000)): e.metric for e in events}


@pytest_twisted.ensureDeferred
async def test_victoria_metrics_stores_the_points(reactor: Any, victoria: VictoriaMetrics) -> None:
    output = realOutput(OpenTSDB, reactor, victoria.url, batch_size=100)
    events = series("deliver.cpu", 350, time.time() - 1000)
    output.eventsReceived(events)
    await testing.waitFor(reactor, lambda: output.sent == 350, "the points sent", 20)
    assert exported(victoria, "deliver.cpu") == want(events)
    assert output.acked == 4


@pytest_twisted.ensureDeferred
async def test_nothing_lost_when_victoria_metrics_restarts(
    reactor: Any, victoria: VictoriaMetrics
) -> None:
    output = realOutput(OpenTSDB, reactor, victoria.url, batch_size=50)
    events = series("restart.load", 600, time.time() - 2000)
    try:
        output.eventsReceived(events[:200])
        await testing.waitFor(reactor, lambda: output.sent == 200, "the first points sent")
        victoria.stop()
        output.eventsReceived(events[200:])
        await testing.waitFor(reactor, lambda: output.failures > 0, "a failed write")
        assert output.sent == 200
        victoria.start()
        await testing.waitFor(reactor, lambda: output.sent == 600, "the rest sent", 30)
        assert exported(victoria, "restart.load") == want(events)
    finally:
        if victoria.process is None:
            victoria.start()
        await output.stop()


@pytest_twisted.ensureDeferred
async def test_points_that_cannot_be_carried_are_counted(
    reactor: Any, victoria: VictoriaMetrics
) -> None:
    output = realOutput(OpenTSDB, reactor, victoria.url)
    start = time.time() - 500
    good = series("rejects.mem", 30, start)
    bad = [event("rejects.mem", None, start), event("rejects.mem", float("nan"), start)]
    output.eventsReceived(good[:10] + bad + good[10:])
    await testing.waitFor(reactor, lambda: output.sent == 30, "the good points sent")
    assert output.eventsRejected == 2 and output.buffer.drops["rejected"] == 2
    assert exported(victoria, "rejects.mem") == want(good)


@pytest_twisted.ensureDeferred
async def test_opentsdb_details_refuse_only_the_failed_points(reactor: Any) -> None:
    api = PutAPI(refuse=lambda p: p["value"] in (3.0, 7.0))
    served = Served(reactor, api)
    output = realOutput(OpenTSDB, reactor, served.url, batch_size=10)
    events = series("details", 10, 1700000000)
    try:
        output.eventsReceived(events)
        await testing.waitFor(reactor, lambda: output.sent == 8, "the accepted points sent")
        assert output.eventsRejected == 2 and output.rejected == 1
        assert api.requests == [b"/api/put?details"] * 2  # the refused two, then the rest again
        assert sorted(p["value"] for p in api.points) == sorted(
            [float(i) for i in range(10) if i not in (3, 7)] * 2
        )
    finally:
        await served.stop()


@pytest_twisted.ensureDeferred
async def test_bosun_sends_metadata_once_then_points(reactor: Any) -> None:
    api = PutAPI(refuse=lambda p: p["value"] == 5.0, details=False)
    served = Served(reactor, api)
    output = realOutput(Bosun, reactor, served.url, batch_size=8)
    events = series("bosun.cpu", 8, 1700000000) + series("bosun.mem", 4, 1700000100)
    try:
        output.eventsReceived(events)
        await testing.waitFor(reactor, lambda: output.sent == 11, "the accepted points sent")
        assert output.eventsRejected == 1
        assert api.metadata == [
            {"Metric": "bosun.cpu", "Name": "rate", "Value": "gauge"},
            {"Metric": "bosun.mem", "Name": "rate", "Value": "gauge"},
        ]
        assert sorted(p["value"] for p in api.points if p["metric"] == "bosun.cpu") == [
            float(i) for i in range(8) if i != 5
        ]
    finally:
        await served.stop()
