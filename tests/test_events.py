"""/events over real HTTP on 127.0.0.1: formats, resumption, gaps, filters, slow clients."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import protocol, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock, deferLater
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from duct import testing
from duct.objects import Event
from duct.protocol.riemann import frame, pb
from duct.service import DuctService
from duct.testing import RecordingOutput
from duct.web.events.format import EventFilter, Formatter
from duct.web.events.resource import EventsResource, eventsResource
from duct.web.events.ring import EventRing
from duct.web.events.stream import EventStream, StreamLimits

DEADLINE = 20.0


# -- a server and clients -------------------------------------------------------------


class Server:
    def __init__(self, reactor: Any, ring: EventRing, clock: Any = None, **limits: Any) -> None:
        self.reactor = reactor
        self.ring = ring
        self.resource = eventsResource(ring, clock if clock is not None else reactor, **limits)
        root = Resource()
        root.putChild(b"events", self.resource)
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/events"

    def stream(self) -> Any:
        (stream,) = self.resource.streams
        return stream

    async def close(self) -> None:
        for stream in list(self.resource.streams):
            stream.request.channel.transport.abortConnection()
        await self.port.stopListening()


class Body(protocol.Protocol):
    """A response body as it arrives, parsed as SSE or JSON lines on demand."""

    def __init__(self) -> None:
        self.data = b""
        self.ended: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(None)

    def close(self) -> None:
        if not self.ended.called:
            self.transport.stopProducing()  # type: ignore[union-attr]

    def sse(self) -> list[dict[str, str]]:
        """Complete messages, each a dict of its fields; comments left out."""
        messages = []
        for block in self.data.decode().split("\n\n")[:-1]:
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if fields:
                messages.append(fields)
        return messages

    def events(self) -> list[dict[str, Any]]:
        """SSE event messages' data, parsed."""
        return [json.loads(m["data"]) for m in self.sse() if "data" in m and "event" not in m]

    def lines(self) -> list[dict[str, Any]]:
        """Complete JSON lines, parsed (empty heartbeat lines left out)."""
        return [json.loads(line) for line in self.data.decode().split("\n")[:-1] if line]


def httpClient(reactor: Any) -> HTTPClient:
    """A treq client with a connection of its own for each request."""
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


async def get(reactor: Any, url: str, headers: dict[str, str] | None = None) -> tuple[Any, Body]:
    response = await httpClient(reactor).get(url, headers=headers, unbuffered=True)
    body = Body()
    response.deliverBody(body)
    return response, body


def waitFor(reactor: Any, check: Any, what: str) -> Deferred[Any]:
    return testing.waitFor(reactor, check, what, DEADLINE, interval=0.02)


def batch(first: int, count: int, **fields: Any) -> list[Event]:
    return [
        Event(
            fields.get("state", "ok"),
            fields.get("service", f"svc.{i}"),
            fields.get("description"),
            float(i),
            60.0,
            hostname=fields.get("host", "h1"),
        )
        for i in range(first, first + count)
    ]


# -- formats --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sse_messages_carry_the_number_as_id_and_the_event_as_json(reactor: Any) -> None:
    ring = EventRing(100)
    ring.add(batch(0, 3))
    server = Server(reactor, ring)
    try:
        response, body = await get(reactor, server.url + "?recent=2")
        assert response.headers.getRawHeaders(b"content-type") == [
            b"text/event-stream; charset=utf-8"
        ]
        await waitFor(reactor, lambda: len(body.events()) == 2, "two recent events")
        ring.add(batch(3, 2))
        await waitFor(reactor, lambda: len(body.events()) == 4, "two live events")
        messages = body.sse()
        assert messages[0] == {"retry": "2000", "id": "1"}  # where the stream starts
        assert [m["id"] for m in messages[1:]] == ["2", "3", "4", "5"]
        first = json.loads(messages[1]["data"])
        assert first == {"seq": 2, **ring.read(1, 1)[0][1].asDict()}
        assert first["service"] == "svc.1" and first["metric"] == 1.0 and first["host"] == "h1"
        body.close()
        await waitFor(reactor, lambda: not server.resource.streams, "the stream to close")
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_json_lines_each_carry_seq_and_non_finite_numbers_become_null(reactor: Any) -> None:
    ring = EventRing(100)
    ring.add(batch(0, 2))
    ring.add([Event("ok", "nan", None, float("nan"), 60.0, hostname="h1")])
    server = Server(reactor, ring)
    try:
        response, body = await get(reactor, server.url + "?format=jsonl&since=0")
        assert response.headers.getRawHeaders(b"content-type") == [
            b"application/x-ndjson; charset=utf-8"
        ]
        await waitFor(reactor, lambda: len(body.lines()) == 4, "three events")
        lines = body.lines()
        assert lines[0] == {"since": 0}
        assert [line["seq"] for line in lines[1:]] == [1, 2, 3]
        assert lines[3]["service"] == "nan" and lines[3]["metric"] is None
        body.close()
    finally:
        await server.close()


