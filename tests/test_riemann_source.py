"""The Riemann listeners: real sockets on 127.0.0.1, and in-memory transports."""

from __future__ import annotations

import datetime
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import error, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver

from duct.event import Event
from duct.listening import CannotListen
from duct.protocol.riemann import MAX_DATAGRAM, EncodedEvents, decodeEvent, frame, pb
from duct.service import DuctService
from duct.sources.riemann import RiemannTCP, RiemannTCPProtocol, RiemannUDP
from duct.testing import FakeDuct, RecordingOutput, configure, pause
from duct.testing import waitFor as waitUntil

ANY_PORT = "tcp:0:interface=127.0.0.1"


# -- helpers -------------------------------------------------------------------------


def riemannEvent(**fields: Any) -> pb.Event:
    attributes = fields.pop("attributes", {})
    tags = fields.pop("tags", [])
    event = pb.Event(**fields)
    event.tags.extend(tags)
    for key, value in attributes.items():
        event.attributes.add(key=key, value=value)
    return event


def msgOf(*events: pb.Event) -> bytes:
    msg = pb.Msg()
    msg.events.extend(events)
    return msg.SerializeToString()


def numbered(first: int, count: int) -> bytes:
    """A Msg of ``count`` events, services ``n.<first>`` onwards."""
    return msgOf(
        *(riemannEvent(host="h", service=f"n.{i}", time=1) for i in range(first, first + count))
    )


def msgOfSize(size: int, service: str) -> bytes:
    """A Msg of one event, padded to exactly ``size`` bytes."""
    event = riemannEvent(service=service, description="")
    event.description = "d" * (size - len(msgOf(event)))
    while len(msgOf(event)) > size:  # the description's length prefix grew
        event.description = event.description[:-1]
    payload = msgOf(event)
    assert len(payload) == size
    return payload


def replies(data: bytes) -> list[pb.Msg]:
    """Parse the framed replies a transport received."""
    found = []
    while data:
        length = int.from_bytes(data[:4], "big")
        found.append(pb.Msg.FromString(data[4 : 4 + length]))
        data = data[4 + length :]
    return found


class Client(Int32StringReceiver):
    """A Riemann client that keeps every reply."""

    MAX_LENGTH = 1 << 24

    def __init__(self) -> None:
        self.replies: list[pb.Msg] = []
        self.lost: Deferred[None] = Deferred()

    def stringReceived(self, string: bytes) -> None:
        self.replies.append(pb.Msg.FromString(string))

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)

    def sendMsg(self, payload: bytes) -> None:
        self.transport.write(frame(payload))


class Relay:
    """A DuctService with one Riemann listener and one RecordingOutput."""

    def __init__(self, reactor: Any, source: dict[str, Any], output: dict[str, Any]) -> None:
        self.reactor = reactor
        config = {
            "outputs": [
                {
                    "output": "duct.testing.RecordingOutput",
                    "name": "recorded",
                    "flush_interval": 0,
                    "retry_initial": 0.01,
                    "retry_max": 0.02,
                    **output,
                }
            ],
            "sources": [{"service": "riemann", **source}],
        }
        self.service = DuctService(config, reactor=reactor)
        self.source: Any = self.service.sources[0]
        output_ = self.service.outputs["recorded"]
        assert isinstance(output_, RecordingOutput)
        self.output = output_
        self.clients: list[Client] = []

    @property
    def portNumber(self) -> int:
        return int(self.source.port.getHost().port)

    async def connect(self) -> Client:
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.portNumber)
        client = await connectProtocol(endpoint, Client())
        self.clients.append(client)
        return client

    async def close(self) -> None:
        await self.source.stopTimer()
        for client in self.clients:
            client.transport.loseConnection()
            await client.lost
        self.output.stop()


