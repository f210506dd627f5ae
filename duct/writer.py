"""Writer: the one writer every `duct.output.Output` drains its buffer with.

It keeps a window of up to ``maxInFlight`` batches in the output's
`writeBatch` at once, acks each in the buffer when it succeeded, and puts
failed ones back at the head in order.  A batch the destination `Refused`
is cut down until the items at fault are found and dropped (see
`isolation`), so that no single event can stall an output.  See `Output`
for the behaviour an output's options choose.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.buffers.memory import Batch, BufferBase
from duct.event import Event
from duct.lib.encodeeach import describeError
from duct.lib.encodeeach import encodeEach as _encodeEach
from duct.lib.lograte import RateLimitedLog
from duct.lib.tokenbucket import TokenBucket

__all__ = ["Flight", "Refused", "Unencodable", "Writer"]

T = TypeVar("T")
R = TypeVar("R")


class Refused(Exception):
    """The destination refused a batch because of what it holds.

    Raised by (or failing the Deferred of) `Output.writeBatch` only when
    the content is at fault: writing the same items again would be refused
    again.  The items at fault are then isolated and dropped, counted as
    ``rejected``, and every other item of the batch is written again at
    once.  ``items``, when the output knows them, are the indices (into the
    list `writeBatch` was given) of the items at fault; without it the
    batch is split in halves until each refused item stands alone.

    A destination that refuses everyone (bad credentials, a 401 or 403,
    a full disk) must raise an ordinary exception instead: that batch is
    retried with backoff without end, and ``/health`` shows the output as
    stalled.
    """

    def __init__(
        self,
        error: str,
        destination: str = "the destination",
        items: Iterable[int] | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.destination = destination
        self.items: list[int] | None = None if items is None else list(items)


class Unencodable(Refused):
    """The output cannot encode these items (`Output.encodeEach` raises it)."""

    def __init__(self, error: str, items: Iterable[int] | None = None) -> None:
        super().__init__(error, "the encoder", items)


class Flight:
    """A batch handed to `Output.writeBatch`: its place in the stream, its refusals.

    ``seq`` orders flights: a batch taken from the buffer is ``(n,)``, and
    the pieces of a batch cut in two are its ``seq`` plus ``0`` and ``1``,
    so they sort after their parent's elders and before any newer batch.
    ``due`` is when a refused single item may be written again.
    """

    __slots__ = ("seq", "batch", "sentAt", "rejections", "settled", "due")

    def __init__(self, seq: tuple[int, ...], batch: Batch) -> None:
        self.seq = seq
        self.batch = batch
        self.sentAt = 0.0
        self.rejections = 0
        self.settled = False
        self.due = 0.0


def _bySeq(flight: Flight) -> tuple[int, ...]:
    return flight.seq


def describeItem(item: Any) -> str:
    """A short description of an item, for the log: host and service for an Event."""
    if isinstance(item, Event):
        return f"{item.hostname} {item.service}"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"{len(item)} bytes"
    return type(item).__name__


DESCRIBED = 5
"""How many of the items dropped together a log line describes."""


class Writer:
    """The writer's state and loop, mixed into `duct.output.Output`.

    It uses the output's ``buffer``, ``clock``, ``config``, ``name``,
    ``batchSize``, ``flushInterval``, ``maxInFlight``, ``retryInitial``,
    ``retryMax``, ``rateLog`` and its counters, and calls its `writeBatch`
    and `canWrite`.

    .. rubric:: Isolation

    A `Refused` batch (an `Unencodable` one too) is never retried as it
    was.  With ``items``, those items are dropped and the rest is written
    again at once; without, a batch of several items is split in halves,
    each written again at once, and a single item refused is dropped.  So
    k bad items in a batch of n cost O(k log n) writes, every other item
    is delivered, and the pieces go in order, before any newer batch.  An
    output may set `maxRetries` to have a single refused item written
    again that many times, after `retry_initial` doubling up to
    `retry_max`: it waits aside, so the items behind it go on (and may
    arrive before it).  Any other failure is retried as it was, without
    end: after `retry_initial` doubling up to `retry_max`, or after the
    exception's ``retryAfter`` seconds when it has one (a destination that
    said when to come back).
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
    stallAfter: float
    sent: int
    failures: int
    rejected: int
    eventsRejected: int
    acked: int
    lastAckLatency: float | None

    maxRetries = 0
    """How often a single item the destination `Refused` is written again
    before it is dropped; 0 drops it at once."""

    bucket: TokenBucket | None = None
    """Set to pace the writer at most so many events a second (``maxrate``)."""

    def initWriter(self) -> None:
        """Set up the writer's state; `Output.__init__` calls it once."""
        self._window: deque[Flight] = deque()  # being written, oldest first
        self._held: list[Flight] = []  # pieces of refused batches, written next
        self._failed: list[Flight] = []  # failed, going back to the buffer
        self._parked: list[Flight] = []  # refused single items, waiting for `due`
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
        self._parkCall: Any = None
        self._drained: list[Deferred[None]] = []
        self.lastDelivery: float = self.clock.seconds()
        """Clock time of the last batch confirmed (at first, of the writer's start)."""
        self.lastError: str | None = None
        """Why the last write failed, until one succeeds."""
        self._waitingSince: float | None = None  # when the buffer last stopped being empty

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
        for name in ("_flushCall", "_retryCall", "_rateCall", "_parkCall"):
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

    def encodeEach(self, items: Sequence[T], encode: Callable[[T], R]) -> list[R]:
        """Every item encoded by ``encode``, for a `writeBatch` that encodes one by one.

        Raises `Unencodable` with the indices of the items ``encode``
        fails on, so that the writer drops just those and writes the rest.
        """
        encoded, failed, error = _encodeEach(items, encode)
        if failed:
            raise Unencodable(describeError(error), failed)
        return encoded

    def dropUnencodable(self, items: Sequence[Any], failed: Sequence[int], error: Any) -> None:
        """Count and log ``items`` at ``failed`` that could not be encoded to be queued.

        For an output that encodes events as they arrive: they never
        reach the buffer, and are counted as ``rejected`` all the same.
        """
        self.eventsRejected += len(failed)
        self.buffer.recordDrop("rejected", len(failed))
        described = [self.describeItem(items[i]) for i in failed[:DESCRIBED]]
        if len(failed) > DESCRIBED:
            described.append(f"and {len(failed) - DESCRIBED} more")
        self.rateLog.emit(
            "unencodable",
            "output {output}: cannot encode {count} events ({error}); dropped: {events}",
            output=self.name,
            count=len(failed),
            error=describeError(error),
            events=", ".join(described),
        )

    def describeItem(self, item: Any) -> str:
        """A short description of an item of a batch, for the log of what was dropped."""
        return describeItem(item)

    # -- stalls ---------------------------------------------------------------

    @property
    def secondsSinceDelivery(self) -> float:
        """Seconds since the last batch was confirmed (or the writer started)."""
        return max(0.0, self.clock.seconds() - self.lastDelivery)

    @property
    def stalled(self) -> bool:
        """Whether events wait and nothing was delivered for `stallAfter` seconds.

        Counted from the last confirmed batch, or from when the buffer last
        stopped being empty if that is later: an output idle for an hour is
        not stalled the moment a new event arrives.
        """
        if not self.stallAfter or not self.buffer.depth or not self._hasWriter():
            return False
        since = self.lastDelivery
        if self._waitingSince is not None and self._waitingSince > since:
            since = self._waitingSince
        return self.clock.seconds() - since >= self.stallAfter

    def _noteBacklog(self) -> None:
        if self.buffer.depth:
            if self._waitingSince is None:
                self._waitingSince = self.clock.seconds()
        else:
            self._waitingSince = None

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
        self._noteBacklog()
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
            self._writeFlight(Flight((self._seq,), batch))
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
        self.lastDelivery = now = self.clock.seconds()
        self.lastAckLatency = now - flight.sentAt
        self.lastError = None
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
            refusal = failure.value
            self.lastError = f"{refusal.destination} refused: {refusal.error}"
            self._isolate(flight, refusal)
        else:
            self.failures += 1
            error = failure.getErrorMessage() or repr(failure.value)
            self.lastError = error
            self._failed.append(flight)
            delay = self._retryDelay
            if self._retryCall is None:
                self._retryDelay = min(max(self._retryDelay * 2, self.retryInitial), self.retryMax)
                # A destination may say when to come back (an HTTP Retry-After).
                asked = getattr(failure.value, "retryAfter", None)
                delay = self._retryDelay if asked is None else max(0.0, float(asked))
                self._retryAfter(delay)
            self.log.warn(
                "output {output} failed to write {count} events ({error}); "
                "retrying in {delay:.1f}s",
                output=self.name,
                count=len(flight.batch),
                error=error,
                delay=delay,
                failure=failure,
            )
        self._settled()

    # -- isolation --------------------------------------------------------------

    def _isolate(self, flight: Flight, refusal: Refused) -> None:
        """Drop the items at fault in a refused batch; write the others again at once."""
        self.rejected += 1
        flight.rejections += 1
        batch = flight.batch
        size = len(batch.events)
        bad = sorted({i for i in refusal.items or () if 0 <= i < size})
        if bad:
            if len(bad) < size:
                badSet = set(bad)
                good = [i for i in range(size) if i not in badSet]
                self._hold(Flight((*flight.seq, 0), batch.select(good)))
            self._drop(batch.select(bad) if len(bad) < size else batch, refusal)
        elif size > 1:
            first, second = batch.split(size // 2)
            self._hold(Flight((*flight.seq, 0), first))
            self._hold(Flight((*flight.seq, 1), second))
        elif flight.rejections <= self.maxRetries:
            self._park(flight, refusal)
        else:
            self._drop(batch, refusal)

    def _hold(self, flight: Flight) -> None:
        self._held.append(flight)
        self._held.sort(key=_bySeq)

    def _drop(self, batch: Batch, refusal: Refused) -> None:
        self.eventsRejected += len(batch)
        described = [self.describeItem(item) for item in batch.events[:DESCRIBED]]
        if len(batch.events) > DESCRIBED:
            described.append(f"and {len(batch.events) - DESCRIBED} more")
        self.rateLog.emit(
            "rejected",
            "output {output}: {destination} refused {count} events ({error}); dropped: {events}",
            output=self.name,
            destination=refusal.destination,
            count=len(batch),
            error=refusal.error,
            events=", ".join(described),
        )
        self.buffer.discard(batch, "rejected")

    def _park(self, flight: Flight, refusal: Refused) -> None:
        """A single refused item waits aside for its retry; the items behind it go on."""
        delay = min(self.retryInitial * 2 ** (flight.rejections - 1), self.retryMax)
        flight.due = self.clock.seconds() + delay
        self._parked.append(flight)
        self.rateLog.emit(
            "refused",
            "output {output}: {destination} refused an item ({error}): {event}; "
            "retry {attempt} of {retries} in {delay:.1f}s",
            output=self.name,
            destination=refusal.destination,
            error=refusal.error,
            event=self.describeItem(flight.batch.events[0]),
            attempt=flight.rejections,
            retries=self.maxRetries,
            delay=delay,
        )
        self._scheduleParked()

    def _scheduleParked(self) -> None:
        if self._stopped or not self._parked:
            return
        due = min(flight.due for flight in self._parked)
        call = self._parkCall
        if call is not None and call.active():
            if call.getTime() <= due:
                return
            call.cancel()
        self._parkCall = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._unpark)

    def _unpark(self) -> None:
        self._parkCall = None
        now = self.clock.seconds()
        due = [flight for flight in self._parked if flight.due <= now]
        self._parked = [flight for flight in self._parked if flight.due > now]
        for flight in due:
            self._hold(flight)
        self._scheduleParked()
        self.resumeWriting()

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
        Pieces of a refused batch and refused items waiting for a retry go
        back too, each in its place.
        Returns how many events went back.
        """
        flights = [*self._window, *self._held, *self._failed, *self._parked]
        for flight in flights:
            flight.settled = True
        self._window.clear()
        self._held, self._failed, self._parked = [], [], []
        for name in ("_retryCall", "_parkCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
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