# -- resuming -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_since_recent_and_last_event_id_choose_where_the_stream_starts(
    reactor: Any,
) -> None:
    ring = EventRing(100)
    ring.add(batch(0, 10))
    server = Server(reactor, ring)

    async def numbers(query: str, headers: dict[str, str] | None = None) -> list[int]:
        _, body = await get(reactor, server.url + "?format=jsonl&" + query, headers)
        await waitFor(reactor, lambda: body.lines() and body.lines()[-1].get("seq") == 10, query)
        body.close()
        return [line["seq"] for line in body.lines() if "seq" in line]

    try:
        assert await numbers("since=6") == [7, 8, 9, 10]
        assert await numbers("recent=3") == [8, 9, 10]
        assert await numbers("", {"Last-Event-ID": "8"}) == [9, 10]
        assert await numbers("since=5", {"Last-Event-ID": "8"}) == [6, 7, 8, 9, 10]
        # EventSource reconnects to the same URL: its Last-Event-ID wins over recent.
        assert await numbers("recent=5", {"Last-Event-ID": "9"}) == [10]
        # Nothing asked for: only what comes next.
        _, body = await get(reactor, server.url + "?format=jsonl")
        await waitFor(reactor, lambda: body.lines() == [{"since": 10}], "the opening line")
        ring.add(batch(10, 1))
        await waitFor(reactor, lambda: len(body.lines()) == 2, "the next event")
        assert body.lines()[1]["seq"] == 11
        body.close()
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_a_point_the_ring_no_longer_holds_is_reported_as_a_gap(reactor: Any) -> None:
    ring = EventRing(10)
    for first in range(0, 30, 5):
        ring.add(batch(first, 5))
    assert ring.first == 21
    server = Server(reactor, ring)
    try:
        _, sse = await get(reactor, server.url + "?since=5")
        await waitFor(reactor, lambda: len(sse.events()) == 10, "the events held")
        gap = sse.sse()[1]
        assert gap["event"] == "gap" and gap["id"] == "20"
        assert json.loads(gap["data"]) == {"since": 5, "first": 21, "missed": 15}
        assert [e["seq"] for e in sse.events()] == list(range(21, 31))
        sse.close()

        _, lines = await get(reactor, server.url + "?format=jsonl&since=5")
        await waitFor(reactor, lambda: len(lines.lines()) == 12, "gap and events")
        assert lines.lines()[1] == {"gap": {"since": 5, "first": 21, "missed": 15}}
        lines.close()

        # A number beyond the newest: the agent restarted since the client saw it.
        _, ahead = await get(reactor, server.url + "?format=jsonl", {"Last-Event-ID": "500"})
        await waitFor(reactor, lambda: len(ahead.lines()) == 12, "gap and events")
        assert ahead.lines()[1] == {"gap": {"since": 500, "first": 21, "missed": None}}
        assert ahead.lines()[2]["seq"] == 21
        ahead.close()
        assert server.resource.counters["gaps"] == 3
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_events_dropped_before_they_were_sent_are_reported_in_the_stream(
    reactor: Any,
) -> None:
    clock = Clock()  # the stream writes only when the test says so
    ring = EventRing(10)
    server = Server(reactor, ring, clock=clock)
    try:
        _, body = await get(reactor, server.url + "?format=jsonl")
        await waitFor(reactor, lambda: body.lines() == [{"since": 0}], "the opening line")
        ring.add(batch(0, 3))
        ring.add(batch(3, 25))  # more than the ring holds, before the stream wrote
        clock.advance(0)
        await waitFor(reactor, lambda: len(body.lines()) == 12, "gap and events")
        assert body.lines()[1] == {"gap": {"since": 0, "first": 19, "missed": 18}}
        assert [line["seq"] for line in body.lines()[2:]] == list(range(19, 29))
        body.close()
    finally:
        await server.close()