def tcpRelay(reactor: Any, output: dict[str, Any] | None = None, **source: Any) -> Relay:
    relay = Relay(
        reactor,
        {"source": "duct.sources.riemann.RiemannTCP", "listen": ANY_PORT, **source},
        output or {},
    )
    relay.source.startTimer()
    return relay


def memoryListener(
    queueBack: Any, **config: Any
) -> tuple[RiemannTCP, RiemannTCPProtocol, StringTransport]:
    """A RiemannTCP with one connection on a StringTransport, and no socket."""
    source = RiemannTCP(
        configure(RiemannTCP, {"service": "riemann", **config}), queueBack, FakeDuct()
    )
    protocol = source.factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return source, protocol, transport


EVERY_FIELD = riemannEvent(
    host="web1.example.com",
    service="disk.sda.used",
    state="warning",
    description="82% used",
    metric_sint64=42,
    ttl=30.5,
    tags=["prod", "disk"],
    attributes={"team": "storage", "rack": "b4"},
    time=1700000000,
    time_micros=1700000000123456,
)


# -- TCP, on real sockets -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_events_arrive_intact_and_are_acked(reactor: Any) -> None:
    relay = tcpRelay(reactor)
    try:
        client = await relay.connect()
        client.sendMsg(
            msgOf(
                EVERY_FIELD,
                riemannEvent(host="h2", service="load", metric_d=0.1, time_micros=1_500_000),
                riemannEvent(host="h3", service="f32", metric_f=1.5, time=1700000001),
                riemannEvent(service="bare"),
            )
        )
        await waitUntil(reactor, lambda: client.replies, "the ack")
        await waitUntil(reactor, lambda: len(relay.output.written) == 4, "the events")
    finally:
        await relay.close()

    assert [(r.ok, r.HasField("error")) for r in client.replies] == [(True, False)]
    first, second, third, bare = relay.output.written
    assert first == Event(
        "warning",
        "disk.sda.used",
        "82% used",
        42,
        30.5,
        tags=["prod", "disk"],
        hostname="web1.example.com",
        evtime=1700000000.123456,
        attributes={"team": "storage", "rack": "b4"},
    )
    assert isinstance(first.metric, int)
    assert (second.hostname, second.metric, second.time) == ("h2", 0.1, 1.5)
    assert (third.hostname, third.metric, third.time) == ("h3", 1.5, 1700000001.0)
    assert (bare.service, bare.state, bare.description, bare.metric, bare.ttl) == (
        "bare",
        None,
        None,
        None,
        None,
    )
    assert (relay.source.received, relay.source.frames, relay.source.emitted) == (4, 1, 4)
    assert relay.source.lastEventTime is not None


@pytest_twisted.ensureDeferred
async def test_malformed_msg_is_answered_and_the_connection_still_works(reactor: Any) -> None:
    relay = tcpRelay(reactor)
    try:
        bad = await relay.connect()
        other = await relay.connect()
        bad.sendMsg(b"\xff\xff\xff garbage")
        await waitUntil(reactor, lambda: bad.replies, "the error reply")
        bad.sendMsg(numbered(0, 2))
        other.sendMsg(numbered(2, 1))
        await waitUntil(reactor, lambda: len(bad.replies) == 2 and other.replies, "the acks")
        await waitUntil(reactor, lambda: len(relay.output.written) == 3, "the events")
    finally:
        await relay.close()

    error_, ok = bad.replies
    assert not error_.ok and error_.error.startswith("malformed message: ")
    assert ok.ok and not ok.HasField("error")
    assert [r.ok for r in other.replies] == [True]
    assert relay.source.malformed == 1
    assert sorted(e.service for e in relay.output.written) == ["n.0", "n.1", "n.2"]


