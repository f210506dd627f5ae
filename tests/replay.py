"""Recorded TCP servers for unit tests: each request written gets its recorded reply at once.

`ReplayEndpoint` stands in for a source's endpoint on a MemoryReactorClock:
``answers`` maps what the client writes to what the real server sent back
(recorded under ``tests/data/``).  `SilentEndpoint` connects and never
answers; `RefusingEndpoint` refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> bytes:
    """The bytes of ``tests/data/{name}``."""
    return (DATA / name).read_bytes()


class _ReplayTransport(StringTransport):
    def __init__(self, protocol: Protocol, answers: dict[bytes, bytes] | None) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 1))
        self.protocol = protocol
        self.answers = answers
        self.closed = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.answers is None:
            return
        request = self.value()
        if request in self.answers:
            self.clear()
            self.protocol.dataReceived(self.answers[request])

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.closed:
            self.closed = True
            from twisted.internet.error import ConnectionDone
            from twisted.python.failure import Failure

            self.protocol.connectionLost(Failure(ConnectionDone()))

    abortConnection = loseConnection


class ReplayEndpoint:
    """Connects at once; answers each complete request found in ``answers``."""

    def __init__(self, answers: dict[bytes, bytes] | None) -> None:
        self.answers = answers
        self.transports: list[_ReplayTransport] = []

    def connect(self, factory: Factory) -> Deferred[Any]:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert protocol is not None
        transport = _ReplayTransport(protocol, self.answers)
        self.transports.append(transport)
        protocol.makeConnection(transport)
        return succeed(protocol)


class SilentEndpoint(ReplayEndpoint):
    """Connects, and never answers."""

    def __init__(self) -> None:
        super().__init__(None)


class RefusingEndpoint:
    def connect(self, factory: Factory) -> Deferred[Any]:
        from twisted.internet.error import ConnectionRefusedError

        return fail(ConnectionRefusedError("127.0.0.1:1"))


class HangingEndpoint:
    """Never connects (a filtered port)."""

    def connect(self, factory: Factory) -> Deferred[Any]:
        return Deferred()
