"""`duct.writenow`: the one place that reads Twisted's private TCP attributes.

These tests fail when Twisted changes what `writeNow` relies on:
``tcp.Server`` having ``socket``, ``dataBuffer`` and ``_tempDataBuffer``,
with the meaning they have today.  Then update `writeNow` (or drop it) and
`TESTED_TWISTED`.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

import twisted
from duct import writenow
from duct.writenow import TESTED_TWISTED, _supported, writeNow


class Accepted(Protocol):
    """The server side: hands its transport to the test."""

    def __init__(self, connected: Deferred[Any]) -> None:
        self.ready = connected

    def connectionMade(self) -> None:
        self.ready.callback(self.transport)


class Reading(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.got: Deferred[bytes] | None = None
        self.want = 0

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.got is not None and len(self.data) >= self.want:
            got, self.got = self.got, None
            got.callback(self.data)

    def waitFor(self, count: int) -> Deferred[bytes]:
        self.want = count
        self.got = Deferred()
        self.dataReceived(b"")
        return self.got


async def connection(reactor: Any) -> tuple[Any, Reading, Any]:
    connected: Deferred[Any] = Deferred()
    factory = Factory.forProtocol(lambda: Accepted(connected))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = await connectProtocol(endpoint, Reading())
    server = await connected
    return server, client, port


@pytest_twisted.ensureDeferred
async def test_the_private_attributes_are_there_with_their_meaning(reactor: Any) -> None:
    server, client, port = await connection(reactor)
    try:
        assert type(server) is tcp.Server
        assert isinstance(server.socket, socket.socket)
        # Idle: nothing queued in either buffer.
        assert server.dataBuffer == b"" and server._tempDataBuffer == []
        server.write(b"queued")
        # A write while the reactor has not flushed is queued in them.
        assert server.dataBuffer or server._tempDataBuffer
        await client.waitFor(6)
    finally:
        server.loseConnection()
        client.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_idle_socket_is_written_at_once_and_a_busy_one_in_order(reactor: Any) -> None:
    assert writenow.ENABLED, f"Twisted {twisted.__version__}: check writeNow, then TESTED_TWISTED"
    server, client, port = await connection(reactor)
    try:
        writeNow(server, b"one")
        # Sent by the socket itself: the transport queued nothing.
        assert server.dataBuffer == b"" and server._tempDataBuffer == []
        assert await client.waitFor(3) == b"one"
        server.write(b"two")  # queued in the transport...
        writeNow(server, b"three")  # ...so this one queues behind it
        assert await client.waitFor(11) == b"onetwothree"
    finally:
        server.loseConnection()
        client.transport.loseConnection()
        await port.stopListening()


def test_other_transports_and_other_twisted_versions_use_write() -> None:
    class Recording:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    transport = Recording()
    writeNow(transport, b"ack")
    assert transport.written == [b"ack"]
    assert _supported(f"{TESTED_TWISTED[0]}.1.0") and _supported(f"{TESTED_TWISTED[-1]}.10.0")
    assert not _supported(f"{TESTED_TWISTED[-1] + 1}.1.0") and not _supported("trunk")
