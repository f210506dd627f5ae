"""RiemannTCP and RiemannUDP, against real Riemann-speaking servers and on a Clock."""

from __future__ import annotations

import math
import struct
import tracemalloc
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from duct import testing
from duct.objects import Event
from duct.outputs.riemann import RiemannTCP, RiemannUDP
from duct.outputs.riemann_udp import packDatagrams
from duct.protocol.riemann import (
    DecodeError,
    EncodedEvents,
    ack,
    decodeMsg,
    encodeEvent,
    msgFromEncoded,
    pb,
    splitPayload,
)
from duct.testing import FakeDuct, configure

T0 = 1_700_000_000.25
DEADLINE = 20.0


def makeEvents(n: int, start: int = 0, ttl: float = 60.0, **kwargs: Any) -> list[Event]:
    options: dict[str, Any] = dict(
        tags=["a", "b"], hostname="h1.example", evtime=T0, attributes={"dc": "east"}
    )
    options.update(kwargs)
    return [
        Event("ok", str(i), f"event {i}", float(i) + 0.5, ttl, **options)
        for i in range(start, start + n)
    ]


def waitFor(reactor: Any, check: Any, what: str, timeout: float = DEADLINE) -> Deferred[Any]:
    """Poll ``check`` on the real reactor, without blocking, until it is true."""
    return testing.waitFor(reactor, check, what, timeout, interval=0.01)


# -- a Riemann server, for real sockets -----------------------------------------------


class ServerConnection(Int32StringReceiver):
    MAX_LENGTH = 64 * 1024 * 1024

    def connectionMade(self) -> None:
        self.factory.connectionMade(self)
        self.pending: list[Any] = []
        self.lost: Deferred[None] = Deferred()

    def stringReceived(self, data: bytes) -> None:
        server = self.factory
        msg = decodeMsg(data)
        server.payloads.append(data)
        server.msgs.append([event.service for event in msg.events])
        server.events.extend(msg.events)
        self.services.extend(event.service for event in msg.events)
        if server.hold:
            return
        reply = server.reply(msg)
        if server.ackDelay:
            self.pending.append(server.reactor.callLater(server.ackDelay, self._send, reply))
        else:
            self.transport.write(reply)

    def _send(self, reply: bytes) -> None:
        self.pending = [call for call in self.pending if call.active()]
        self.transport.write(reply)

    def connectionLost(self, reason: Any = None) -> None:
        for call in self.pending:
            if call.active():
                call.cancel()
        self.factory.connections.remove(self)
        self.lost.callback(None)


class RiemannServer(protocol.Factory):
    """Records every Msg and event it receives; replies ok: true unless told otherwise."""

    protocol = ServerConnection
    noisy = False

    def __init__(self, reactor: Any, ackDelay: float = 0.0) -> None:
        self.reactor = reactor
        self.ackDelay = ackDelay
        self.hold = False
        self.payloads: list[bytes] = []
        self.msgs: list[list[str]] = []
        self.events: list[pb.Event] = []
        self.connections: list[ServerConnection] = []
        self.connectedAt: list[float] = []
        self.perConnection: list[list[str]] = []
        self.port: Any = None
        self.portNumber = 0

    def reply(self, msg: pb.Msg) -> bytes:
        return ack()

    @property
    def services(self) -> list[str]:
        return [event.service for event in self.events]

    def connectionMade(self, connection: ServerConnection) -> None:
        connection.services = []
        self.perConnection.append(connection.services)
        self.connections.append(connection)
        self.connectedAt.append(self.reactor.seconds())

    def listen(self, port: int = 0) -> int:
        self.port = self.reactor.listenTCP(port, self, interface="127.0.0.1")
        self.portNumber = self.port.getHost().port
        return self.portNumber

    async def dropConnections(self) -> None:
        lost = [c.lost for c in self.connections]
        for connection in list(self.connections):
            connection.transport.abortConnection()
        await DeferredList(lost)

    async def stop(self) -> None:
        """Stop listening and drop every open connection, as a dying server would."""
        port, self.port = self.port, None
        if port is not None:
            await port.stopListening()
        await self.dropConnections()


async def stopAll(output: Any, server: RiemannServer | None = None) -> None:
    await output.stop()
    if server is not None:
        await server.stop()


