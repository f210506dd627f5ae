"""The server side of a Riemann TCP connection: frames in, acks out, in order.

`RiemannTCPProtocol` cuts frames out of what it reads with a buffer of its
own, hands each Msg to its listener (`duct.sources.riemann.RiemannTCP`),
and holds the ack, and stops reading, while the listener's outputs have no
room for the events.  It also keeps the listener's limits on connections:
a large frame waits for room in the listener's `Budget` before it is read
on, a connection beyond ``max_connections`` is refused, and one that sends
nothing for ``idle_timeout`` seconds while it is free to is closed.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from duct.protocol.riemann import ack
from duct.sources.riemann_budget import SMALL_FRAME, Reservation
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

    A frame above `SMALL_FRAME` bytes holds a reservation of its length in
    the listener's budget from the moment its length is read until its
    events are handed on; while the budget lacks room the transport is
    paused too.
    """

    transport: Any  # a TCP or TLS transport: also a producer we pause and resume

    def __init__(self, source: RiemannTCP) -> None:
        self.source = source
        self.maxFrame = source.maxFrame
        self._refused = False
        self._paused = False
        # The reservation of the frame being read, once its length is known
        # and it is above SMALL_FRAME; granted, or waiting for room.
        self._reservation: Reservation | None = None
        self._idleCall: Any = None
        self._seconds = source.clock.seconds
        self._lastRead = 0.0
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
        # While a read is being handled, the replies it makes, written
        # together at its end: one send for a client's pipelined Msgs.
        self._replies: list[bytes] | None = None

    # -- the connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        source = self.source
        if len(source.connections) >= source.maxConnections:
            self._refuseConnection()
            return
        source.connections.add(self)
        self._lastRead = source.clock.seconds()
        self._watchIdle(source.idleTimeout)

    def _refuseConnection(self) -> None:
        source = self.source
        source.refusedConnections += 1
        source.rateLog.emit(
            "refused_connections",
            "riemann listener {source}: {count} connections open, the most max_connections"
            " allows; a new one is refused",
            source=source.service,
            count=len(source.connections),
        )
        self._refused = True
        self._closeWith = b""
        self.transport.write(
            ack(
                False,
                f"too many connections: this listener takes at most {source.maxConnections}"
                " at once (max_connections); try again later",
            )
        )
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Frames already read still go to the pipeline, in order, as held
        # acks are released: their events were received.  No reply is written.
        self._lost = True
        self._dropPartial()
        self._stopWatchingIdle()
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
        self._dropPartial()
        self._stopWatchingIdle()
        self._flush()
        if not self._lost:
            self.transport.loseConnection()

    def _dropPartial(self) -> None:
        """Forget the frame being read, and give its reservation back."""
        self._partial = bytearray()
        self._need = 4
        reservation, self._reservation = self._reservation, None
        if reservation is not None:
            if reservation.granted:
                self.source.budget.release(reservation.nbytes)
            else:
                reservation.cancel()

    # -- pausing, and the idle timeout ----------------------------------------------

    def _pause(self) -> None:
        """Stop reading: an ack is held, or the budget lacks room.  No idle timeout then."""
        if not self._lost:
            self.transport.pauseProducing()
        if not self._paused:
            self._paused = True
            self._stopWatchingIdle()

    def _resume(self) -> None:
        """Read again, unless an ack is still held or the budget still lacks room."""
        if self._held is not None or self._waitingForBudget or self._lost:
            return
        self.transport.resumeProducing()
        if self._paused:
            self._paused = False
            self._lastRead = self.source.clock.seconds()
            self._watchIdle(self.source.idleTimeout)

    @property
    def _waitingForBudget(self) -> bool:
        return self._reservation is not None and not self._reservation.granted

    def _watchIdle(self, delay: float) -> None:
        if self.source.idleTimeout and self._idleCall is None and not self._lost:
            self._idleCall = self.source.clock.callLater(delay, self._idleCheck)

    def _stopWatchingIdle(self) -> None:
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()

    def _idleCheck(self) -> None:
        self._idleCall = None
        if self._lost or self._paused or self._closeWith is not None:
            return
        source = self.source
        idle = source.clock.seconds() - self._lastRead
        if idle < source.idleTimeout:
            self._watchIdle(source.idleTimeout - idle)
            return
        source.idleClosed += 1
        source.rateLog.emit(
            "idle_closed",
            "riemann listener {source}: a connection sent nothing for {timeout}s"
            " (idle_timeout) and is closed",
            source=source.service,
            timeout=source.idleTimeout,
        )
        self._closeWith = b""
        self._close()

    # -- frames in ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Split the stream into frames: each a 4-byte big-endian length and a Msg."""
        if self._closeWith is not None:
            return
        self._lastRead = self._seconds()
        partial = self._partial
        if partial:
            partial += data
            if len(partial) < self._need or self._waitingForBudget:
                return
            data = bytes(partial)
            partial.clear()
        self._replies = []
        try:
            self._frames(data)
        finally:
            self._flush()

    def _frames(self, data: bytes) -> None:
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
            if length > SMALL_FRAME:
                # Its reservation goes on with it, given back once it is handed on.
                if self._reservation is not None:
                    self._reservation = None  # made while it was being read
                else:
                    self.source.budget.take(length)  # read whole at once
            self.stringReceived(data[offset + 4 : stop])
            if self._closeWith is not None:
                return
            offset = stop
        if offset < end:
            partial = self._partial
            partial += data[offset:] if offset else data
            if len(partial) < 4:
                self._need = 4
                return
            length = _LENGTH.unpack_from(partial)[0]
            self._need = 4 + length
            if length > SMALL_FRAME and self._reservation is None:
                self._reserve(length)

    def _reserve(self, length: int) -> None:
        """Reserve room for a large frame before reading on; wait, paused, if there is none."""
        source = self.source
        reservation = source.budget.reserve(length, self._budgetGranted)
        self._reservation = reservation
        if not reservation.granted:
            source.budgetPauses += 1
            source.rateLog.emit(
                "budget",
                "riemann listener {source}: {pending} bytes held in large frames, near"
                " max_pending_bytes ({limit}); a connection waits to read one of {length}",
                source=source.service,
                pending=source.budget.used,
                limit=source.budget.limit,
                length=length,
            )
            self._pause()

    def _budgetGranted(self) -> None:
        self._resume()
        partial = self._partial
        if len(partial) >= self._need and self._closeWith is None:
            data = bytes(partial)  # read while paused: a TLS record's rest
            partial.clear()
            self._frames(data)

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
        self._dropPartial()
        # Frames before this one are still answered, then this error, then close.
        self._closeWith = ack(
            False, f"frame of {length} bytes is above max_frame ({self.maxFrame} bytes)"
        )
        if self._held is None and not self._queue:
            self._close()

    def stringReceived(self, string: bytes) -> None:
        # Queued behind a held ack, or behind frames being drained (a frame
        # whose room in the budget a drained one just gave back).
        if self._held is not None or self._queue:
            self._queue.append(string)
        elif self._closeWith is None:
            self._handle(string)
        elif len(string) > SMALL_FRAME:
            self.source.budget.release(len(string))

    def _handle(self, data: bytes) -> None:
        result = self.source.receive(data)
        if isinstance(result, bytes):
            self._reply(result)
            if len(data) > SMALL_FRAME:  # after the reply: a frame this frees comes later
                self.source.budget.release(len(data))
            return
        # The events wait in the pipeline for room: hold the ack, stop reading.
        self._held = result
        self._pause()
        if len(data) > SMALL_FRAME:
            result.addBoth(self._handedOn, len(data))
        result.addCallback(self._answer)

    def _handedOn(self, result: bytes, length: int) -> bytes:
        self.source.budget.release(length)
        return result

    def _flush(self) -> None:
        """Write the replies kept back during a read, and write at once from now on."""
        replies, self._replies = self._replies, None
        if replies and not self._lost:
            writeNow(self.transport, replies[0] if len(replies) == 1 else b"".join(replies))

    def _reply(self, reply: bytes) -> None:
        """Write ``reply`` after those before it: at once, or at the end of the read."""
        if self._lost:
            return
        if self._replies is not None:
            self._replies.append(reply)
        else:
            writeNow(self.transport, reply)

    def _answer(self, reply: bytes) -> None:
        """The held Msg's events are in every buffer (or failed): reply, go on."""
        self._held = None
        self._reply(reply)
        if not self._draining:
            self._drain()

    def _drain(self) -> None:
        """Handle queued frames in order until one is held; then read again, or close."""
        self._draining = True
        batching = self._replies is None
        if batching:
            self._replies = []
        try:
            queue = self._queue
            while queue and self._held is None:
                self._handle(queue.popleft())
        finally:
            self._draining = False
            if batching:
                self._flush()
        if self._held is not None or self._lost:
            return
        if self._closeWith is not None:
            self._close()
        else:
            self._resume()


class _TCPFactory(Factory):
    noisy = False

    def __init__(self, source: RiemannTCP) -> None:
        self.source = source

    def buildProtocol(self, addr: Any) -> RiemannTCPProtocol:
        protocol = RiemannTCPProtocol(self.source)
        protocol.factory = self
        return protocol
