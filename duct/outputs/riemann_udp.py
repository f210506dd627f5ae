"""RiemannUDP: events packed into datagrams, with no acknowledgement."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from duct.buffers.memory import Batch
from duct.objects import Event, Output
from duct.options import Option
from duct.outputs.riemann_common import encodeForQueue, entrySize
from duct.protocol.riemann import MAX_DATAGRAM, EncodedEvents, msgFromEncoded, sizesOf


def packDatagrams(encoded: Sequence[bytes], limit: int) -> Iterator[bytes]:
    """Serialized Msgs of as many events each as fit in ``limit`` bytes, in order.

    Every event must fit in a datagram on its own.
    """
    parts: list[bytes] = []
    size = 0
    for data in encoded:
        need = entrySize(len(data))
        if parts and size + need > limit:
            yield msgFromEncoded(parts)
            parts, size = [], 0
        parts.append(data)
        size += need
    if parts:
        yield msgFromEncoded(parts)


class RiemannUDP(Output):
    """Send events to Riemann over UDP, packed into as few datagrams as fit.

    Each datagram is one Msg of at most `max_datagram` bytes; an event too
    large for a datagram of its own is dropped (counted as `too_large`),
    never cut; so is one that cannot be encoded (counted as `rejected`).
    UDP has no acknowledgement: a batch counts as sent once the
    operating system took its datagrams, so events are lost if the server
    is down or the network drops them.  `server` is an IP address, or a
    name looked up once at start (IPv4; retried on the next write if that
    lookup failed).
    """

    acceptsEncoded = True

    options = (
        Option("server", "string", "localhost", "Riemann host"),
        Option("port", "integer", 5555, "Riemann's UDP port", minimum=1),
        Option("max_datagram", "integer", MAX_DATAGRAM, "largest datagram sent", minimum=64),
        Option("flush_interval", "number", 0.1, "seconds a partial batch may wait", minimum=0),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.reactor: Any = getattr(duct, "reactor", None) or self.clock
        config = self.config
        self.server: str = config["server"]
        self.port: int = config["port"]
        self.maxDatagram: int = config["max_datagram"]
        self.address: tuple[str, int] | None = None
        self.datagrams = 0
        self._listening: Any = None

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> Deferred[None]:
        d = self._lookup()
        d.addErrback(self._lookupFailed)
        return d

    def _lookup(self) -> Deferred[None]:
        if isIPAddress(self.server) or isIPv6Address(self.server):
            found: Deferred[str] = succeed(self.server)
        else:
            found = self.reactor.resolve(self.server)
        return found.addCallback(self._resolved)

    def _resolved(self, ip: str) -> None:
        self.address = (ip, self.port)
        if self._listening is None and not self.stopped:
            interface = "::" if isIPv6Address(ip) else ""
            self._listening = self.reactor.listenUDP(0, DatagramProtocol(), interface=interface)

    def _lookupFailed(self, failure: Failure) -> None:
        self.log.warn(
            "output {output}: cannot look up {server} ({error}); trying again on the next write",
            output=self.name,
            server=self.server,
            error=failure.getErrorMessage(),
        )

    def closeClient(self) -> Any:
        listening, self._listening = self._listening, None
        if listening is None:
            return None
        return listening.stopListening()

    # -- events ---------------------------------------------------------------

    def eventsReceived(self, events: list[Event] | EncodedEvents) -> int:
        """Encode and queue events; return how many the buffer kept."""
        self.received += len(events)
        encoded, _, _, failed, error = encodeForQueue(events)
        if failed:
            self.dropUnencodable(events, failed, error)
        fitting = [data for data in encoded if entrySize(len(data)) <= self.maxDatagram]
        if len(fitting) < len(encoded):
            self.buffer.recordDrop("too_large", len(encoded) - len(fitting))
        if not fitting:
            return 0
        kept = self.buffer.put(fitting, sizesOf(fitting))
        self.resumeWriting()
        return kept

    def batchEvents(self, batch: Batch) -> EncodedEvents:
        return EncodedEvents(list(batch.events))

    def writeBatch(self, events: list[bytes]) -> Deferred[None] | None:
        if self.address is None or self._listening is None:
            return self._lookup().addCallback(lambda _: self._send(events))
        self._send(events)
        return None

    def _send(self, events: list[bytes]) -> None:
        if self._listening is None or self.address is None:
            raise ConnectionError("the output is stopped")
        for datagram in packDatagrams(events, self.maxDatagram):
            self._listening.write(datagram, self.address)
            self.datagrams += 1