def tcpOutput(reactor: Any, port: int, **config: Any) -> RiemannTCP:
    config = {"server": "127.0.0.1", "port": port, **config}
    return RiemannTCP(configure(RiemannTCP, config), FakeDuct(clock=reactor))


# -- on a Clock: a connection over a StringTransport --------------------------------


class FakeConnection:
    """Plays the server of the connection attempt RiemannTCP made on a MemoryReactorClock."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        host, port, factory = reactor.tcpClients[-1][:3]
        self.transport = StringTransport()
        self.proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.proto.makeConnection(self.transport)

    def msgs(self) -> list[pb.Msg]:
        data = self.transport.value()
        self.transport.clear()
        msgs = []
        while data:
            (length,) = struct.unpack(">I", data[:4])
            msgs.append(decodeMsg(data[4 : 4 + length]))
            data = data[4 + length :]
        return msgs

    def reply(self, ok: bool = True, error: str | None = None) -> None:
        self.proto.dataReceived(ack(ok, error))

    def drop(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


def clockOutput(**config: Any) -> tuple[RiemannTCP, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    reactor.advance(T0)
    config = {"endpoint": "tcp:127.0.0.1:5555", **config}
    output = RiemannTCP(configure(RiemannTCP, config), FakeDuct(clock=reactor))
    output.createClient()
    return output, reactor


def stopClocked(output: RiemannTCP, connection: FakeConnection | None) -> None:
    d = output.stop()
    if connection is not None and not connection.transport.disconnected:
        assert connection.transport.disconnecting
        connection.drop()
    assert d.called


def queued(events: list[Event]) -> list[bytes]:
    """What RiemannTCP's memory buffer holds for each event: a Msg of its own."""
    return [msgFromEncoded([encodeEvent(e)]) for e in events]


def services(msgs: list[pb.Msg]) -> list[str]:
    return [event.service for msg in msgs for event in msg.events]


# -- the real server -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_no_event_lost_when_the_server_restarts(reactor: Any) -> None:
    server = RiemannServer(reactor, ackDelay=0.02)
    port = server.listen()
    output = tcpOutput(
        reactor,
        port,
        batch_size=10,
        max_in_flight=4,
        flush_interval=0.01,
        reconnect_initial=0.05,
        reconnect_max=0.5,
    )
    output.createClient()
    total = 2000
    events = makeEvents(total)
    try:
        await waitFor(reactor, lambda: output.connected, "the first connection")
        for start in range(0, total, 20):
            output.eventsReceived(events[start : start + 20])
            if start == 800:
                assert output.inFlight > 0
                await server.stop()  # dies with Msgs in flight
                diedAt = reactor.seconds()
            await deferLater(reactor, 0.005, lambda: None)
        await waitFor(reactor, lambda: not output.connected, "the lost connection")
        assert output.buffer.depth > 0
        await deferLater(reactor, max(0.0, diedAt + 3.0 - reactor.seconds()), lambda: None)
        server.listen(port)
        backAt = reactor.seconds()
        await waitFor(reactor, lambda: output.connected, "the reconnection")
        await output.flush()
    finally:
        await stopAll(output, server)

    assert server.connectedAt[-1] - backAt < 1.0
    assert output.reconnects >= 1
    received = server.services
    assert set(received) == {str(i) for i in range(total)}
    assert len(received) - total <= 4 * 10  # only what was in flight comes twice
    assert output.sent >= total and output.buffer.depth == 0


@pytest_twisted.ensureDeferred
async def test_msgs_in_flight_go_back_first_and_in_order(reactor: Any) -> None:
    server = RiemannServer(reactor)
    server.hold = True  # no replies: every Msg stays in flight
    port = server.listen()
    output = tcpOutput(
        reactor, port, batch_size=10, max_in_flight=4, flush_interval=0, reconnect_max=0.2
    )
    output.createClient()
    try:
        await waitFor(reactor, lambda: output.connected, "the connection")
        output.eventsReceived(makeEvents(60))
        await waitFor(reactor, lambda: len(server.msgs) == 4, "four Msgs")
        assert output.inFlight == 4 and len(output.buffer) == 20
        await server.stop()
        await waitFor(reactor, lambda: not output.connected, "the lost connection")
        assert output.inFlight == 0
        assert output.buffer.waiting()[:40] == queued(makeEvents(40))
        server.hold = False
        server.listen(port)
        await output.flush()
    finally:
        await stopAll(output, server)

    assert server.perConnection[0] == [str(i) for i in range(40)]
    assert server.perConnection[1] == [str(i) for i in range(60)]