@pytest_twisted.ensureDeferred
async def test_missing_required_field_is_malformed(reactor: Any) -> None:
    # An attribute without its (required) key parses, but cannot be re-encoded.
    event = pb.Event(service="x")
    event.attributes.add(value="no key")
    payload = b"\x32" + bytes([len(event.SerializePartialToString())])
    payload += event.SerializePartialToString()
    relay = tcpRelay(reactor)
    try:
        client = await relay.connect()
        client.sendMsg(payload)
        await waitUntil(reactor, lambda: client.replies, "the error reply")
    finally:
        await relay.close()
    assert not client.replies[0].ok and "key" in client.replies[0].error
    assert relay.source.malformed == 1 and relay.output.written == []


@pytest_twisted.ensureDeferred
async def test_oversized_frame_closes_only_its_connection(reactor: Any) -> None:
    relay = tcpRelay(reactor, max_frame=1024)
    try:
        big = await relay.connect()
        other = await relay.connect()
        big.transport.write((2000).to_bytes(4, "big") + b"x" * 100)
        await big.lost
        other.sendMsg(numbered(0, 1))
        await waitUntil(reactor, lambda: other.replies, "the ack on the other connection")
        # A frame of exactly max_frame bytes is allowed.
        other.sendMsg(msgOfSize(1024, "largest"))
        await waitUntil(reactor, lambda: len(other.replies) == 2, "the second ack")
    finally:
        await relay.close()
    assert len(big.replies) == 1 and not big.replies[0].ok
    assert "above max_frame (1024 bytes)" in big.replies[0].error
    assert [r.ok for r in other.replies] == [True, True]
    assert relay.source.oversized == 1 and not relay.source.malformed
    assert len(relay.output.written) == 2


@pytest_twisted.ensureDeferred
async def test_query_is_refused_clearly(reactor: Any) -> None:
    relay = tcpRelay(reactor)
    try:
        client = await relay.connect()
        client.sendMsg(pb.Msg(query=pb.Query(string='service = "cpu"')).SerializeToString())
        client.sendMsg(numbered(0, 1))
        await waitUntil(reactor, lambda: len(client.replies) == 2, "the replies")
    finally:
        await relay.close()
    refused, ok = client.replies
    assert not refused.ok and refused.error.startswith("queries are not supported")
    assert ok.ok
    assert relay.source.queries == 1


@pytest_twisted.ensureDeferred
async def test_frames_in_one_write_are_answered_in_order(reactor: Any) -> None:
    relay = tcpRelay(reactor)
    try:
        client = await relay.connect()
        client.transport.write(
            frame(numbered(0, 2)) + frame(b"\xff\xff") + frame(numbered(2, 2)) + frame(b"")
        )
        await waitUntil(reactor, lambda: len(client.replies) == 4, "four replies")
        await waitUntil(reactor, lambda: len(relay.output.written) == 4, "the events")
    finally:
        await relay.close()
    assert [r.ok for r in client.replies] == [True, False, True, True]
    assert [e.service for e in relay.output.written] == ["n.0", "n.1", "n.2", "n.3"]


@pytest_twisted.ensureDeferred
async def test_full_output_delays_the_ack_and_drops_nothing(reactor: Any) -> None:
    relay = tcpRelay(reactor, output={"maxsize": 5, "overflow": "block", "batch_size": 100})
    relay.output.failing = True
    try:
        client = await relay.connect()
        # Fills the buffer to its bound: the next Msg waits for room for all its events.
        client.sendMsg(numbered(0, 5))
        await waitUntil(reactor, lambda: len(client.replies) == 1, "the first ack")
        await waitUntil(reactor, lambda: relay.output.failures, "a failed write")

        client.sendMsg(numbered(5, 2))
        await waitUntil(reactor, lambda: relay.source.held == 1, "the held frame")
        (connection,) = relay.source.connections
        assert connection.transport not in reactor.getReaders()  # paused

        client.sendMsg(numbered(7, 1))
        await pause(reactor)
        assert len(client.replies) == 1  # no ack while the output is full
        assert relay.source.received == 7  # the third frame was not even read
        assert relay.source.waiting == 1 and relay.output.written == []

        relay.output.failing = False
        await waitUntil(reactor, lambda: len(client.replies) == 3, "the held acks")
        await waitUntil(reactor, lambda: len(relay.output.written) == 8, "every event")
        assert connection.transport in reactor.getReaders()  # reading again
    finally:
        await relay.close()

    assert all(r.ok for r in client.replies)
    assert [e.service for e in relay.output.written] == [f"n.{i}" for i in range(8)]
    assert not relay.output.buffer.drops
    assert relay.source.waiting == 0 and relay.source.received == 8


