"""Output: the base class of every destination, with its buffer and writer."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from duct.buffers import bufferFromConfig
from duct.buffers.memory import OVERFLOW_POLICIES, Batch, BufferBase
from duct.defaults import MAX_BYTES, MAX_EVENTS, STATE_DIR
from duct.event import Event
from duct.interfaces import IDuctOutput
from duct.lib.pluginhttp import PluginHTTP
from duct.options import REQUIRED, Option, withDefaults
from duct.stats import OUTPUT_STATS, Stat


@implementer(IDuctOutput)
class Output:
    """The base of every output.

    The base class owns a bounded buffer.  `eventsReceived` puts events in
    it, and a writer drains it in batches through `writeBatch`, which a
    subclass overrides: an event leaves the buffer only when `writeBatch`
    has succeeded, and a failed batch goes back to the head and is retried.
    An output that sends on its own may instead override `eventsReceived`,
    or drain ``self.buffer`` with ``take``/``ack``/``requeue``.

    :param config: this output's validated configuration.
    :param duct: the running service (or a test double from `duct.testing`).
    """

    log = Logger()

    connected: bool | None = None
    """Whether the destination is connected; None for an output with no
    connection (a file), which counts as connected for ``/health``."""

    acceptsEncoded = False
    """True for outputs whose `eventsReceived` also takes `EncodedEvents`
    (Riemann bytes), so that a Riemann relay passes events through unparsed."""

    options: tuple[Option, ...] = (
        Option("output", "string", REQUIRED, "dotted path of the Output class"),
        Option("name", "string", None, "name that sources route to (default: the class name)"),
        Option("maxsize", "integer", MAX_EVENTS, "most events held in the buffer", minimum=1),
        Option("max_bytes", "integer", MAX_BYTES, "most bytes held in the buffer", minimum=1),
        Option("overflow", "string", "block", "what a full buffer does", choices=OVERFLOW_POLICIES),
        Option("batch_size", "integer", 500, "most events written at once", minimum=1),
        Option("flush_interval", "number", 1.0, "seconds a partial batch may wait", minimum=0),
        Option("retry_initial", "number", 0.5, "seconds before the first retry", minimum=0.01),
        Option("retry_max", "number", 30.0, "longest wait between retries", minimum=0.01),
        Option("debug", "boolean", False, "log each batch written"),
        Option(
            "buffer",
            "mapping",
            None,
            "buffer settings: {type: memory|disk, path, max_bytes, sync: always|interval|never, "
            "sync_interval}",
        ),
    )

    http = PluginHTTP()
    """An HTTP client with this output's HTTP and TLS options (`duct.lib.pluginhttp`)."""

    stats: tuple[Stat, ...] = OUTPUT_STATS
    """What ``/stats``, ``/metrics`` and self events report of this output;
    a subclass's own are added to them."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        self.config = config = withDefaults(type(self), config)
        self.duct = duct
        self.clock: Any = duct.clock
        self.name: str = config["name"] or type(self).__name__
        ductConfig = getattr(duct, "config", None) or {}
        self.buffer: BufferBase = bufferFromConfig(
            self.name,
            self.clock,
            config,
            stateDir=ductConfig.get("state_dir") or STATE_DIR,
            codec="bytes" if self.acceptsEncoded else "event",
        )
        self.batchSize: int = config["batch_size"]
        self.flushInterval = float(config["flush_interval"])
        self.retryInitial = float(config["retry_initial"])
        self.retryMax = float(config["retry_max"])
        self.received = 0
        self.sent = 0
        self.failures = 0
        self.acked = 0
        """Batches the destination confirmed."""
        self.lastAckLatency: float | None = None
        """Seconds the last confirmed batch took, from writeBatch to its success."""
        self._writeStarted = 0.0
        self._retryDelay = 0.0
        self._writing = False
        self._retrying = False
        self._stopped = False
        self._flushCall: Any = None
        self._drained: list[Deferred[None]] = []

    @property
    def inFlight(self) -> int:
        """Batches being written and not yet confirmed."""
        return 1 if self._writing else 0

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> Any:
        """Connect or open the destination.  May return a Deferred or be async."""
        return None

    def start(self) -> Deferred[None]:
        """Called by the service: `createClient`, then write what the buffer holds.

        A disk buffer replays its backlog when it opens, before any new
        event arrives; without this the writer would wait for one.
        """
        d = maybeDeferred(self.createClient)
        d.addCallback(lambda _: self._scheduleWrite())
        return d

    def stop(self) -> Any:
        """Close the destination.  May return a Deferred or be async."""
        self._stopped = True
        self._cancelFlush()
        self._fireDrained()  # nothing more will be written: release flush() waiters
        close = getattr(self.buffer, "close", None)
        if close is not None:
            close()
        return None

    # -- events in ---------------------------------------------------------------

    def eventsReceived(self, events: list[Event]) -> int:
        """Queue events for delivery; return how many the buffer kept."""
        self.received += len(events)
        kept = self.buffer.put(events)
        self._scheduleWrite()
        return kept

    # -- the writer -------------------------------------------------------------

    def writeBatch(self, events: list[Event]) -> Any:
        """Deliver ``events``.  Raise or fail the Deferred to have them retried."""
        raise NotImplementedError(f"{type(self).__name__} must override writeBatch")

    def _hasWriter(self) -> bool:
        return type(self).writeBatch is not Output.writeBatch

    def _scheduleWrite(self) -> None:
        if self._writing or self._retrying or self._stopped:
            return
        if not self._hasWriter() or not len(self.buffer):
            return
        if len(self.buffer) >= self.batchSize or self.flushInterval == 0:
            delay = 0.0
        elif self._flushCall is not None:
            return
        else:
            delay = self.flushInterval
        self._cancelFlush()
        self._flushCall = self.clock.callLater(delay, self._write)

    def _cancelFlush(self) -> None:
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None

    def _write(self) -> None:
        self._flushCall = None
        self._retrying = False
        if self._writing:  # one batch at a time; _written schedules the next
            return
        batch = self.buffer.take(self.batchSize)
        if batch is None:
            self._fireDrained()
            return
        self._writing = True
        self._writeStarted = self.clock.seconds()
        d = maybeDeferred(self.writeBatch, batch.events)
        d.addCallbacks(
            self._written, self._writeFailed, callbackArgs=(batch,), errbackArgs=(batch,)
        )

    def _written(self, _: object, batch: Batch) -> None:
        self._writing = False
        # The ack may wake producers whose eventsReceived schedules a write:
        # whichever is scheduled last replaces it, so never two at once.
        self.buffer.ack(batch)
        self._cancelFlush()
        self.sent += len(batch)
        self.acked += 1
        self.lastAckLatency = self.clock.seconds() - self._writeStarted
        self._retryDelay = 0.0
        if self.config["debug"]:
            self.log.info("{output}: wrote {count} events", output=self.name, count=len(batch))
        if self._stopped:
            return
        if len(self.buffer) and (self._drained or len(self.buffer) >= self.batchSize):
            self._flushCall = self.clock.callLater(0, self._write)
        elif not len(self.buffer):
            self._fireDrained()
        else:
            self._scheduleWrite()

    def _writeFailed(self, failure: Failure, batch: Batch) -> None:
        self._writing = False
        self.failures += 1
        self.buffer.requeue(batch)
        self._retryDelay = min(max(self._retryDelay * 2, self.retryInitial), self.retryMax)
        self.log.warn(
            "output {output} failed to write {count} events ({error}); retrying in {delay:.1f}s",
            output=self.name,
            count=len(batch),
            error=failure.getErrorMessage() or repr(failure.value),
            delay=self._retryDelay,
            failure=failure,
        )
        if not self._stopped:
            self._cancelFlush()
            self._retrying = True
            self._flushCall = self.clock.callLater(self._retryDelay, self._write)

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
        if not self._writing:
            self._cancelFlush()
            self._flushCall = self.clock.callLater(0, self._write)
        return d