@pytest_twisted.ensureDeferred
async def test_events_on_the_wire(reactor: Any) -> None:
    server = RiemannServer(reactor)
    port = server.listen()
    output = tcpOutput(reactor, port)
    output.createClient()
    events = [
        Event(
            "warning",
            "int",
            "an int",
            42,
            30.0,
            tags=["x", "y"],
            hostname="h1",
            evtime=T0,
            attributes={"dc": "east", "rack": "7"},
        ),
        Event("ok", "float", None, 2.75, None, hostname="h2", evtime=T0 + 1.5),
    ]
    try:
        output.eventsReceived(events)
        await output.flush()
    finally:
        await stopAll(output, server)

    assert server.msgs == [["int", "float"]]
    first, second = server.events
    assert first.time == int(T0) and first.time_micros == round(T0 * 1_000_000)
    assert first.HasField("metric_sint64") and first.metric_sint64 == 42
    assert first.metric_f == 42.0 and not first.HasField("metric_d")
    assert list(first.tags) == ["x", "y"]
    assert {a.key: a.value for a in first.attributes} == {"dc": "east", "rack": "7"}
    assert (first.state, first.host, first.description, first.ttl) == (
        "warning",
        "h1",
        "an int",
        30,
    )
    assert second.metric_d == 2.75 and second.metric_f == 2.75
    assert not second.HasField("metric_sint64") and not second.HasField("ttl")
    assert second.time_micros == round((T0 + 1.5) * 1_000_000)
    assert output.sent == 2 and output.lastAckLatency is not None


@pytest_twisted.ensureDeferred
async def test_encoded_events_go_through_byte_for_byte(reactor: Any) -> None:
    server = RiemannServer(reactor)
    port = server.listen()
    output = tcpOutput(reactor, port)
    output.createClient()
    # Fields out of protobuf's usual order: re-encoding would reorder them.
    odd = pb.Event(service="odd").SerializeToString() + pb.Event(time=5).SerializeToString()
    encoded = [odd] + [encodeEvent(event) for event in makeEvents(3)]
    try:
        output.eventsReceived(EncodedEvents(encoded))
        await output.flush()
    finally:
        await stopAll(output, server)

    assert server.payloads == [msgFromEncoded(encoded)]
    assert server.services == ["odd", "0", "1", "2"]


@pytest_twisted.ensureDeferred
async def test_fails_over_to_the_next_server(reactor: Any, logged: list[dict[str, Any]]) -> None:
    server = RiemannServer(reactor)
    port = server.listen()  # 127.0.0.1 only: nothing listens on 127.0.0.2
    output = tcpOutput(reactor, port, server=["127.0.0.2", "127.0.0.1"], reconnect_max=0.2)
    output.createClient()
    try:
        output.eventsReceived(makeEvents(5))
        await output.flush()
    finally:
        await stopAll(output, server)

    assert server.services == ["0", "1", "2", "3", "4"]
    assert output.endpoint is not None and output.endpoint.current == f"127.0.0.1:{port}"
    failures = [formatEvent(e) for e in logged if "cannot connect" in e.get("log_format", "")]
    assert failures and f"127.0.0.2:{port}" in failures[0]


@pytest_twisted.ensureDeferred
async def test_stop_while_the_server_is_unreachable(reactor: Any) -> None:
    server = RiemannServer(reactor)
    port = server.listen()
    await server.stop()
    output = tcpOutput(reactor, port, reconnect_max=0.2)
    output.createClient()
    output.eventsReceived(makeEvents(3))
    flushed = output.flush()
    await deferLater(reactor, 0.3, lambda: None)
    assert not flushed.called and not output.connected
    await output.stop()
    assert flushed.called  # stopping releases whoever waits for a flush
    assert output.buffer.depth == 3


# -- on a Clock ---------------------------------------------------------------------