# -- filters and bad requests -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_filters_on_service_regex_host_and_state(reactor: Any) -> None:
    ring = EventRing(100)
    ring.add(batch(0, 2, service="cpu.user", host="h1"))
    ring.add(batch(2, 2, service="cpu.system", host="h2", state="critical"))
    ring.add(batch(4, 2, service="memory", host="h2", state="critical"))
    ring.add(batch(6, 2, service="disk.cpu", host="h3"))
    server = Server(reactor, ring)

    async def matching(query: str) -> list[int]:
        _, body = await get(reactor, server.url + "?format=jsonl&since=0&" + query)
        stream = server.stream()
        ring.add(batch(100, 1, service="marker", host="h1"))  # the end of this query
        await waitFor(
            reactor,
            lambda: stream.cursor == ring.last and len(body.data) == stream.written,
            query,
        )
        body.close()
        await waitFor(reactor, lambda: not server.resource.streams, "the stream to close")
        return [line["seq"] for line in body.lines() if "seq" in line]

    try:
        assert await matching("service=^cpu") == [1, 2, 3, 4]
        assert await matching("service=cpu") == [1, 2, 3, 4, 7, 8]  # searched anywhere
        assert await matching("host=h2") == [3, 4, 5, 6]
        assert await matching("host=h2&host=h3") == [3, 4, 5, 6, 7, 8]
        assert await matching("host=h1&service=marker") == [9, 10, 11, 12, 13]
        assert await matching("state=critical&service=system$") == [3, 4]
        _, body = await get(reactor, server.url + "?format=jsonl&recent=3&service=^cpu")
        await waitFor(reactor, lambda: len(body.lines()) == 4, "the last three matching")
        assert [line["seq"] for line in body.lines()[1:]] == [2, 3, 4]
        body.close()
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_bad_requests_get_400_with_the_reason_and_are_counted(reactor: Any) -> None:
    server = Server(reactor, EventRing(10))
    try:
        for query, reason in [
            ("service=cpu(", "bad service regex 'cpu(': missing ): cpu("),
            ("since=abc", "since must be a non-negative integer, not 'abc'"),
            ("recent=-1", "recent must be a non-negative integer, not '-1'"),
            ("since=1&recent=2", "give since or recent, not both"),
            ("format=xml", "format must be sse or jsonl, not 'xml'"),
            ("service=" + "a" * 1001, "service regex is longer than 1000 characters"),
        ]:
            response, body = await get(reactor, f"{server.url}?{query}")
            await body.ended
            assert response.code == 400, query
            assert response.headers.getRawHeaders(b"content-type") == [
                b"application/json; charset=utf-8"
            ]
            assert json.loads(body.data)["error"].startswith(reason), body.data
        response, body = await get(reactor, server.url, {"Last-Event-ID": "x"})
        await body.ended
        assert response.code == 400
        assert json.loads(body.data) == {
            "error": "Last-Event-ID must be a non-negative integer, not 'x'"
        }
        assert server.resource.counters["bad_requests"] == 7
        head = await httpClient(reactor).head(server.url + "?format=xml")
        assert head.code == 400
        assert head.headers.getRawHeaders(b"content-type") == [b"application/json; charset=utf-8"]
        head = await httpClient(reactor).head(server.url + "?format=jsonl")
        assert head.code == 200
        assert head.headers.getRawHeaders(b"content-type") == [
            b"application/x-ndjson; charset=utf-8"
        ]
        assert not server.resource.streams  # a HEAD request starts no stream
    finally:
        await server.close()