@pytest_twisted.ensureDeferred
async def test_a_full_output_holds_back_every_connection_feeding_it(reactor: Any) -> None:
    relay = tcpRelay(reactor, output={"maxsize": 2, "overflow": "block", "batch_size": 100})
    relay.output.failing = True
    try:
        clients = [await relay.connect() for _ in range(3)]
        clients[0].sendMsg(numbered(0, 2))
        await waitUntil(reactor, lambda: clients[0].replies, "the first ack")
        clients[1].sendMsg(numbered(2, 2))
        clients[2].sendMsg(numbered(4, 2))
        await waitUntil(reactor, lambda: relay.source.held == 2, "two held frames")
        await pause(reactor, 0.1)
        assert [len(c.replies) for c in clients] == [1, 0, 0]
        relay.output.failing = False
        await waitUntil(reactor, lambda: all(c.replies for c in clients), "every ack")
        await waitUntil(reactor, lambda: len(relay.output.written) == 6, "every event")
    finally:
        await relay.close()
    assert sorted(e.service for e in relay.output.written) == [f"n.{i}" for i in range(6)]
    assert not relay.output.buffer.drops


@pytest_twisted.ensureDeferred
async def test_stop_refuses_new_connections_and_closes_idle_ones(reactor: Any) -> None:
    relay = tcpRelay(reactor)
    port = relay.portNumber
    client = await relay.connect()
    client.sendMsg(numbered(0, 1))
    await waitUntil(reactor, lambda: client.replies, "the ack")

    await relay.source.stopTimer()
    await client.lost
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    with pytest.raises(error.ConnectionRefusedError):
        await connectProtocol(endpoint, Client())
    relay.clients = []
    await relay.close()
    assert relay.source.connections == set()


@pytest_twisted.ensureDeferred
async def test_listening_on_a_busy_port_raises_naming_the_address(reactor: Any) -> None:
    first = tcpRelay(reactor)
    busy = f"tcp:{first.portNumber}:interface=127.0.0.1"
    try:
        with pytest.raises(CannotListen) as raised:
            tcpRelay(reactor, listen=busy)
    finally:
        await first.close()
    assert raised.value.key == "listen" and raised.value.address == busy
    assert str(raised.value).startswith(f"cannot listen on {busy}: ")
    assert "in use" in str(raised.value)