def serveRefusing(server: FakeConnection, refused: str) -> list[list[str]]:
    """Answer every Msg sent, ``ok: false`` for those holding event ``refused``, until none."""
    seen = []
    while msgs := server.msgs():
        for msg in msgs:
            names = [event.service for event in msg.events]
            seen.append(names)
            if refused in names:
                server.reply(ok=False, error="stream error: bad event")
            else:
                server.reply()
    return seen


def test_a_refused_msg_is_split_until_the_event_at_fault_is_dropped(
    logged: list[dict[str, Any]],
) -> None:
    output, reactor = clockOutput(
        flush_interval=0, max_in_flight=1, max_retries=2, retry_initial=0.5, retry_max=30.0
    )
    server = FakeConnection(reactor)
    output.eventsReceived(makeEvents(5))
    output.eventsReceived(makeEvents(1, start=5))  # waits: one Msg in flight at a time
    seen = serveRefusing(server, "2")
    # Halves, written again at once; the event at fault waits aside for its retry.
    assert seen == [
        ["0", "1", "2", "3", "4"],
        ["0", "1"],
        ["2", "3", "4"],
        ["2"],
        ["3", "4"],
        ["5"],
    ]
    assert output.sent == 5 and output.buffer.depth == 1
    for backoff in (0.5, 1.0):  # retry_initial, doubling
        reactor.advance(backoff - 0.01)
        assert not server.transport.value()
        reactor.advance(0.01)
        assert serveRefusing(server, "2") == [["2"]]
    assert output.rejected == 5 and output.eventsRejected == 1
    assert output.buffer.drops["rejected"] == 1
    assert output.buffer.depth == 0 and output.buffer.nbytes == 0
    dropped = [formatEvent(e) for e in logged if "dropped: h1.example 2" in formatEvent(e)]
    assert dropped and "stream error: bad event" in dropped[0]
    stopClocked(output, server)


def test_by_default_an_event_riemann_refuses_is_dropped_at_once() -> None:
    output, reactor = clockOutput(flush_interval=0, max_in_flight=1)
    server = FakeConnection(reactor)
    output.eventsReceived(makeEvents(4))
    assert serveRefusing(server, "1") == [
        ["0", "1", "2", "3"],
        ["0", "1"],
        ["0"],
        ["1"],
        ["2", "3"],
    ]
    assert output.sent == 3 and output.buffer.drops["rejected"] == 1
    assert output.buffer.depth == 0 and output.eventsRejected == 1
    stopClocked(output, server)


def test_an_event_that_cannot_be_encoded_is_dropped_as_it_arrives() -> None:
    output, reactor = clockOutput(flush_interval=0)
    server = FakeConnection(reactor)
    events = makeEvents(3)
    events[1].description = "\udcff"  # not valid Unicode: protobuf refuses it
    assert output.eventsReceived(events) == 2
    assert output.buffer.drops["rejected"] == 1 and output.eventsRejected == 1
    assert serveRefusing(server, "none") == [["0", "2"]]
    stopClocked(output, server)


def test_a_lost_connection_requeues_refused_and_in_flight_msgs_in_order() -> None:
    output, reactor = clockOutput(flush_interval=0, batch_size=2, max_in_flight=3)
    server = FakeConnection(reactor)
    output.eventsReceived(makeEvents(8))
    assert services(server.msgs()) == ["0", "1", "2", "3", "4", "5"]
    server.reply(ok=False, error="no")  # Msg [0, 1] waits for a retry
    server.drop()
    assert not output.connected and output.inFlight == 0
    assert output.buffer.waiting() == queued(makeEvents(8))
    reactor.advance(1.0)
    server = FakeConnection(reactor)
    assert services(server.msgs()) == ["0", "1", "2", "3", "4", "5"]
    for _ in range(4):
        server.reply()
    assert output.sent == 8 and output.reconnects == 1
    stopClocked(output, server)


def test_expired_events_are_dropped_not_sent() -> None:
    output, reactor = clockOutput(expire=True)
    output.eventsReceived(makeEvents(3, evtime=T0, ttl=5.0))
    output.eventsReceived(makeEvents(2, start=3, evtime=T0, ttl=60.0))
    stale = pb.Event(service="relayed-stale", time=int(T0), ttl=5).SerializeToString()
    fresh = pb.Event(service="relayed-fresh", time_micros=int(T0 * 1e6), ttl=60)
    output.eventsReceived(EncodedEvents([stale, fresh.SerializeToString()]))
    reactor.advance(10)  # still not connected: everything waits
    server = FakeConnection(reactor)
    reactor.advance(0.1)
    assert services(server.msgs()) == ["3", "4", "relayed-fresh"]
    assert output.buffer.drops["expired"] == 4
    server.reply()
    assert output.buffer.depth == 0
    stopClocked(output, server)


