"""The server side of a Riemann TCP connection: frames in, acks out, in order.

`RiemannTCPProtocol` cuts frames out of what it reads with a buffer of its
own, hands each Msg to its listener (`duct.sources.riemann.RiemannTCP`),
and holds the ack, and stops reading, while the listener's outputs have no
room for the events.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from duct.protocol.riemann import ack
from duct.writenow import writeNow

if TYPE_CHECKING:
    from duct.sources.riemann import RiemannTCP

_LENGTH = struct.Struct(">I")


class RiemannTCPProtocol(Protocol):
    """One Riemann client connection: frames of a 4-byte big-endian length and a Msg.

    Frames are handled strictly in order and each gets one reply, in order.
    While a Msg's ack is held, the transport is paused, and frames the
    receiver had already read wait in a queue; they are handled one at a
    time once the ack is written.
    """

    transport: Any  # a TCP or TLS transport: also a producer we pause and resume

    def __init__(self, source: RiemannTCP) -> None:
        self.source = source
        self.maxFrame = source.maxFrame
        self._held: Deferred[bytes] | None = None
        self._queue: deque[bytes] = deque()
        self._draining = False
        self._lost = False
        # Once set, to the last reply to write (maybe b""), nothing more is
        # read and the connection closes as soon as the queue is empty.
        self._closeWith: bytes | None = None
        # The start of a frame not yet complete; appended to in place, so a
        # frame spanning many reads costs time linear in its size.
        self._partial = bytearray()
        self._need = 4

    # -- the connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.source.connections.add(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Frames already read still go to the pipeline, in order, as held
        # acks are released: their events were received.  No reply is written.
        self._lost = True
        self._partial = bytearray()
        self.source.connections.discard(self)

    def closeWhenIdle(self) -> None:
        """Read nothing more; close once every frame already read is answered."""
        if self._lost or self._closeWith is not None:
            return
        self._closeWith = b""
        if self._held is None and not self._queue:
            self._close()

    def _close(self) -> None:
        if self._closeWith:
            self._reply(self._closeWith)
        self._closeWith = b""
        if not self._lost:
            self.transport.loseConnection()

    # -- frames in ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Split the stream into frames: each a 4-byte big-endian length and a Msg."""
        if self._closeWith is not None:
            return
        partial = self._partial
        if partial:
            partial += data
            if len(partial) < self._need:
                return
            data = bytes(partial)
            partial.clear()
        end = len(data)
        offset = 0
        maxFrame = self.maxFrame
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(data, offset)
            if length > maxFrame:
                self.lengthLimitExceeded(length)
                return
            stop = offset + 4 + length
            if stop > end:
                break
            self.stringReceived(data[offset + 4 : stop])
            if self._closeWith is not None:
                return
            offset = stop
        if offset < end:
            partial += data[offset:] if offset else data
            self._need = 4 + _LENGTH.unpack_from(partial)[0] if len(partial) >= 4 else 4

    def lengthLimitExceeded(self, length: int) -> None:
        source = self.source
        source.oversized += 1
        source.rateLog.emit(
            "oversized",
            "riemann listener {source}: a client sent a frame of {length} bytes,"
            " above max_frame ({limit}); its connection is closed",
            source=source.service,
            length=length,
            limit=self.maxFrame,
        )
        self._partial = bytearray()
        # Frames before this one are still answered, then this error, then close.
        self._closeWith = ack(
            False, f"frame of {length} bytes is above max_frame ({self.maxFrame} bytes)"
        )
        if self._held is None and not self._queue:
            self._close()

    def stringReceived(self, string: bytes) -> None:
        if self._held is not None:
            self._queue.append(string)
        elif self._closeWith is None:
            self._handle(string)

    def _handle(self, data: bytes) -> None:
        result = self.source.receive(data)
        if isinstance(result, bytes):
            if not self._lost:
                writeNow(self.transport, result)
            return
        # The events wait in the pipeline for room: hold the ack, stop reading.
        self._held = result
        if not self._lost:
            self.transport.pauseProducing()
        result.addCallback(self._answer)

    def _reply(self, reply: bytes) -> None:
        if not self._lost:
            self.transport.write(reply)

    def _answer(self, reply: bytes) -> None:
        """The held Msg's events are in every buffer (or failed): reply, go on."""
        self._held = None
        self._reply(reply)
        if not self._draining:
            self._drain()

    def _drain(self) -> None:
        """Handle queued frames in order until one is held; then read again, or close."""
        self._draining = True
        try:
            queue = self._queue
            while queue and self._held is None:
                self._handle(queue.popleft())
        finally:
            self._draining = False
        if self._held is not None or self._lost:
            return
        if self._closeWith is not None:
            self._close()
        else:
            self.transport.resumeProducing()


class _TCPFactory(Factory):
    noisy = False

    def __init__(self, source: RiemannTCP) -> None:
        self.source = source

    def buildProtocol(self, addr: Any) -> RiemannTCPProtocol:
        protocol = RiemannTCPProtocol(self.source)
        protocol.factory = self
        return protocol
