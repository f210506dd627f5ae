"""duct tail against a real /events server: resuming, gaps, errors, the command itself."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from test_e2e import Collect
from test_events import Server, batch, waitFor
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from duct.follow import Tail, describe
from duct.web.events.resource import eventsResource
from duct.web.events.ring import EventRing

BIN = Path(sys.executable).parent


def printedNumbers(out: io.StringIO) -> list[int]:
    return [json.loads(line)["seq"] for line in out.getvalue().splitlines()]


class Feed:
    """Adds a few events to a ring every few milliseconds."""

    def __init__(self, ring: EventRing) -> None:
        self.ring = ring
        self.loop = task.LoopingCall(lambda: ring.add(batch(ring.next, 3)))

    def start(self) -> None:
        self.loop.start(0.005)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()


@pytest_twisted.ensureDeferred
async def test_tail_resumes_across_dropped_connections_without_gaps_or_repeats(
    reactor: Any,
) -> None:
    ring = EventRing(100_000)
    server = Server(reactor, ring)
    feed = Feed(ring)
    out, err = io.StringIO(), io.StringIO()
    tail = Tail(reactor, server.url, since=0, raw=True, out=out, err=err, backoff=(0.05, 0.2))
    running = ensureDeferred(tail.run())
    try:
        feed.start()
        await waitFor(reactor, lambda: tail.printed >= 100, "the first events")
        server.stream().request.channel.transport.abortConnection()  # abruptly
        await waitFor(reactor, lambda: tail.reconnections == 1, "a reconnection")
        await waitFor(reactor, lambda: tail.printed >= 300, "more events")
        server.stream().request.channel.transport.loseConnection()  # cleanly, mid-chunk
        await waitFor(reactor, lambda: tail.reconnections == 2, "another reconnection")
        await waitFor(reactor, lambda: tail.printed >= 500, "more events")
        feed.stop()
        await waitFor(reactor, lambda: tail.last == ring.last, "the newest event")
        tail.stop()
        assert await running == 0
    finally:
        feed.stop()
        tail.stop()
        await server.close()
    assert printedNumbers(out) == list(range(1, ring.last + 1))
    assert err.getvalue().count("reconnecting in 0.05s") == 2
    assert "gap" not in err.getvalue()


@pytest_twisted.ensureDeferred
async def test_tail_reports_a_gap_when_the_ring_moved_past_it_meanwhile(reactor: Any) -> None:
    ring = EventRing(50)
    ring.add(batch(0, 10))
    server = Server(reactor, ring)
    out, err = io.StringIO(), io.StringIO()
    tail = Tail(reactor, server.url, since=0, raw=True, out=out, err=err, backoff=(0.3, 1.0))
    running = ensureDeferred(tail.run())
    try:
        await waitFor(reactor, lambda: tail.printed == 10, "the first events")
        server.stream().request.channel.transport.abortConnection()
        for first in range(10, 210, 10):  # while it is away, the ring moves on
            ring.add(batch(first, 10))
        await waitFor(reactor, lambda: tail.last == ring.last == 210, "the newest event")
        tail.stop()
        assert await running == 0
    finally:
        tail.stop()
        await server.close()
    assert printedNumbers(out) == list(range(1, 11)) + list(range(ring.first, 211))
    assert (
        f"gap: {ring.first - 11} events after 10 are no longer held; resuming at {ring.first}"
        in err.getvalue()
    )


@pytest_twisted.ensureDeferred
async def test_tail_reconnects_when_nothing_arrives_not_even_a_heartbeat(reactor: Any) -> None:
    ring = EventRing(10)
    server = Server(reactor, ring, clock=Clock())  # a clock that never beats
    err = io.StringIO()
    tail = Tail(reactor, server.url, out=io.StringIO(), err=err, idleTimeout=0.2)
    running = ensureDeferred(tail.run())
    try:
        await waitFor(reactor, lambda: tail.reconnections >= 1, "a reconnection")
        assert "nothing received for 0.2s" in err.getvalue()
        tail.stop()
        assert await running == 0
    finally:
        tail.stop()
        await server.close()


class Guarded(Resource):
    """/events behind a bearer token, as the web server may put it."""

    isLeaf = True

    def __init__(self, inner: Resource, token: bytes) -> None:
        super().__init__()
        self.inner = inner
        self.token = token

    def render_GET(self, request: Any) -> Any:
        if request.getHeader(b"authorization") != b"Bearer " + self.token:
            request.setResponseCode(401)
            return b"a token is required\n"
        return self.inner.render_GET(request)  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_tail_sends_its_token_and_stops_on_a_refusal(reactor: Any) -> None:
    ring = EventRing(10)
    ring.add(batch(0, 3))
    port = reactor.listenTCP(
        0, Site(Guarded(eventsResource(ring, reactor), b"s3cret")), interface="127.0.0.1"
    )
    url = f"http://127.0.0.1:{port.getHost().port}/events"
    try:
        err = io.StringIO()
        refused = Tail(reactor, url, since=0, out=io.StringIO(), err=err)
        assert await ensureDeferred(refused.run()) == 1
        assert "answered 401: a token is required" in err.getvalue()

        out = io.StringIO()
        tail = Tail(reactor, url, since=0, token="s3cret", raw=True, out=out, err=io.StringIO())
        running = ensureDeferred(tail.run())
        await waitFor(reactor, lambda: tail.printed == 3, "the events")
        tail.stop()
        assert await running == 0
        assert printedNumbers(out) == [1, 2, 3]
    finally:
        await port.stopListening()


def test_the_readable_line_has_number_time_host_service_state_metric_description() -> None:
    line = describe(
        {
            "seq": 42,
            "time": 1_700_000_000.25,
            "host": "web1",
            "service": "cpu",
            "state": "warning",
            "metric": 0.875,
            "description": "busy\nvery",
        }
    )
    number, day, clock, rest = line.split(" ", 3)
    assert number == "#42" and clock.endswith(".250")
    assert rest == "web1 cpu warning 0.875 busy very"
    assert describe({"seq": 1, "time": None, "host": "h", "service": "s", "metric": None}) == (
        "#1 - h s - -"
    )


# -- the command ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_duct_tail_prints_events_and_exits_0_on_ctrl_c(reactor: Any) -> None:
    ring = EventRing(100)
    ring.add(batch(0, 5, service="cpu"))
    ring.add(batch(5, 5, service="memory"))
    server = Server(reactor, ring)
    proto = Collect()
    argv = [str(BIN / "duct"), "tail", "--url", server.url, "--recent", "3", "--service", "^cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    transport = reactor.spawnProcess(proto, argv[0], argv, env=env)
    try:
        await waitFor(reactor, lambda: proto.output.count(b"\n") >= 3, "three lines")
        ring.add(batch(10, 1, service="cpu.user", state="critical"))
        await waitFor(reactor, lambda: proto.output.count(b"\n") >= 4, "a live event")
        transport.signalProcess(signal.SIGINT)
        code = await proto.ended
    finally:
        if not proto.ended.called:
            transport.signalProcess("KILL")
        await server.close()
    assert code == 0, proto.output.decode()
    lines = proto.output.decode().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["#3", "#4", "#5", "#11"]
    assert lines[3].split(" ")[3:6] == ["h1", "cpu.user", "critical"]


@pytest_twisted.ensureDeferred
async def test_duct_tail_with_a_bad_regex_says_why_and_exits_2(reactor: Any) -> None:
    server = Server(reactor, EventRing(10))
    proto = Collect()
    argv = [str(BIN / "duct"), "tail", "--url", server.url, "--service", "cpu("]
    transport = reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ))
    try:
        code = await proto.ended
    finally:
        if not proto.ended.called:
            transport.signalProcess("KILL")
        await server.close()
    assert code == 2
    said = proto.output.decode().split("answered 400: ", 1)[1]
    assert said.startswith("bad service regex 'cpu('")