def test_maxrate_paces_sending_on_the_clock() -> None:
    output, reactor = clockOutput(maxrate=10, batch_size=100)
    server = FakeConnection(reactor)
    output.eventsReceived(makeEvents(50))
    sends: list[tuple[float, int]] = []
    for _ in range(600):  # 6 s
        for msg in server.msgs():
            sends.append((reactor.seconds() - T0, len(msg.events)))
            server.reply()
        assert len(reactor.getDelayedCalls()) <= 1  # one timer at a time, no spinning
        reactor.advance(0.01)
    assert [count for _, count in sends] == [10] * 5
    times = [when for when, _ in sends]
    assert times == pytest.approx([0, 1, 2, 3, 4], abs=0.06)  # steps of 0.01 add up
    for elapsed in (0.5, 2.5, 4.5):
        assert sum(c for when, c in sends if when <= elapsed) <= 10 + 10 * elapsed
    stopClocked(output, server)


@pytest.mark.parametrize("allow", [False, True])
def test_nan_metrics_are_invalid_unless_allowed(allow: bool) -> None:
    output, reactor = clockOutput(allow_non_finite=allow, flush_interval=0)
    server = FakeConnection(reactor)
    events = makeEvents(3)
    events[0].metric = math.nan
    events[1].metric = -math.inf
    output.eventsReceived(events)
    sent = [event for msg in server.msgs() for event in msg.events]
    server.reply()
    if allow:
        assert [e.service for e in sent] == ["0", "1", "2"]
        assert math.isnan(sent[0].metric_d) and sent[1].metric_d == -math.inf
        assert "invalid" not in output.buffer.drops
    else:
        assert [e.service for e in sent] == ["2"]
        assert output.buffer.drops["invalid"] == 2
    stopClocked(output, server)


@pytest.mark.parametrize("allow", [False, True])
def test_allow_nan_is_the_originals_switch_for_events_without_a_metric(allow: bool) -> None:
    output, reactor = clockOutput(allow_nan=allow, flush_interval=0)
    server = FakeConnection(reactor)
    events = makeEvents(3)
    events[1].metric = None
    output.eventsReceived(events)
    sent = [event for msg in server.msgs() for event in msg.events]
    server.reply()
    if allow:
        assert [e.service for e in sent] == ["0", "1", "2"]
        assert not sent[1].HasField("metric_d") and not sent[1].HasField("metric_f")
    else:
        assert [e.service for e in sent] == ["0", "2"]
        assert output.buffer.drops["invalid"] == 1
    stopClocked(output, server)


def test_flush_sends_a_partial_batch_and_waits_for_the_ack() -> None:
    output, reactor = clockOutput(flush_interval=5.0)
    server = FakeConnection(reactor)
    output.eventsReceived(makeEvents(3))
    assert not server.transport.value()
    flushed = output.flush()
    assert services(server.msgs()) == ["0", "1", "2"]
    assert not flushed.called and output.buffer.depth == 3
    server.reply()
    assert flushed.called and output.buffer.depth == 0
    stopClocked(output, server)


