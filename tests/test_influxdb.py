"""The InfluxDB output: line protocol, v1 against a real influxd, v2 and v3 as documented."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_twisted
from influxserver import Influx, findInflux, startInflux
from twisted.web.resource import Resource
from twisted.web.server import Request

from duct.lib.lineprotocol import LineProtocolError, formatField, line, timestamp
from duct.objects import Event
from duct.outputs.influxdb import InfluxDB
from duct.outputs.influxdb3 import InfluxDB3
from duct.testing import FakeDuct, OutputHarness, StubHTTP, configure, waitFor

T0 = 1_700_000_000.123456


def event(service: str, metric: Any = 1.5, **kwargs: Any) -> Event:
    kwargs.setdefault("hostname", "h1")
    kwargs.setdefault("evtime", T0)
    return Event(kwargs.pop("state", "ok"), service, kwargs.pop("description", None), metric,
                 60.0, **kwargs)  # fmt: skip


# -- line protocol -----------------------------------------------------------------


def test_line_protocol_escapes_as_documented() -> None:
    text = line(
        "my measure,1",
        {"tag key": "a=b,c d", "empty": "", "z": "1"},
        {"field=key": 'say "hi" \\ there', "n": 3, "f": 2.5, "ok": True},
        1234,
    )
    assert text == (
        "my\\ measure\\,1,tag\\ key=a\\=b\\,c\\ d,z=1 "
        'field\\=key="say \\"hi\\" \\\\ there",n=3i,f=2.5,ok=t 1234'
    )
    assert formatField(False) == "f"
    assert formatField(1e-300) == "1e-300"


@pytest.mark.parametrize(
    "measurement, tags, fields",
    [
        ("m", {}, {}),  # no field
        ("", {}, {"v": 1.0}),
        ("a\nb", {}, {"v": 1.0}),
        ("m", {"k": "v\n"}, {"v": 1.0}),
        ("m", {"k": "ends\\"}, {"v": 1.0}),
        ("m", {}, {"v": math.nan}),
        ("m", {}, {"v": math.inf}),
    ],
)
def test_line_protocol_refuses_what_it_cannot_carry(
    measurement: str, tags: dict[str, str], fields: dict[str, Any]
) -> None:
    for _ in range(2):  # refused again: what is kept of earlier escapes holds no refusal
        with pytest.raises(LineProtocolError):
            line(measurement, tags, fields)


def test_timestamps_keep_microseconds() -> None:
    assert timestamp(T0, "ns") == 1_700_000_000_123_456_000
    assert timestamp(T0, "us") == 1_700_000_000_123_456
    assert timestamp(T0, "ms") == 1_700_000_000_123
    assert timestamp(T0, "s") == 1_700_000_000


def test_points_place_tags_attributes_state_as_configured() -> None:
    duct = FakeDuct()
    plain = InfluxDB(configure(InfluxDB, {}), duct)
    e = event("cpu.user", 3, tags=["linux", "dc=east"], attributes={"role": "db"},
              description="busy", state="warning")  # fmt: skip
    assert plain.point(e) == (
        "cpu.user,dc=east,host=h1,role=db,state=warning,tags=linux "
        'description="busy",value=3.0 1700000000123456'
    )
    fields = InfluxDB(
        configure(InfluxDB, {"state_as": "field", "attributes_as": "field", "tags_as": "drop",
                             "description_as": "drop", "prefix": "duct.",
                             "integer_metrics": True, "precision": "s"}),
        duct,
    )  # fmt: skip
    assert fields.point(e) == 'duct.cpu.user,host=h1 role="db",state="warning",value=3i 1700000000'
    # Nothing to store: no metric, and neither state nor description as a field.
    assert plain.point(event("up", None)) is None
    assert plain.point(event("up", None, description="x")) == (
        'up,host=h1,state=ok description="x" 1700000000123456'
    )
    bare = InfluxDB(configure(InfluxDB, {"description_as": "drop"}), duct)
    assert bare.point(event("up", None, description="x")) is None


@pytest.mark.parametrize(
    "config, key",
    [
        ({"api": "v2"}, "bucket"),
        ({"url": "localhost:8086"}, "url"),
        ({"precision": "minutes"}, "precision"),
        ({"state_as": "label"}, "state_as"),
        ({"batch_size": 0}, "batch_size"),
        ({"maxrate": -1}, "maxrate"),
    ],
)
def test_bad_options_name_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{key}: "):
        configure(InfluxDB, config)


# -- v2 and v3, against resources that check the request as each API documents it ------


class WriteAPI(Resource):
    """``POST /api/v2/write`` (or v3's ``/api/v3/write_lp``) as InfluxDB documents it.

    It checks the method, the query parameters, the token and the content
    type, refuses a body holding a point of measurement ``bad`` with 400
    (as InfluxDB does for a field type conflict), answers 503 while
    ``down``, and keeps the lines of each accepted request.
    """

    isLeaf = True

    def __init__(self, path: str, query: dict[str, str], authorization: str) -> None:
        super().__init__()
        self.path = path
        self.query = query
        self.authorization = authorization
        self.lines: list[str] = []
        self.down = False

    def render_POST(self, request: Request) -> bytes:
        path, _, query = request.uri.decode().partition("?")
        assert path == self.path
        assert {k: v[0] for k, v in parse_qs(query).items()} == self.query
        assert request.getHeader("authorization") == self.authorization
        assert request.getHeader("content-type") == "text/plain; charset=utf-8"
        body = request.content.read().decode("utf-8")
        if self.down:
            request.setResponseCode(503)
            return b'{"code":"unavailable","message":"try later"}'
        lines = body.splitlines()
        if any(text.startswith("bad,") for text in lines):
            request.setResponseCode(400)
            request.setHeader("content-type", "application/json")
            message = "failure writing points to database: partial write: field type conflict"
            return json.dumps({"code": "invalid", "message": message}).encode()
        self.lines.extend(lines)
        request.setResponseCode(204)
        return b""


def runStub(harness: OutputHarness, stub: StubHTTP, seconds: float = 60.0) -> None:
    """Run the harness's clock and the stub's answers until the buffer is empty."""
    for _ in range(int(seconds * 2)):
        stub.flush()
        if not harness.buffered:
            return
        harness.run(0.5)


def test_v2_writes_as_documented_and_bisects_a_refusal() -> None:
    api = WriteAPI(
        "/api/v2/write",
        {"org": "acme", "bucket": "metrics", "precision": "ms"},
        "Token s3cret",
    )
    stub = StubHTTP(api)
    harness = OutputHarness(
        InfluxDB,
        {"api": "v2", "url": "http://influx:8086/", "org": "acme", "bucket": "metrics",
         "token": "s3cret", "precision": "ms", "flush_interval": 0.1},
    )  # fmt: skip
    stub.install(harness.output.http)
    harness.start()
    harness.send([event(f"svc.{i}", float(i)) for i in range(5)] + [event("bad", 1.0)])
    harness.send([event("after", 7.0)])
    runStub(harness, stub)
    assert sorted(text.split(",")[0] for text in api.lines) == [
        "after", "svc.0", "svc.1", "svc.2", "svc.3", "svc.4",
    ]  # fmt: skip
    assert "svc.3,host=h1,state=ok value=3.0 1700000000123" in api.lines
    assert harness.output.eventsRejected == 1
    assert harness.dropped == {"rejected": 1}
    assert harness.sent == 6

    api.down = True
    harness.send([event("later", 1.0)])
    harness.run(5)
    stub.flush()
    assert harness.retries >= 1 and harness.buffered == 1
    api.down = False
    runStub(harness, stub)
    assert api.lines[-1].startswith("later,")
    assert harness.output.eventsRejected == 1


def test_influxdb3_keeps_the_fork_keys() -> None:
    api = WriteAPI(
        "/api/v3/write_lp", {"db": "telemetry", "precision": "nanosecond"}, "Bearer t0ken"
    )
    stub = StubHTTP(api)
    harness = OutputHarness(
        InfluxDB3,
        {"url": "http://influx3:8181", "database": "telemetry", "token": "t0ken",
         "interval": 2.5, "maxrate": 0, "maxsize": 1000},
    )  # fmt: skip
    assert harness.output.flushInterval == 2.5
    assert harness.output.bucket is None
    stub.install(harness.output.http)
    harness.start()
    harness.send([event("disk.free", 10.0, attributes={"mount": "/"})])
    harness.run(2.4)
    stub.flush()
    assert api.lines == []  # the batch waits its interval
    runStub(harness, stub)
    assert api.lines == ["disk.free,host=h1,mount=/,state=ok value=10.0 1700000000123456000"]


# -- v1 against a real influxd ----------------------------------------------------------


def realOutput(reactor: Any, url: str, **config: Any) -> InfluxDB:
    duct = FakeDuct(clock=reactor, reactor=reactor)
    settings = {"url": url, "flush_interval": 0.05, "retry_initial": 0.1, "retry_max": 0.5}
    output = InfluxDB(configure(InfluxDB, {**settings, **config}), duct)
    output.start()
    return output


@pytest_twisted.ensureDeferred
async def test_v1_stores_events_in_a_real_influxdb(reactor: Any, influx: Influx) -> None:
    output = realOutput(reactor, influx.url, state_as="field")
    e = event("web.latency", 0.25, hostname="web 1", attributes={"dc": "east,1"},
              tags=["prod"], description='said "slow"', state="warning")  # fmt: skip
    output.eventsReceived([e, event("web.count", 42, hostname="web 1")])
    try:
        await output.flush()
        rows = influx.rows('SELECT * FROM "web.latency"')
        assert rows == [
            {"time": 1_700_000_000_123_456, "dc": "east,1", "description": 'said "slow"',
             "host": "web 1", "state": "warning", "tags": "prod", "value": 0.25},
        ]  # fmt: skip
        assert influx.rows('SELECT value FROM "web.count"')[0]["value"] == 42
        assert output.sent == 2
    finally:
        await output.stop()


@pytest_twisted.ensureDeferred
async def test_a_field_type_conflict_drops_only_the_points_at_fault(
    reactor: Any, influx: Influx
) -> None:
    # Field types are kept per shard: the conflicting point lies in the events' week.
    influx.write('typed,host=h1 value="text" 1700000000000000\n')
    output = realOutput(reactor, influx.url)
    events = [event(f"fine.{i}", float(i)) for i in range(6)]
    events.insert(3, event("typed", 1.0))
    output.eventsReceived(events)
    try:
        await output.flush()
        assert output.eventsRejected == 1
        assert output.buffer.drops["rejected"] == 1
        for i in range(6):
            assert influx.rows(f'SELECT value FROM "fine.{i}"')[0]["value"] == float(i)
        assert output.sent == 6
    finally:
        await output.stop()


@pytest_twisted.ensureDeferred
async def test_influxdb_going_away_and_coming_back_loses_nothing(
    reactor: Any, tmp_path: Path
) -> None:
    binary = findInflux()
    assert binary, "influxd is required: run scripts/test-deps.sh"
    influx = startInflux(binary, tmp_path)
    output = realOutput(reactor, influx.url, batch_size=10)
    try:
        output.eventsReceived([event("restart", float(i), evtime=T0 + i) for i in range(5)])
        await output.flush()
        influx.server.stop()
        output.eventsReceived([event("restart", float(i), evtime=T0 + i) for i in range(5, 25)])
        await waitFor(reactor, lambda: output.failures >= 2, "failed writes")
        assert output.buffer.depth == 20
        influx.server.start()
        await waitFor(reactor, lambda: not output.buffer.depth, "the backlog delivered", 30)
        rows = influx.rows('SELECT count(value) FROM "restart"')
        assert rows[0]["count"] == 25
        assert output.eventsRejected == 0
    finally:
        await output.stop()
        influx.server.stop()
