"""Output: the base of every destination, with its buffer and its one writer."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from duct.buffers import bufferFromConfig
from duct.buffers.memory import OVERFLOW_POLICIES, Batch, BufferBase
from duct.defaults import MAX_BYTES, MAX_EVENTS, STATE_DIR
from duct.event import Event
from duct.interfaces import IDuctOutput
from duct.lib.lograte import RateLimitedLog
from duct.lib.pluginhttp import PluginHTTP
from duct.options import REQUIRED, Option, withDefaults
from duct.stats import OUTPUT_STATS, Stat
from duct.writer import Flight, Refused, Unencodable, Writer

__all__ = ["Flight", "Output", "Refused", "Unencodable"]


@implementer(IDuctOutput)
class Output(Writer):
    """The base of every output.

    The base class owns a bounded buffer and the only writer.
    `eventsReceived` puts events in the buffer; the writer takes batches of
    what is buffered, up to `batch_size`, and hands each to `writeBatch`,
    which a subclass overrides.  Up to `max_in_flight` batches may be
    written and not yet confirmed at once.  An event leaves the buffer only
    when its batch's `writeBatch` succeeded.

    A partial batch waits at most `flush_interval`; a deeper backlog goes
    in full batches at once.  A failed batch goes back to the head of the
    buffer, in order with any other batch that failed, once the batches
    still in flight have settled; writing resumes after `retry_initial`,
    doubling up to `retry_max`, without end: such a failure is taken to be
    transient (the destination is down, the disk is full).

    A failure that retrying cannot fix is a `Refused` (or `Unencodable`)
    one: `writeBatch` raises it only when the content is at fault, naming
    the items at fault if it can.  Those items are dropped (counted as
    ``rejected`` and logged with what they were) and the rest of the
    batch is written again at once; when the items are not named the
    batch is split in halves until each refused item stands alone (see
    `duct.writer.Writer`).  So one event an output can never write costs a
    few writes, not the output.  A single refused item is dropped at once,
    or written again `maxRetries` times first if the output sets it.  A
    destination that refuses every batch (bad credentials) must raise an
    ordinary error: it is retried without end, and once events have waited
    `stall_after` seconds with nothing delivered ``/health`` says the
    output is stalled.  `encodeEach` encodes a batch item by item and
    raises `Unencodable` for the items that fail.

    An output whose connection drops calls `requeueInFlight`, and
    `resumeWriting` once the destination can take batches again
    (`canWrite`).

    :param config: this output's validated configuration.
    :param duct: the running service (or a test double from `duct.testing`).
    """

    log = Logger()

    connection: Any = None
    """The live connection, for an output that keeps one (see `connectionLost`)."""

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
        Option("max_in_flight", "integer", 1, "batches written and not yet confirmed", minimum=1),
        Option("retry_initial", "number", 0.5, "seconds before the first retry", minimum=0.01),
        Option("retry_max", "number", 30.0, "longest wait between retries", minimum=0.01),
        Option(
            "stall_after",
            "number",
            60.0,
            "seconds events may wait with nothing delivered before /health says stalled (0: never)",
            minimum=0,
        ),
        Option("debug", "flag", False, "log each batch written"),
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
            **self.bufferOptions(),
        )
        self.batchSize: int = config["batch_size"]
        self.flushInterval = float(config["flush_interval"])
        self.maxInFlight: int = config["max_in_flight"]
        self.retryInitial = float(config["retry_initial"])
        self.retryMax = float(config["retry_max"])
        self.stallAfter = float(config["stall_after"])
        self.received = 0
        self.sent = 0
        self.failures = 0
        """Batches whose write failed."""
        self.rejected = 0
        """Writes refused for their content (each refused piece of a batch counts)."""
        self.eventsRejected = 0
        """Events dropped because the destination refused them or they could not be encoded."""
        self.acked = 0
        """Batches the destination confirmed."""
        self.lastAckLatency: float | None = None
        """Seconds the last confirmed batch took, from writeBatch to its success."""
        self.rateLog = RateLimitedLog(self.log, self.clock)
        self.initWriter()

    def bufferOptions(self) -> dict[str, Any]:
        """Extra settings for the buffer (`bufferFromConfig`'s keywords); none by default."""
        return {}

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> Any:
        """Connect or open the destination.  May return a Deferred or be async."""
        return None

    def closeClient(self) -> Any:
        """Disconnect or close the destination.  May return a Deferred or be async."""
        return None

    def start(self) -> Deferred[None]:
        """Called by the service: `createClient`, then write what the buffer holds.

        A disk buffer replays its backlog when it opens, before any new
        event arrives; without this the writer would wait for one.
        """
        d = maybeDeferred(self.createClient)
        d.addCallback(lambda _: self.resumeWriting())
        return d

    def stop(self) -> Deferred[None]:
        """Stop writing, `closeClient`, then close the buffer."""
        self.stopWriting()
        d = maybeDeferred(self.closeClient)
        return d.addBoth(self._closeBuffer)

    def _closeBuffer(self, result: object) -> object:
        close = getattr(self.buffer, "close", None)  # a disk buffer's
        if close is not None:
            close()
        return result

    def connectionLost(self, server: str, reason: Any) -> None:
        """The connection to ``server`` dropped: what was in flight goes back, logged.

        For an output that keeps its connection in ``self.connection``;
        ``reason`` is the Failure it was lost with, or None.
        """
        self.connection = None
        self.connected = False
        count = self.requeueInFlight()
        if not self.stopped:
            self.rateLog.emit(
                "lost",
                "output {output}: lost the connection to {server} ({error}); "
                "{count} events go back in the queue",
                output=self.name,
                server=server,
                error="" if reason is None else reason.getErrorMessage() or repr(reason.value),
                count=count,
            )

    # -- events in ---------------------------------------------------------------

    def eventsReceived(self, events: list[Event]) -> int:
        """Queue events for delivery; return how many the buffer kept."""
        self.received += len(events)
        kept = self.buffer.put(events)
        self.resumeWriting()
        return kept

    def batchEvents(self, batch: Batch) -> Any:
        """The events of a batch taken from this output's buffer, for another output.

        Events as `eventsReceived` takes them: a list of `Event`, or
        `EncodedEvents` for an output that queues Riemann bytes.
        """
        return batch.events