def test_queued_events_are_small() -> None:
    output, reactor = clockOutput()
    events = makeEvents(20_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        output.eventsReceived(events)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(output.buffer) == 20_000
    assert (after - before) / 20_000 < 300
    stopClocked(output, None)


def test_options_are_declared_and_checked() -> None:
    config = configure(RiemannTCP, {})
    assert config["server"] == "localhost" and config["port"] == 5555
    assert config["max_in_flight"] == 8 and config["batch_size"] == 1000
    assert config["tls_verify"] is True and config["maxrate"] is None
    with pytest.raises(ValueError, match="max_in_flight"):
        configure(RiemannTCP, {"max_in_flight": 0})
    with pytest.raises(ValueError, match="tls_verify"):
        configure(RiemannTCP, {"tls_verify": "no"})
    assert RiemannTCP.acceptsEncoded and RiemannUDP.acceptsEncoded


# -- UDP -----------------------------------------------------------------------------


class DatagramRecorder(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.datagrams.append(datagram)

    @property
    def services(self) -> list[str]:
        return [e.service for data in self.datagrams for e in decodeMsg(data).events]


@pytest_twisted.ensureDeferred
async def test_udp_packs_datagrams_and_drops_what_cannot_fit(reactor: Any) -> None:
    recorder = DatagramRecorder()
    port = reactor.listenUDP(0, recorder, interface="127.0.0.1")
    config = {"server": "127.0.0.1", "port": port.getHost().port, "max_datagram": 1024}
    output = RiemannUDP(configure(RiemannUDP, config), FakeDuct(clock=reactor))
    events = makeEvents(300)
    events[150].description = "x" * 2000
    try:
        await output.createClient()
        output.eventsReceived(events[:200])
        output.eventsReceived(EncodedEvents([encodeEvent(e) for e in events[200:]]))
        await output.flush()
        expected = [str(i) for i in range(300) if i != 150]
        await waitFor(reactor, lambda: len(recorder.services) >= 299, "the datagrams")
    finally:
        await output.stop()
        await port.stopListening()

    assert recorder.services == expected
    assert output.buffer.drops["too_large"] == 1
    assert all(len(data) <= 1024 for data in recorder.datagrams)
    biggest = max(len(encodeEvent(e)) + 2 for e in events if e.service != "150")
    assert all(len(data) > 1024 - biggest for data in recorder.datagrams[:-1])
    assert output.sent == 299 and output.datagrams == len(recorder.datagrams)


def test_pack_datagrams_keeps_order_and_limit() -> None:
    encoded = [bytes([i]) * (i * 7 % 200 + 1) for i in range(100)]
    datagrams = list(packDatagrams(encoded, 300))
    assert all(len(d) <= 300 for d in datagrams)
    assert b"".join(datagrams) == msgFromEncoded(encoded)
    first = 0
    for datagram in datagrams[:-1]:  # each is as full as the next event allows
        first += len(decodeMsgCount(datagram))
        assert len(datagram) + len(encoded[first]) + 3 > 300


def decodeMsgCount(datagram: bytes) -> list[int]:
    """The length of each field-6 entry of a serialized Msg (a varint of 1 or 2 bytes)."""
    lengths, i = [], 0
    while i < len(datagram):
        assert datagram[i] == 0x32
        length, i = datagram[i + 1], i + 2
        if length & 0x80:
            length, i = (length & 0x7F) | (datagram[i] << 7), i + 1
        lengths.append(length)
        i += length
    return lengths


def test_a_server_that_never_replies_is_dropped_after_ack_timeout() -> None:
    output, reactor = clockOutput(batch_size=2, flush_interval=0, ack_timeout=5.0)
    connection = FakeConnection(reactor)
    output.eventsReceived(makeEvents(2))
    reactor.advance(0)
    assert services(connection.msgs()) == ["0", "1"]
    reactor.advance(4.9)
    assert not connection.transport.disconnecting  # still within the timeout
    reactor.advance(0.2)
    assert connection.transport.disconnecting  # aborted: the Msg is given up on this link
    connection.drop()
    assert output.buffer.waiting() and output.inFlight == 0  # requeued, not lost
    assert output.buffer.depth == 2
    stopClocked(output, None)


def test_each_reply_restarts_the_ack_timer_from_the_oldest_msg() -> None:
    output, reactor = clockOutput(batch_size=1, flush_interval=0, ack_timeout=5.0)
    connection = FakeConnection(reactor)
    output.eventsReceived(makeEvents(1))
    reactor.advance(3)
    output.eventsReceived(makeEvents(2)[1:])
    reactor.advance(0)
    connection.reply()  # the first Msg (sent at 0) is answered at 3
    reactor.advance(4)  # the second, sent at 3, has waited 4 s of its 5
    assert not connection.transport.disconnecting
    reactor.advance(1.1)
    assert connection.transport.disconnecting
    connection.drop()
    stopClocked(output, None)


# -- relayed Msgs ------------------------------------------------------------------------


def relayedMsg(events: list[Event]) -> EncodedEvents:
    """What a Riemann listener passes on: the client's Msg, parsed once."""
    data = pb.Msg(events=[pb.Event.FromString(encodeEvent(e)) for e in events]).SerializeToString()
    return EncodedEvents.fromMsg(decodeMsg(data), data)


def test_relayed_msgs_are_queued_whole_and_sent_as_one_concatenated_msg() -> None:
    output, reactor = clockOutput(batch_size=7, flush_interval=0, max_in_flight=1)
    server = FakeConnection(reactor)
    first, second, third = (relayedMsg(makeEvents(3, start=i)) for i in (0, 3, 6))
    for msg in (first, second, third):
        output.eventsReceived(msg)
    assert output.buffer.waiting() == [second.payload, third.payload]  # one item a Msg
    assert server.transport.value()[4:] == first.payload  # alone: 3 + 3 + 3 > 7
    assert len(output.buffer) == 6 and output.buffer.depth == 9
    server.msgs()
    server.reply()
    [msg] = server.msgs()
    assert msg.SerializeToString() == second.payload + third.payload
    assert services([msg]) == [str(i) for i in range(3, 9)]
    server.reply()
    assert output.sent == 9 and output.buffer.depth == 0 and output.acked == 2
    stopClocked(output, server)


def test_a_relayed_backlog_hands_over_to_an_output_that_decodes() -> None:
    output, reactor = clockOutput()
    output.eventsReceived(relayedMsg(makeEvents(2)))
    output.eventsReceived(makeEvents(1, start=2))
    batch = output.buffer.take(100)
    assert batch is not None
    events = output.batchEvents(batch)
    assert isinstance(events, EncodedEvents) and len(events) == 3
    assert [e.service for e in events.decode()] == ["0", "1", "2"]
    assert [e.tags for e in events.decode()] == [["a", "b"]] * 3
    stopClocked(output, None)


def test_split_payload_undoes_msg_from_encoded() -> None:
    encoded = [encodeEvent(e) for e in makeEvents(3)] + [b"x" * 300]
    payload = msgFromEncoded(encoded)
    assert splitPayload(payload) == encoded
    assert EncodedEvents.fromPayload(payload, 4).encoded == encoded
    assert EncodedEvents(encoded).payload == payload
    for broken in (payload[:-1], b"\x08\x01" + payload):
        with pytest.raises(DecodeError):
            splitPayload(broken)


def test_a_msg_with_more_than_events_is_passed_on_as_its_events_only() -> None:
    data = pb.Msg(ok=True, events=[pb.Event(service="s")]).SerializeToString()
    relayed = EncodedEvents.fromMsg(decodeMsg(data), data)
    assert relayed.payload == pb.Msg(events=[pb.Event(service="s")]).SerializeToString()
    assert [e.service for e in relayed.decode()] == ["s"]


def test_a_connection_lost_before_it_is_ready_is_a_failed_attempt_then_fails_over(
    logged: list[dict[str, Any]],
) -> None:
    reactor = MemoryReactorClock()
    config = {"server": ["127.0.0.1", "127.0.0.2"], "reconnect_initial": 1.0, "reconnect_max": 8}
    output = RiemannTCP(configure(RiemannTCP, config), FakeDuct(clock=reactor))
    output.createClient()
    output.eventsReceived(makeEvents(2))
    hosts, delays = [], []
    for _ in range(3):
        host, port, factory = reactor.tcpClients[-1][:3]
        hosts.append(host)
        transport = StringTransport()
        directlyProvides(transport, ISSLTransport)  # so ready only once a handshake completes
        proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        proto.makeConnection(transport)
        assert not output.connected  # connected, but not ready
        proto.connectionLost(Failure(ConnectionDone("handshake failed")))
        [retry] = reactor.getDelayedCalls()
        delays.append(retry.getTime() - reactor.seconds())
        reactor.advance(delays[-1])
    assert hosts == ["127.0.0.1", "127.0.0.2", "127.0.0.1"]  # the next server each time
    assert [round(d) for d in delays] == [1, 2, 4]  # ClientService's backoff grows
    failures = [e for e in logged if "cannot connect" in e.get("log_format", "")]
    assert failures and failures[0]["server"] == "127.0.0.1:5555"
    assert output.buffer.depth == 2 and output.sent == 0
    output.stop()