# -- slow and dead clients ---------------------------------------------------------------


class NotReading(protocol.Protocol):
    """Sends a request, then reads nothing until told to; keeps what it reads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data = b""
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.getHandle().setsockopt(  # type: ignore[union-attr]
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        self.transport.write(f"GET {self.path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())  # type: ignore[union-attr]
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def readAll(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback(None)


def dechunk(data: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body."""
    payload = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        length = int(size, 16)
        payload += data[:length]
        data = data[length + 2 :]
        if not length:
            break
    return payload


def pending(transport: Any) -> int:
    """Bytes a TCP transport holds that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


async def connectNotReading(reactor: Any, server: Server, path: str) -> NotReading:
    client = NotReading(path)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port)
    await connectProtocol(endpoint, client)
    await waitFor(reactor, lambda: server.resource.streams, "the stream to start")
    # Small kernel buffers on both sides, so that they fill (and drain) quickly.
    (stream,) = server.resource.streams
    socket_ = stream.request.channel.transport.getHandle()
    socket_.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client


@pytest.mark.parametrize(
    ("reason", "limits"),
    [("lag", {"maxLag": 500}), ("bytes", {"maxLagBytes": 600_000})],
)
@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_is_cut_off_with_a_final_message(
    reactor: Any, reason: str, limits: dict[str, int]
) -> None:
    ring = EventRing(100_000, maxBytes=512 * 1024 * 1024)
    server = Server(reactor, ring, **limits)
    client = await connectNotReading(reactor, server, "/events?format=jsonl")
    stream = server.stream()
    transport = stream.request.channel.transport
    most = 0
    try:
        number = 0
        while not server.resource.counters["cutoffs"]:
            assert number < 90_000, "never cut off"
            ring.add(batch(number, 50, description="x" * 1000))
            number += 50
            await deferLater(reactor, 0, lambda: None)  # the stream writes, the kernel takes
            most = max(most, pending(transport))
        assert server.resource.counters[f"cutoffs.{reason}"] == 1
        assert not server.resource.streams and stream.closed
        # Nothing queued but the transport's own buffer, one write and the final message.
        bound = 65536 + 16384 + 2048  # the transport's buffer, one write, some framing
        assert most <= bound
        assert 0 < stream.writtenWhilePaused < 300  # the final message alone
        ring.add(batch(number, 1000))  # no longer read by anyone
        assert pending(transport) <= bound + 300

        client.readAll()
        await client.ended  # closed by the server once the final message is out
        body = dechunk(client.data.split(b"\r\n\r\n", 1)[1])
        final = json.loads(body.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        limit = next(iter(limits.values()))
        assert final["error"].startswith("too slow: ") and f"(limit {limit})" in final["error"]
        assert final["since"] == stream.cursor
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_catching_up_from_far_behind_is_not_falling_behind(reactor: Any) -> None:
    ring = EventRing(30_000)
    for first in range(0, 20_000, 100):
        ring.add(batch(first, 100, description="y" * 200))
    server = Server(reactor, ring, maxLag=500, maxLagBytes=100_000)
    more = task.LoopingCall(lambda: ring.add(batch(ring.next, 20)))  # new events meanwhile
    try:
        _, body = await get(reactor, server.url + "?format=jsonl&since=0")
        stream = server.stream()
        more.start(0.005)
        await waitFor(reactor, lambda: stream.cursor >= 20_000, "the first 20,000")
        more.stop()
        await waitFor(reactor, lambda: len(body.data) == stream.written, "every byte")
        assert stream.cursor == ring.last > 20_000
        assert [line["seq"] for line in body.lines()[1:]] == list(range(1, ring.last + 1))
        assert stream.pauses > 0  # the client was not always reading
        assert not server.resource.counters["cutoffs"]
        body.close()
    finally:
        if more.running:
            more.stop()
        await server.close()


@pytest_twisted.ensureDeferred
async def test_a_client_paused_for_a_minute_is_cut_off_as_stalled(reactor: Any) -> None:
    clock = Clock()
    ring = EventRing(100_000, maxBytes=512 * 1024 * 1024)
    server = Server(reactor, ring, clock=clock)
    client = await connectNotReading(reactor, server, "/events")
    stream = server.stream()
    transport = stream.request.channel.transport
    try:
        number = 0
        while not stream.paused:
            assert number < 50_000, "never paused"
            ring.add(batch(number, 50, description="x" * 1000))
            number += 50
            clock.advance(0)
            await deferLater(reactor, 0, lambda: None)
        clock.advance(45)
        assert not server.resource.counters["cutoffs"]
        clock.advance(15)
        assert server.resource.counters["cutoffs.stalled"] == 1
        assert stream.closed and not server.resource.streams
        await deferLater(reactor, 0.1, lambda: None)
        assert not transport.disconnected  # the client has its grace to read the end
        clock.advance(10)  # then the connection is aborted
        await waitFor(reactor, lambda: transport.disconnected, "the server to drop it")
        client.readAll()
        await client.ended
    finally:
        await server.close()


@pytest_twisted.ensureDeferred
async def test_heartbeats_every_15_seconds(reactor: Any) -> None:
    clock = Clock()
    server = Server(reactor, EventRing(10), clock=clock)
    try:
        _, body = await get(reactor, server.url)
        await waitFor(reactor, lambda: body.sse(), "the opening")
        clock.advance(14)
        await deferLater(reactor, 0.05, lambda: None)
        assert b"heartbeat" not in body.data
        clock.advance(1)
        await waitFor(reactor, lambda: body.data.endswith(b": heartbeat\n\n"), "a heartbeat")
        clock.advance(15)
        await waitFor(reactor, lambda: body.data.count(b": heartbeat\n\n") == 2, "another")
        body.close()
        await waitFor(reactor, lambda: not server.resource.streams, "the stream to close")
        assert not server.resource._heartbeat.running
    finally:
        await server.close()


# -- from the pipeline -------------------------------------------------------------------


class EncodedSink(RecordingOutput):
    """Takes relayed events as they came, as the Riemann output does."""

    acceptsEncoded = True
    received_batches: list[Any] = []

    def eventsReceived(self, events: Any) -> int:
        self.received_batches.append(events)
        return len(events)


@pytest_twisted.ensureDeferred
async def test_relayed_riemann_events_appear_decoded_in_the_stream(reactor: Any) -> None:
    config = {
        "web": {"listen": "tcp:0:interface=127.0.0.1"},  # the ring; any free port
        "outputs": [{"output": f"{__name__}.EncodedSink", "name": "sink"}],
        "sources": [
            {
                "service": "relay",
                "source": "duct.sources.riemann.RiemannTCP",
                "listen": "tcp:0:interface=127.0.0.1",
            }
        ],
    }
    service = DuctService(config, reactor)
    service.startService()
    assert service.ring is not None
    server = Server(reactor, service.ring)
    try:
        _, body = await get(reactor, server.url + "?format=jsonl")
        listener = service.sources[0]
        await waitFor(reactor, lambda: listener.port is not None, "the listener")
        msg = pb.Msg()
        for i in range(3):
            event = msg.events.add(host="web1", service=f"req.{i}", state="ok", metric_d=i)
            event.time_micros = 1_700_000_000_000_000 + i
            event.tags.append("relayed")
            event.attributes.add(key="dc", value="east")
        sender = Collector()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listener.port.getHost().port)
        await connectProtocol(endpoint, sender)
        sender.transport.write(frame(msg.SerializeToString()))  # type: ignore[union-attr]
        await waitFor(reactor, lambda: len(body.lines()) == 4, "the relayed events")
        assert [
            (line["seq"], line["host"], line["service"], line["metric"], line["time"])
            for line in body.lines()[1:]
        ] == [(i + 1, "web1", f"req.{i}", float(i), 1_700_000_000 + i / 1e6) for i in range(3)]
        assert body.lines()[1]["tags"] == ["relayed"]
        assert body.lines()[1]["attributes"] == {"dc": "east"}
        (relayed,) = EncodedSink.received_batches
        assert relayed._decoded is None  # nothing on the way decoded them
        sender.transport.loseConnection()  # type: ignore[union-attr]
        body.close()
    finally:
        EncodedSink.received_batches.clear()
        await server.close()
        await service.stopService()


class Collector(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


def test_events_resource_defaults_scale_with_the_ring() -> None:
    resource = eventsResource(EventRing(1000, maxBytes=2_000_000), Clock())
    assert isinstance(resource, EventsResource)
    assert resource.limits == StreamLimits(maxLag=500, maxLagBytes=1_000_000, stallTimeout=60.0)


# -- the stream and its hub, without a server ---------------------------------------------


class RecordingHub:
    """A StreamHub that records what a stream tells it."""

    def __init__(self) -> None:
        self.counts: list[str] = []
        self.cutOffs: list[tuple[str, str]] = []
        self.ended: list[EventStream] = []

    def count(self, name: str) -> None:
        self.counts.append(name)

    def cutOff(self, stream: EventStream, reason: str, message: str) -> None:
        self.cutOffs.append((reason, message))

    def closed(self, stream: EventStream) -> None:
        self.ended.append(stream)


class FakeRequest:
    """What a stream uses of its request: the producer, writes and the end."""

    channel = None

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None
        self.finished = False
        self.ended: Deferred[None] = Deferred()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        return self.ended

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True

    def getClientAddress(self) -> None:
        return None


def openStream(ring: EventRing, limits: StreamLimits) -> tuple[EventStream, RecordingHub, Any]:
    clock, hub, request = Clock(), RecordingHub(), FakeRequest()
    stream = EventStream(
        hub, ring, clock, limits, request, Formatter("jsonl"), EventFilter(), cursor=0
    )
    stream.start(None)
    clock.advance(0)
    return stream, hub, request


def test_a_stream_reports_gaps_and_its_end_to_its_hub() -> None:
    ring = EventRing(3)
    ring.add(batch(0, 5))  # the ring keeps the last 3
    stream, hub, request = openStream(ring, StreamLimits(100, 10**6, 60.0))
    lines = [json.loads(line) for line in b"".join(request.written).splitlines()]
    assert lines[0] == {"since": 0}
    assert lines[1] == {"gap": {"since": 0, "first": 3, "missed": 2}}
    assert [line["seq"] for line in lines[2:]] == [3, 4, 5]
    assert hub.counts == ["gaps"] and not hub.ended
    stream.stopProducing()
    assert hub.ended == [stream] and stream.closed


def test_a_paused_stream_is_cut_off_by_its_own_limits() -> None:
    ring = EventRing(100)
    stream, hub, request = openStream(ring, StreamLimits(5, 10**6, 60.0))
    stream.pauseProducing()
    ring.add(batch(0, 6))
    assert hub.cutOffs == [
        ("lag", "too slow: fell 6 events behind (limit 5); disconnecting (resume with since=0)")
    ]
    assert hub.ended == [stream] and request.finished
    last = json.loads(b"".join(request.written).splitlines()[-1])
    assert last["since"] == 0 and last["error"].startswith("too slow: fell 6 events behind")


@pytest.mark.parametrize("name", ["sse", "jsonl"])
def test_every_formatter_method_returns_bytes(name: str) -> None:
    formatter = Formatter(name)
    event = Event("ok", "svc", None, float("nan"), 60.0, hostname="h1")
    for data in (
        formatter.event(1, event),
        formatter.gap(0, 2, 1),
        formatter.error("why", 1),
        formatter.opening(0),
        formatter.heartbeat(),
    ):
        assert isinstance(data, bytes) and data.endswith(b"\n")
    assert b'"metric":null' in formatter.event(1, event)
