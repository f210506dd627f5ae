"""Handing accepted connections to workers, on the real reactor, both sides in this process.

The parent's `Distributor` accepts on a real listening socket and sends
each connection over a real socket pair to a worker's `Receiver`, which
adopts it; clients are real TCP connections.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from agents import waitFor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from duct.workers.handoff import Distributor
from duct.workers.receive import Receiver


class Echo(Protocol):
    gone = False

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.gone = True


class Worker:
    """A worker's side: a Receiver on its end of the pair, echoing on listener 0."""

    def __init__(self, reactor: Any, sock: socket.socket) -> None:
        self.receiver = Receiver(reactor)
        self.connections: list[Echo] = []
        reactor.adoptStreamConnection(
            sock.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: self.receiver)
        )
        sock.close()

    def serve(self) -> None:
        self.receiver.register(0, Factory.forProtocol(self.connection))

    def connection(self) -> Echo:
        protocol = Echo()
        self.connections.append(protocol)
        return protocol

    @property
    def open(self) -> int:
        return sum(1 for c in self.connections if not c.gone)


class Client(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock
    sock.close()


def distributor(
    reactor: Any, listening: socket.socket, count: int
) -> tuple[Distributor, list[Worker]]:
    parent = Distributor(reactor, {0: listening})
    workers = [Worker(reactor, parent.link(n, {0})) for n in range(1, count + 1)]
    parent.start()
    return parent, workers


async def connect(reactor: Any, listening: socket.socket) -> Client:
    port = listening.getsockname()[1]
    client = Client()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


@pytest_twisted.ensureDeferred
async def test_connections_go_to_the_worker_with_fewest_and_its_closes_come_back(
    reactor: Any, listening: socket.socket
) -> None:
    parent, (one, two) = distributor(reactor, listening, 2)
    try:
        for worker, number in ((one, 1), (two, 2)):
            worker.serve()
            parent.ready(number)
        clients = [await connect(reactor, listening) for _ in range(4)]
        await waitFor(reactor, lambda: one.open + two.open == 4, "four connections adopted")
        assert (one.open, two.open) == (2, 2)
        assert parent.info(1) == {"connections": 2, "connections_handed": 2}

        for client in clients:  # each adopted connection is a working one
            client.transport.write(b"ping")  # type: ignore[union-attr]
        await waitFor(reactor, lambda: all(c.received == b"ping" for c in clients), "echoes")

        # Both of worker one's clients leave: it is told, and the next two go to it.
        mine = [c for c in clients if c.transport.getHost() in _peers(one)]  # type: ignore[union-attr]
        for client in mine:
            client.transport.loseConnection()  # type: ignore[union-attr]
        await waitFor(reactor, lambda: parent.info(1)["connections"] == 0, "the closes reported")
        clients += [await connect(reactor, listening) for _ in range(2)]
        await waitFor(reactor, lambda: one.open == 2, "two new connections on worker one")
        assert two.open == 2 and parent.info(2)["connections_handed"] == 2
    finally:
        for client in clients:
            client.transport.loseConnection()  # type: ignore[union-attr]
        parent.stop()


def _peers(worker: Worker) -> list[Any]:
    return [c.transport.getPeer() for c in worker.connections if not c.gone]  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_until_a_worker_serves_connections_wait_in_the_backlog(
    reactor: Any, listening: socket.socket
) -> None:
    parent, (worker,) = distributor(reactor, listening, 1)
    try:
        client = await connect(reactor, listening)  # the kernel completes it; nobody accepts
        assert not parent.acceptors[0].reading
        worker.serve()
        parent.ready(1)
        client.transport.write(b"early")  # type: ignore[union-attr]
        await waitFor(reactor, lambda: client.received == b"early", "the echo once it serves")
        assert parent.dropped == 0
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        parent.stop()


@pytest_twisted.ensureDeferred
async def test_a_dead_worker_gets_no_connections_and_a_lone_one_waits(
    reactor: Any, listening: socket.socket
) -> None:
    parent, (one, two) = distributor(reactor, listening, 2)
    clients: list[Client] = []
    try:
        two.serve()
        parent.ready(1)
        parent.ready(2)
        one.receiver.transport.loseConnection()  # type: ignore[union-attr]
        await waitFor(reactor, lambda: parent.links[1].lost, "the parent to see worker one gone")
        clients = [await connect(reactor, listening) for _ in range(3)]
        await waitFor(reactor, lambda: two.open == 3, "every connection on worker two")
        parent.unlink(2)  # worker two ends too: nobody is left to take one
        assert not parent.acceptors[0].reading
        clients.append(await connect(reactor, listening))
        assert parent.dropped == 0  # it waits in the backlog instead
    finally:
        for client in clients:
            client.transport.loseConnection()  # type: ignore[union-attr]
        parent.stop()


@pytest_twisted.ensureDeferred
async def test_a_connection_for_a_listener_not_registered_yet_waits_for_it(
    reactor: Any, listening: socket.socket
) -> None:
    parent, (worker,) = distributor(reactor, listening, 1)
    try:
        parent.ready(1)  # serving, but its listener restarts (a reload): no factory for a moment
        client = await connect(reactor, listening)
        await waitFor(reactor, lambda: worker.receiver.waiting.get(0), "the socket held")
        worker.serve()
        client.transport.write(b"later")  # type: ignore[union-attr]
        await waitFor(reactor, lambda: client.received == b"later", "the echo once registered")
    finally:
        client.transport.loseConnection()  # type: ignore[union-attr]
        parent.stop()
