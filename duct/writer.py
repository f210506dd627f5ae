"""Writer: the one writer every `duct.output.Output` drains its buffer with.

It keeps a window of up to ``maxInFlight`` batches in the output's
`writeBatch` at once, acks each in the buffer when it succeeded, and puts
failed ones back at the head in order.  See `Output` for the behaviour an
output's options choose.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.buffers.memory import Batch, BufferBase
from duct.lib.lograte import RateLimitedLog
from duct.lib.tokenbucket import TokenBucket

__all__ = ["Flight", "Refused", "Writer"]


class Refused(Exception):
    """The destination answered, and refused a batch.

    Raised by (or failing the Deferred of) `Output.writeBatch`: the same
    batch is written again after a backoff, at most `Output.maxRetries`
    times, and then dropped, counted as ``rejected``.
    """

    def __init__(self, error: str, destination: str = "the destination") -> None:
        super().__init__(error)
        self.error = error
        self.destination = destination


class Flight:
    """A batch handed to `Output.writeBatch`: its place in the stream, its refusals."""

    __slots__ = ("seq", "batch", "sentAt", "rejections", "settled")

    def __init__(self, seq: int, batch: Batch) -> None:
        self.seq = seq
        self.batch = batch
        self.sentAt = 0.0
        self.rejections = 0
        self.settled = False


def _bySeq(flight: Flight) -> int:
    return flight.seq


class Writer:
    """The writer's state and loop, mixed into `duct.output.Output`.

    It uses the output's ``buffer``, ``clock``, ``config``, ``name``,
    ``batchSize``, ``flushInterval``, ``maxInFlight``, ``retryInitial``,
    ``retryMax``, ``rateLog`` and its counters, and calls its `writeBatch`
    and `canWrite`.
    """

    log: Logger
    buffer: BufferBase
    clock: Any
    config: dict[str, Any]
    name: str
    batchSize: int
    flushInterval: float
    maxInFlight: int
    retryInitial: float
    retryMax: float
    rateLog: RateLimitedLog
    sent: int
    failures: int
    rejected: int
    acked: int
    lastAckLatency: float | None

    maxRetries = 5
    """How often a batch the destination `Refused` is written again."""

    bucket: TokenBucket | None = None
    """Set to pace the writer at most so many events a second (``maxrate``)."""

    def initWriter(self) -> None:
        """Set up the writer's state; `Output.__init__` calls it once."""
        self._window: deque[Flight] = deque()  # being written, oldest first
        self._held: list[Flight] = []  # refused, to be written again as they are
        self._failed: list[Flight] = []  # failed, going back to the buffer
        self._seq = 0
        self._retryDelay = 0.0
        self._stopped = False
        self._pumping = False
        self._again = False
        self._flushDue = False
        self._full = self.batchSize  # a full batch, the rate limit allowing
        self._flushCall: Any = None
        self._retryCall: Any = None
        self._rateCall: Any = None
        self._drained: list[Deferred[None]] = []

    @property
    def inFlight(self) -> int:
        """Batches being written and not yet confirmed."""
        return len(self._window)

    @property
    def stopped(self) -> bool:
        """Whether writing was stopped (`Output.stop`)."""
        return self._stopped

    def stopWriting(self) -> None:
        """Write nothing more: cancel the timers, release `flush` waiters."""
        self._stopped = True
        for name in ("_flushCall", "_retryCall", "_rateCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        self._fireDrained()

    def writeBatch(self, events: list[Any]) -> Any:
        """Deliver ``events``.  Raise or fail the Deferred to have them retried."""
        raise NotImplementedError(f"{type(self).__name__} must override writeBatch")

    def canWrite(self) -> bool:
        """Whether the destination can take a batch now (connected, for instance)."""
        return True

    def _hasWriter(self) -> bool:
        return type(self).writeBatch is not Writer.writeBatch

    def resumeWriting(self) -> None:
        """Write what the window, the batching and the rate limit allow now.

        Called after each put and each settled batch; a subclass calls it
        once `canWrite` became true.  Writes that complete at once continue
        the same loop, so a deep backlog leaves in full batches without
        waiting for the clock.
        """
        if self._pumping:
            self._again = True
            return
        if self._flushCall is not None and not self._drained and len(self.buffer) < self._full:
            return  # a partial batch already waits for its timer
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._pump()
        finally:
            self._pumping = False
        if self._drained and not self.buffer.depth:
            self._fireDrained()

    def _pump(self) -> None:
        if self._stopped or not self._hasWriter():
            return
        buffer, bucket = self.buffer, self.bucket
        full = self.batchSize if bucket is None else min(self.batchSize, bucket.burst)
        self._full = full
        while len(self._window) < self.maxInFlight and self._retryCall is None and self.canWrite():
            if self._held:
                self._writeFlight(self._held.pop(0))
                continue
            pending = len(buffer)
            if not pending:
                break
            if pending < full and not (self._flushDue or self._drained or not self.flushInterval):
                if self._flushCall is None:
                    self._flushCall = self.clock.callLater(self.flushInterval, self._flushNow)
                break
            count = min(full, pending)
            if bucket is not None:
                wait = bucket.delay(count)
                if wait > 0:
                    if self._rateCall is None:
                        self._rateCall = self.clock.callLater(wait, self._rateReady)
                    break
            batch = buffer.take(count)
            if batch is None:  # all of it expired
                break
            if bucket is not None:
                bucket.spend(len(batch))
            self._seq += 1
            self._writeFlight(Flight(self._seq, batch))
        if not len(buffer):
            self._flushDue = False
            if self._flushCall is not None:
                self._flushCall.cancel()
                self._flushCall = None

    def _flushNow(self) -> None:
        self._flushCall = None
        self._flushDue = True
        self.resumeWriting()

    def _rateReady(self) -> None:
        self._rateCall = None
        self.resumeWriting()

    def _retryNow(self) -> None:
        self._retryCall = None
        self._flushDue = True  # what went back has waited long enough
        self.resumeWriting()

    def _writeFlight(self, flight: Flight) -> None:
        flight.sentAt = self.clock.seconds()
        flight.settled = False
        self._window.append(flight)
        d = maybeDeferred(self.writeBatch, flight.batch.events)
        d.addCallbacks(
            self._written, self._writeFailed, callbackArgs=(flight,), errbackArgs=(flight,)
        )

    def _written(self, _: object, flight: Flight) -> None:
        if flight.settled:  # requeued meanwhile: the connection dropped
            return
        flight.settled = True
        self._window.remove(flight)
        batch = flight.batch
        self.buffer.ack(batch)
        self.sent += len(batch)
        self.acked += 1
        self.lastAckLatency = self.clock.seconds() - flight.sentAt
        self._retryDelay = 0.0
        if self.config["debug"]:
            self.log.info("{output}: wrote {count} events", output=self.name, count=len(batch))
        self._settled()

    def _writeFailed(self, failure: Failure, flight: Flight) -> None:
        if flight.settled:
            return
        flight.settled = True
        self._window.remove(flight)
        if isinstance(failure.value, Refused):
            self._refused(flight, failure.value)
        else:
            self.failures += 1
            self._failed.append(flight)
            if self._retryCall is None:
                self._retryDelay = min(max(self._retryDelay * 2, self.retryInitial), self.retryMax)
                self._retryAfter(self._retryDelay)
            self.log.warn(
                "output {output} failed to write {count} events ({error}); "
                "retrying in {delay:.1f}s",
                output=self.name,
                count=len(flight.batch),
                error=failure.getErrorMessage() or repr(failure.value),
                delay=self._retryDelay,
                failure=failure,
            )
        self._settled()

    def _refused(self, flight: Flight, refusal: Refused) -> None:
        self.rejected += 1
        flight.rejections += 1
        fields: dict[str, Any] = dict(
            output=self.name,
            destination=refusal.destination,
            count=len(flight.batch),
            error=refusal.error,
        )
        if flight.rejections > self.maxRetries:
            self.rateLog.emit(
                "rejected",
                "output {output}: {destination} refused {count} events ({error}); "
                "giving up on them",
                **fields,
            )
            self.buffer.discard(flight.batch, "rejected")
            return
        delay = min(self.retryInitial * 2 ** (flight.rejections - 1), self.retryMax)
        self.rateLog.emit(
            "rejected",
            "output {output}: {destination} refused {count} events ({error}); "
            "retry {attempt} of {retries} in {delay:.1f}s",
            attempt=flight.rejections,
            retries=self.maxRetries,
            delay=delay,
            **fields,
        )
        self._held.append(flight)
        self._held.sort(key=_bySeq)
        if self._retryCall is None:
            self._retryAfter(delay)

    def _retryAfter(self, delay: float) -> None:
        if not self._stopped:
            self._retryCall = self.clock.callLater(delay, self._retryNow)

    def _settled(self) -> None:
        if self._failed and not self._window:
            # Every earlier batch has settled: put the failed ones back, in order.
            failed, self._failed = self._failed, []
            held, self._held = self._held, []
            self._requeue([*failed, *held])
        self.resumeWriting()

    def _requeue(self, flights: list[Flight]) -> None:
        for flight in sorted(flights, key=_bySeq, reverse=True):  # the oldest ends at the head
            self.buffer.requeue(flight.batch)

    def requeueInFlight(self) -> int:
        """The connection dropped: put back every batch not confirmed, in order.

        Whatever their `writeBatch` Deferreds do later is ignored, and a
        pending retry is cancelled (reconnecting has its own backoff).
        Returns how many events went back.
        """
        flights = [*self._window, *self._held, *self._failed]
        for flight in flights:
            flight.settled = True
        self._window.clear()
        self._held, self._failed = [], []
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = None
        self._requeue(flights)
        if flights:
            self._flushDue = True  # sent again at once, whole or not
        return sum(len(flight.batch) for flight in flights)

    def _fireDrained(self) -> None:
        waiters, self._drained = self._drained, []
        for d in waiters:
            d.callback(None)

    def flush(self) -> Deferred[None]:
        """Write everything buffered now; fires when the buffer is empty.

        For an output without a writer of its own this fires at once.
        """
        if self._stopped or not self._hasWriter() or not self.buffer.depth:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self.resumeWriting()
        if d in self._drained:
            return d
        # Written at once: answer on the next turn, never before flush returns.
        later: Deferred[None] = Deferred()
        self.clock.callLater(0, later.callback, None)
        return later
