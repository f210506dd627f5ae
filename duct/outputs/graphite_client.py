"""One TCP connection to carbon, and what "written" means on it.

Carbon's line and pickle receivers never answer.  `CarbonProtocol.send`
writes a batch's bytes and returns a Deferred that fires once

1. the transport has handed every byte of it to the kernel (its write
   buffer is empty: while batches wait for that, the protocol is the
   transport's pull producer, which the transport asks for more once its
   buffer runs dry), and
2. the connection then stayed open for ``confirmAfter`` seconds, long
   enough for carbon closing or resetting it (a restart, a crash of the
   process) to be seen.

The Deferred fails if the connection is lost before, or when the bytes
have not left within ``writeTimeout`` seconds (carbon stopped reading:
the connection is then aborted).  This is no acknowledgement: bytes in
the kernel's buffers when the carbon host dies, or in carbon's own cache
when it is killed, are lost without a word from the socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["CarbonFactory", "CarbonProtocol"]


@implementer(IPullProducer)
class CarbonProtocol(Protocol):
    """A connection to carbon that writes batches and says when each counts as written."""

    log = Logger()

    def __init__(
        self, label: str, clock: Any, confirmAfter: float, writeTimeout: float, name: str
    ) -> None:
        self.label = label
        self.clock = clock
        self.confirmAfter = confirmAfter
        self.writeTimeout = writeTimeout
        self.name = name
        self.connected = False
        self.producing = False
        """Whether this protocol is registered as its transport's producer."""
        self.lostReason: Failure | None = None
        self.bytesWritten = 0
        self._unwritten: deque[tuple[Deferred[None], float]] = deque()
        self._confirming: deque[tuple[Deferred[None], float]] = deque()
        self._lost: list[Deferred[CarbonProtocol]] = []
        self._confirmCall: Any = None
        self._writeCall: Any = None

    # -- the connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True

    def notifyLost(self) -> Deferred[CarbonProtocol]:
        """Fires with this protocol once the connection is lost (`lostReason` says why)."""
        d: Deferred[CarbonProtocol] = Deferred()
        self._lost.append(d)
        return d

    def dataReceived(self, data: bytes) -> None:
        """Carbon sends nothing back; whatever comes is ignored."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.lostReason = reason
        for name in ("_confirmCall", "_writeCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        waiting = [*self._unwritten, *self._confirming]
        self._unwritten.clear()
        self._confirming.clear()
        lost, self._lost = self._lost, []
        for notify in lost:
            notify.callback(self)
        for d, _ in waiting:
            d.errback(reason)

    # -- batches ---------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Batches sent and not yet taken as written."""
        return len(self._unwritten) + len(self._confirming)

    def send(self, chunks: Sequence[bytes]) -> Deferred[None]:
        """Write ``chunks``; fires once they count as written (see the module)."""
        d: Deferred[None] = Deferred()
        transport: Any = self.transport
        if not self.producing:
            # Registered only while bytes wait: a transport with a producer
            # would not close.  Registering asks for more at once; nothing
            # is unwritten yet, so that is no drain.
            self.producing = True
            transport.registerProducer(self, False)
        self._unwritten.append((d, self.clock.seconds()))
        self.bytesWritten += sum(map(len, chunks))
        transport.writeSequence(chunks)
        if self._writeCall is None:
            self._writeCall = self.clock.callLater(self.writeTimeout, self._writeTimedOut)
        return d

    def resumeProducing(self) -> None:
        """The transport's buffer ran dry: all that was sent is in the kernel's hands."""
        if not self._unwritten:
            return
        if self.producing:
            self.producing = False
            transport: Any = self.transport
            transport.unregisterProducer()
        due = self.clock.seconds() + self.confirmAfter
        while self._unwritten:
            d, _ = self._unwritten.popleft()
            self._confirming.append((d, due))
        if self._writeCall is not None and self._writeCall.active():
            self._writeCall.cancel()
        self._writeCall = None
        if self._confirmCall is None:
            self._confirmCall = self.clock.callLater(self.confirmAfter, self._confirm)

    def stopProducing(self) -> None:
        """The transport is going away; `connectionLost` follows."""

    def _confirm(self) -> None:
        self._confirmCall = None
        now = self.clock.seconds()
        while self._confirming and self._confirming[0][1] <= now + 1e-9:
            d, _ = self._confirming.popleft()
            d.callback(None)
            if not self.connected:  # a callback dropped the connection
                return
        if self._confirming:
            delay = max(0.0, self._confirming[0][1] - now)
            self._confirmCall = self.clock.callLater(delay, self._confirm)

    def _writeTimedOut(self) -> None:
        self._writeCall = None
        if not self._unwritten:
            return
        oldest = self._unwritten[0][1]
        self.log.warn(
            "output {output}: {server} took none of what was sent {seconds:.0f}s ago; reconnecting",
            output=self.name,
            server=self.label,
            seconds=self.clock.seconds() - oldest,
        )
        transport: Any = self.transport
        transport.abortConnection()


class CarbonFactory(Factory):
    """Builds a `CarbonProtocol` for each connection."""

    noisy = False

    def __init__(
        self, label: str, clock: Any, confirmAfter: float, writeTimeout: float, name: str
    ) -> None:
        self.label = label
        self.clock = clock
        self.confirmAfter = confirmAfter
        self.writeTimeout = writeTimeout
        self.name = name

    def buildProtocol(self, addr: Any) -> CarbonProtocol:
        protocol = CarbonProtocol(
            self.label, self.clock, self.confirmAfter, self.writeTimeout, self.name
        )
        protocol.factory = self
        return protocol