def selfSigned(tmp_path: Path) -> tuple[str, str, bytes]:
    """A key and a self-signed certificate for 127.0.0.1: their paths, and the PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certPem = cert.public_bytes(serialization.Encoding.PEM)
    keyPath, certPath = tmp_path / "key.pem", tmp_path / "cert.pem"
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certPath.write_bytes(certPem)
    return str(keyPath), str(certPath), certPem


@pytest_twisted.ensureDeferred
async def test_tls_endpoint_with_a_held_ack(reactor: Any, tmp_path: Path) -> None:
    keyPath, certPath, certPem = selfSigned(tmp_path)
    relay = tcpRelay(
        reactor,
        output={"maxsize": 2, "overflow": "block", "batch_size": 100},
        listen=f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}",
    )
    relay.output.failing = True
    try:
        options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(certPem))
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", relay.portNumber, options)
        client = await connectProtocol(endpoint, Client())
        relay.clients.append(client)
        client.sendMsg(msgOf(EVERY_FIELD, riemannEvent(service="second")))
        await waitUntil(reactor, lambda: client.replies, "the first ack")
        client.sendMsg(numbered(0, 1))
        await waitUntil(reactor, lambda: relay.source.held == 1, "the held frame")
        client.sendMsg(numbered(1, 1))
        await pause(reactor, 0.1)
        assert len(client.replies) == 1 and relay.source.received == 3
        relay.output.failing = False
        await waitUntil(reactor, lambda: len(client.replies) == 3, "every ack")
        await waitUntil(reactor, lambda: len(relay.output.written) == 4, "every event")
    finally:
        await relay.close()
    assert all(r.ok for r in client.replies)
    services = [e.service for e in relay.output.written]
    assert services == ["disk.sda.used", "second", "n.0", "n.1"]
    assert relay.output.written[0].time == 1700000000.123456


# -- TCP, in memory: the order of frames and replies -------------------------------------


def test_frames_read_while_an_ack_is_held_wait_their_turn() -> None:
    calls: list[list[bytes]] = []
    results: list[Deferred[None] | None] = [Deferred(), Deferred(), None]

    def queueBack(events: EncodedEvents) -> Deferred[None] | None:
        calls.append(list(events))
        return results[len(calls) - 1]

    source, protocol, transport = memoryListener(queueBack)
    protocol.dataReceived(frame(numbered(0, 1)) + frame(numbered(1, 1)) + frame(numbered(2, 1)))

    assert len(calls) == 1 and transport.value() == b""
    assert transport.producerState == "paused"
    first, second, _ = results
    assert first is not None and second is not None
    first.callback(None)
    assert len(calls) == 2 and [r.ok for r in replies(transport.value())] == [True]
    assert transport.producerState == "paused"
    second.callback(None)
    assert len(calls) == 3 and [r.ok for r in replies(transport.value())] == [True] * 3
    assert transport.producerState == "producing"
    assert [decodeEvent(c[0]).service for c in calls] == ["n.0", "n.1", "n.2"]
    assert (source.held, source.waiting) == (2, 0)


def test_frames_arriving_in_pieces_are_reassembled() -> None:
    received: list[bytes] = []
    source, protocol, transport = memoryListener(received.extend)
    data = frame(numbered(0, 1)) + frame(numbered(1, 1))
    for i in range(len(data)):
        protocol.dataReceived(data[i : i + 1])
    assert [decodeEvent(e).service for e in received] == ["n.0", "n.1"]
    assert len(replies(transport.value())) == 2


def test_frames_split_at_any_point_arrive_whole_and_in_order() -> None:
    data = frame(numbered(0, 2)) + frame(numbered(2, 1)) + frame(msgOf())
    for split in range(len(data) + 1):
        received: list[bytes] = []
        source, protocol, transport = memoryListener(received.extend)
        protocol.dataReceived(data[:split])
        protocol.dataReceived(data[split:])
        assert [decodeEvent(e).service for e in received] == ["n.0", "n.1", "n.2"], split
        assert [r.ok for r in replies(transport.value())] == [True, True, True]


def test_a_large_frame_over_many_reads_is_gathered_once() -> None:
    received: list[bytes] = []
    source, protocol, transport = memoryListener(received.extend)
    big = riemannEvent(service="big", description="x" * (3 * 1024 * 1024))
    data = frame(msgOf(big)) + frame(numbered(0, 1))
    for start in range(0, len(data), 65536):
        protocol.dataReceived(data[start : start + 65536])
    source.clock.advance(0)  # a large Msg is checked and handed on in reactor turns
    assert [decodeEvent(e).service for e in received] == ["big", "n.0"]
    assert decodeEvent(received[0]).description == big.description
    assert [r.ok for r in replies(transport.value())] == [True, True]


def test_a_lost_connection_still_delivers_what_it_sent() -> None:
    calls: list[list[bytes]] = []
    held: Deferred[None] = Deferred()

    def queueBack(events: EncodedEvents) -> Deferred[None] | None:
        calls.append(list(events))
        return held if len(calls) == 1 else None

    source, protocol, transport = memoryListener(queueBack)
    protocol.dataReceived(frame(numbered(0, 1)) + frame(numbered(1, 1)))
    protocol.connectionLost(error.ConnectionLost())
    assert source.connections == set()
    transport.clear()
    held.callback(None)
    assert len(calls) == 2 and transport.value() == b""


def test_oversized_frame_after_a_held_one_is_answered_last() -> None:
    held: Deferred[None] = Deferred()
    calls: list[list[bytes]] = []

    def queueBack(events: EncodedEvents) -> Deferred[None] | None:
        calls.append(list(events))
        return held if len(calls) == 1 else None

    source, protocol, transport = memoryListener(queueBack, max_frame=100)
    protocol.dataReceived(frame(numbered(0, 1)) + frame(numbered(1, 1)) + b"\x00\x01\x00\x00")
    assert source.oversized == 1 and not transport.disconnecting
    protocol.dataReceived(frame(numbered(2, 1)))  # ignored: the connection is closing
    held.callback(None)
    ok1, ok2, refused = replies(transport.value())
    assert ok1.ok and ok2.ok and not refused.ok
    assert transport.disconnecting and len(calls) == 2


def test_stop_closes_a_held_connection_once_answered() -> None:
    held: Deferred[None] = Deferred()
    source, protocol, transport = memoryListener(lambda events: held)
    protocol.dataReceived(frame(numbered(0, 1)))
    source.stopTimer()
    assert not transport.disconnecting
    held.callback(None)
    assert [r.ok for r in replies(transport.value())] == [True]
    assert transport.disconnecting


def test_events_refused_by_the_pipeline_get_an_error(observe_errors: Any) -> None:
    def queueBack(events: EncodedEvents) -> None:
        raise RuntimeError("boom")

    source, protocol, transport = memoryListener(queueBack)
    protocol.dataReceived(frame(numbered(0, 1)))
    (reply,) = replies(transport.value())
    assert not reply.ok and "internal error" in reply.error
    assert source.errors == 1
    assert len(observe_errors.take()) == 1


def test_a_failed_delivery_gets_an_error_and_the_connection_goes_on(observe_errors: Any) -> None:
    held: Deferred[None] = Deferred()
    results: list[Deferred[None] | None] = [held, None]
    source, protocol, transport = memoryListener(lambda events: results.pop(0))
    protocol.dataReceived(frame(numbered(0, 1)) + frame(numbered(1, 1)))
    held.errback(RuntimeError("lost"))
    assert [r.ok for r in replies(transport.value())] == [False, True]
    assert transport.producerState == "producing"
    assert source.errors == 1 and len(observe_errors.take()) == 1


def test_debug_logs_each_event(logged: list[dict[str, Any]]) -> None:
    source, protocol, transport = memoryListener(lambda events: None, debug=True)
    protocol.dataReceived(frame(numbered(0, 2)))
    services = [e["event"].service for e in logged if "event" in e]
    assert services == ["n.0", "n.1"]


# -- UDP --------------------------------------------------------------------------------


class UDPRelay(Relay):
    def send(self, datagram: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(datagram, ("127.0.0.1", self.portNumber))


def udpRelay(reactor: Any) -> UDPRelay:
    relay = UDPRelay(reactor, {"source": "duct.sources.riemann.RiemannUDP", "port": 0}, {})
    relay.source.startTimer()
    return relay


@pytest_twisted.ensureDeferred
async def test_udp_datagrams_arrive_as_events(reactor: Any) -> None:
    relay = udpRelay(reactor)
    try:
        relay.send(msgOf(EVERY_FIELD))
        relay.send(b"\xff\xff not a Msg")
        relay.send(pb.Msg(query=pb.Query(string="true")).SerializeToString())
        relay.send(msgOfSize(MAX_DATAGRAM, "largest"))
        relay.send(msgOfSize(MAX_DATAGRAM + 1, "too large"))
        relay.send(numbered(0, 3))
        await waitUntil(reactor, lambda: len(relay.output.written) == 5, "the events")
        await waitUntil(reactor, lambda: relay.source.oversized == 1, "the oversized datagram")
    finally:
        await relay.close()
    services = [e.service for e in relay.output.written]
    assert services == ["disk.sda.used", "largest", "n.0", "n.1", "n.2"]
    assert relay.output.written[0].time == 1700000000.123456
    assert len(relay.output.written[1].description or "") > MAX_DATAGRAM - 20
    source = relay.source
    assert (source.malformed, source.queries, source.oversized) == (1, 1, 1)
    assert (source.received, source.frames) == (5, 3)


@pytest_twisted.ensureDeferred
async def test_udp_events_wait_in_the_pipeline_while_an_output_is_full(reactor: Any) -> None:
    relay = UDPRelay(
        reactor,
        {"source": "duct.sources.riemann.RiemannUDP", "port": 0},
        {"maxsize": 2, "overflow": "block", "batch_size": 100},
    )
    relay.output.failing = True
    relay.source.startTimer()
    try:
        relay.send(numbered(0, 2))
        await waitUntil(reactor, lambda: relay.output.failures, "a failed write")
        relay.send(numbered(2, 1))
        relay.send(numbered(3, 1))
        await waitUntil(reactor, lambda: relay.source.waiting == 2, "two waiting datagrams")
        relay.output.failing = False
        await waitUntil(reactor, lambda: len(relay.output.written) == 4, "every event")
    finally:
        await relay.close()
    assert [e.service for e in relay.output.written] == ["n.0", "n.1", "n.2", "n.3"]
    assert relay.source.waiting == 0 and not relay.output.buffer.drops


@pytest_twisted.ensureDeferred
async def test_udp_sheds_datagrams_beyond_max_waiting(reactor: Any) -> None:
    relay = UDPRelay(
        reactor,
        {"source": "duct.sources.riemann.RiemannUDP", "port": 0, "max_waiting": 1},
        {"maxsize": 2, "overflow": "block", "batch_size": 100},
    )
    relay.output.failing = True
    relay.source.startTimer()
    try:
        relay.send(numbered(0, 2))
        await waitUntil(reactor, lambda: relay.output.failures, "a failed write")
        relay.send(numbered(2, 1))
        await waitUntil(reactor, lambda: relay.source.waiting == 1, "one waiting datagram")
        relay.send(numbered(3, 1))
        await waitUntil(reactor, lambda: relay.source.shed == 1, "a shed datagram")
        relay.output.failing = False
        await waitUntil(reactor, lambda: len(relay.output.written) == 3, "the kept events")
    finally:
        await relay.close()
    assert [e.service for e in relay.output.written] == ["n.0", "n.1", "n.2"]
    assert relay.source.waiting == 0


def test_udp_stop_before_start_is_harmless() -> None:
    source = RiemannUDP(configure(RiemannUDP, {"service": "u"}), lambda events: None, FakeDuct())
    assert source.stopTimer().called
    assert (source.interface, source.portNumber) == ("127.0.0.1", 5555)


@pytest_twisted.ensureDeferred
async def test_acks_written_at_once_arrive_whole_and_in_order(reactor: Any) -> None:
    relay = tcpRelay(reactor)
    try:
        client = await relay.connect()
        for i in range(50):
            client.sendMsg(numbered(i, 1))
        await waitUntil(reactor, lambda: len(client.replies) == 50, "fifty acks")
    finally:
        await relay.close()
    assert all(reply.ok for reply in client.replies)
    assert [e.service for e in relay.output.written] == [f"n.{i}" for i in range(50)]
