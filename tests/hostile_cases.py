"""Hostile input against a real agent, case by case, while a good client keeps sending.

Each case takes a `agents.Harness` not yet started, starts it, does its
hostile thing, checks what that must lead to, and ends with
`Harness.finish`: the good client's acks kept coming, every event it got
an ack for was delivered to the JSON lines file and to the sink, memory
and buffers stayed within their bounds.  It returns how many refusals the
agent counted for it.  ``tests/test_hostile.py`` runs them as tests and
``bench/hostile.py`` times them; nothing here needs pytest.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from agents import (
    DEADLINE,
    GOOD_BATCH,
    MAXSIZE,
    MB,
    Client,
    Harness,
    RawClient,
    connectClient,
    getJSON,
    makeMsg,
    peek,
    rawEvent,
    rawMsg,
    stat,
    waitFor,
)

from duct.protocol.riemann import pb
from duct.web.events.format import MAX_REGEX

MAX_FRAME = 16 * MB  # the listeners' default max_frame
LIMITED = """
  - service: limited
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{port}:interface=127.0.0.1"
    max_connections: 5
    idle_timeout: 1
"""
"""A second TCP listener with few connections and a short idle timeout."""


async def reply(h: Harness, client: RawClient, what: str) -> pb.Msg:
    """The first reply ``client`` gets, while the good client keeps being served."""
    await waitFor(h.reactor, lambda: h.check() or client.replies or client.lost.called, what)
    assert client.replies, f"no reply before the connection closed: {what}"
    return client.replies[0]


async def hostileClient(h: Harness, port: int | None = None) -> RawClient:
    client = RawClient()
    h.clients.append(client)
    await connectClient(h.reactor, h.tcp if port is None else port, client)
    return client


# -- a. bytes that are not UTF-8 ---------------------------------------------------------


def badEvent(over: str) -> tuple[bytes, dict[str, Any]]:
    """An event with invalid UTF-8 in four text fields, and what it reads as repaired."""
    host, service = b"h\xffst.example", f"hostile.{over}.".encode() + b"\xfe\xff"
    description, key = b"caf\xc3 au lait", b"key\xff"
    raw = rawEvent(host, service, description, {key: b"value"})
    fix = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    return raw, {
        "host": fix(host),
        "service": fix(service),
        "description": fix(description),
        "attributes": {fix(key): "value"},
    }


async def nonUtf8(h: Harness, over: str = "tcp") -> int:
    """Invalid UTF-8 is acked, repaired (U+FFFD) for JSON, and relayed byte for byte."""
    await h.start()
    raw, repaired = badEvent(over)
    listener = "relay" if over == "tcp" else "relayudp"
    if over == "tcp":
        client = await hostileClient(h)
        client.send(rawMsg(raw))
        answer = await reply(h, client, "the ack of the bad bytes")
        assert answer.ok, answer.error
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(rawMsg(raw), ("127.0.0.1", h.udp))
        await h.waitStat(lambda s: stat(s, "sources", listener, "messages") >= 1, "the datagram")
    # The file output wrote it (the service's ASCII start is enough to tell).
    needle = f'"hostile.{over}.'.encode()
    await waitFor(h.reactor, lambda: h.check() or h.written(needle), "the event in the file")
    await h.serving(50)

    stream = await peek(
        h.reactor,
        h.web,
        f"/events?format=jsonl&recent=100&service={quote('^hostile[.]')}",
        # a whole line: the stream may have been read up to the middle of one
        until=lambda data: re.search(rb"hostile\.[^\n]*\n", data.partition(b"\r\n\r\n")[2]),
        meanwhile=h.check,
    )
    assert stream.status == 200, bytes(stream.data[:300])
    body = bytes(stream.data).partition(b"\r\n\r\n")[2]
    whole = body[: body.rfind(b"\n") + 1].decode("utf-8")  # strict: valid UTF-8
    seen = [json.loads(line) for line in whole.splitlines() if "hostile." in line]
    assert seen and seen[0]["service"] == repaired["service"], seen
    await getJSON(h.reactor, h.web, "/api/services")  # answers 200 with JSON
    await h.waitStat(lambda s: stat(s, "sources", listener, "repaired") > 0, "a repair counted")
    await h.finish()

    lines = [line for line in h.jsonLines() if line["service"] == repaired["service"]]
    assert len(lines) == 1, lines
    assert {key: lines[0][key] for key in repaired} == repaired
    assert any(raw in payload for payload in h.sink.payloads), "the sink got other bytes"
    return int(stat(h.stats, "sources", listener, "repaired"))


# -- b. a 16 MiB frame of empty events ---------------------------------------------------


EMPTY_EVENTS = b"\x32\x00" * (8 * MB - 2)
"""A Msg of 8,388,606 empty events: the frame, with its 4-byte length, is 16 MiB."""


async def bigFrame(h: Harness) -> int:
    """Millions of events in one frame within max_frame: refused, in bounded memory."""
    assert 4 + len(EMPTY_EVENTS) <= MAX_FRAME
    await h.start()
    client = await hostileClient(h)
    client.send(EMPTY_EVENTS)
    answer = await reply(h, client, "a reply to 8 million events")
    assert not answer.ok, "8 million events in one Msg were accepted"
    stats = await h.waitStat(
        lambda s: stat(s, "sources", "relay", "too_many_events") >= 1, "too_many_events counted"
    )
    await h.serving(50)
    await h.finish()
    return int(stat(stats, "sources", "relay", "too_many_events"))


# -- c. a Msg the buffers cannot hold, and one they cannot hold yet ----------------------


def bulkMsg(prefix: str, count: int) -> bytes:
    return makeMsg(prefix, 0, count, host="hostile.example")


async def tooBig(h: Harness) -> int:
    """A Msg within max_events but above the buffers' maxsize is refused, whole."""
    await h.start()
    client = await hostileClient(h)
    client.send(bulkMsg("toobig", MAXSIZE * 3 // 2))
    answer = await reply(h, client, "a reply to a Msg above maxsize")
    assert not answer.ok, "a Msg above every buffer's maxsize was accepted"
    stats = await h.waitStat(
        lambda s: stat(s, "sources", "relay", "too_large") >= 1, "the refusal counted"
    )
    await h.serving(50)
    await h.finish()
    assert not any(line["service"].startswith("toobig.") for line in h.jsonLines())
    return int(stat(stats, "sources", "relay", "too_large"))


NOT_NOW = 15_000  # events in a Msg that fits an empty buffer, not one a third full


async def notYet(h: Harness) -> int:
    """A Msg that fits maxsize but not the room left waits, and is acked once there is room.

    The sink is down at first, so the sink output's buffer fills with the
    good client's events; the Msg goes in once the sink is up and drains it.
    """
    assert not h.sinkUp
    await h.start()
    await h.waitStat(
        lambda s: stat(s, "outputs", "sink", "buffer_events") > MAXSIZE - NOT_NOW,
        "the sink's buffer to fill",
    )
    client = await hostileClient(h)
    client.send(bulkMsg("later", NOT_NOW))
    await h.fetchStats()  # a round trip through the agent: the Msg is read by now
    assert not client.replies, "answered before there was room"
    held = await h.waitStat(lambda s: stat(s, "sources", "relay", "held") >= 1, "the Msg held")
    h.sink.start()
    answer = await reply(h, client, "the ack once there is room")
    assert answer.ok, answer.error
    await h.serving(50)
    await h.finish()
    later = {f"later.{i}" for i in range(NOT_NOW)}
    assert later <= {line["service"] for line in h.jsonLines()}
    assert later <= h.sink.counts.keys()
    return int(stat(held, "sources", "relay", "held"))


# -- d. too many connections, and one that goes quiet --------------------------------------


async def maxConnections(h: Harness) -> int:
    """Five busy connections fill ``max_connections``: a sixth is refused and closed."""
    await h.start()
    port = h.limitedPort
    busy = [Client(f"busy{i}", 10**9, batch=GOOD_BATCH, clock=h.reactor) for i in range(5)]
    for client in busy:
        h.clients.append(client)
        await connectClient(h.reactor, port, client)
    await h.waitStat(
        lambda s: stat(s, "sources", "limited", "connections") == 5 and all(c.acked for c in busy),
        "five busy connections",
    )
    sixth = await hostileClient(h, port)
    await waitFor(h.reactor, lambda: h.check() or sixth.lost.called, "the sixth to be closed")
    assert sixth.replies and not sixth.replies[0].ok, sixth.replies
    stats = await h.waitStat(
        lambda s: stat(s, "sources", "limited", "refused_connections") >= 1, "the refusal"
    )
    marks = [c.acked for c in busy]
    await waitFor(
        h.reactor,
        lambda: all(c.acked > m for c, m in zip(busy, marks, strict=True)),
        "the busy connections to go on",
    )
    assert all(c.open and not c.refused for c in busy)
    # One closes: a new connection is accepted in its place.
    busy[0].transport.loseConnection()  # type: ignore[union-attr]
    await h.waitStat(lambda s: stat(s, "sources", "limited", "connections") == 4, "a free slot")
    again = Client("again", 10**9, batch=GOOD_BATCH, clock=h.reactor)
    h.clients.append(again)
    await connectClient(h.reactor, port, again)
    await waitFor(h.reactor, lambda: h.check() or again.acked >= 5, "acks on the new connection")
    await h.serving(20)
    await h.finish()
    return int(stat(stats, "sources", "limited", "refused_connections"))


async def idleTimeout(h: Harness) -> int:
    """Half a frame, then silence: closed after ``idle_timeout``; a busy client is not."""
    await h.start()
    port = h.limitedPort
    busy = Client("busy", 10**9, batch=GOOD_BATCH, clock=h.reactor)
    h.clients.append(busy)
    await connectClient(h.reactor, port, busy)
    slow = await hostileClient(h, port)
    started = h.reactor.seconds()
    slow.sendRaw((100).to_bytes(4, "big") + b"\x00" * 50)  # 50 of 100 bytes
    stats = await h.waitStat(
        lambda s: stat(s, "sources", "limited", "idle_closed") >= 1, "idle_closed counted"
    )
    await waitFor(h.reactor, lambda: h.check() or slow.lost.called, "the slow client closed")
    assert h.reactor.seconds() - started >= 0.9, "closed before idle_timeout"
    assert busy.open and busy.acked and not busy.refused, "the busy client was closed too"
    await h.serving(20)
    await h.finish()
    return int(stat(stats, "sources", "limited", "idle_closed"))


# -- e. a pattern that backtracks for ever, elsewhere --------------------------------------


REDOS = "(a+)+$"
LONG = "a" * 5000 + "!"
LONG_PATTERN = "(a+)+" + "a" * MAX_REGEX + "!"  # longer than /events takes


async def regex(h: Harness) -> int:
    """``(a+)+$`` over services of 5,000 ``a`` and a ``!``: answered at once (RE2).

    So is a pattern longer than ``/events`` takes (a 400).
    """
    await h.start()
    msg = pb.Msg()
    for i in range(20):
        event = msg.events.add(host=f"redos{i}.example", service=LONG, description=LONG)
        event.state = "ok"
    client = await hostileClient(h)
    client.send(msg.SerializeToString())
    answer = await reply(h, client, "the ack of the long services")
    assert answer.ok, answer.error
    pattern = quote(REDOS)
    queries = (
        f"service={pattern}",
        f"description={pattern}&service={pattern}",
        f"service={quote(LONG_PATTERN)}",
    )
    for query in queries:
        began = h.reactor.seconds()
        stream = await peek(
            h.reactor,
            h.web,
            f"/events?format=jsonl&recent=100&{query}",
            until=lambda data: b"\r\n\r\n" in data,
            meanwhile=h.check,
        )
        took = h.reactor.seconds() - began
        assert stream.status in (200, 400), bytes(stream.data[:300])
        assert took < 5.0, f"/events took {took:.1f}s to answer"
        await h.serving(20)
    await h.finish()
    return 0


@dataclass(frozen=True)
class Case:
    """A case, with what its harness needs."""

    run: Callable[[Harness], Awaitable[int]]
    extraSources: str = ""
    sinkUp: bool = True


async def nonUtf8Udp(h: Harness) -> int:
    return await nonUtf8(h, "udp")


CASES: dict[str, Case] = {
    "a-utf8-tcp": Case(nonUtf8),
    "a-utf8-udp": Case(nonUtf8Udp),
    "b-16mib-frame": Case(bigFrame),
    "c-above-maxsize": Case(tooBig),
    "c-not-yet": Case(notYet, sinkUp=False),
    "d-max-connections": Case(maxConnections, extraSources=LIMITED),
    "d-idle-timeout": Case(idleTimeout, extraSources=LIMITED),
    "e-redos": Case(regex),
}
"""Every case by name, in order: what ``bench/hostile.py --cases`` chooses from."""

__all__ = ["CASES", "DEADLINE", "Case"]
