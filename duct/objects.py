"""The plugin API: Event, Source and Output."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from duct.buffer import OVERFLOW_POLICIES, Batch, MemoryBuffer
from duct.interfaces import IDuctOutput, IDuctSource
from duct.options import REQUIRED, Option


@functools.lru_cache(maxsize=1)
def defaultHostname() -> str:
    """This machine's name, looked up once per process."""
    return socket.getfqdn()


class Event:
    """One observation: Riemann's event, as sources create and outputs send.

    :param state: a short string such as ``ok``, ``warning`` or ``critical``.
    :param service: the service name, for example ``cpu`` or ``disk.sda.reads``.
    :param description: free text.
    :param metric: an int or a float, or None.
    :param ttl: seconds the event stays valid.
    :param tags: a list of strings.
    :param hostname: the host; defaults to this machine's name.
    :param aggregation: a function of ``(previous, current, seconds)``
        (see `duct.aggregators`) that turns this sample into a rate.
    :param evtime: seconds since the epoch, with microseconds; defaults to now.
    :param attributes: a mapping of string keys to string values.
    :param type: ``metric`` or ``log``.
    """

    __slots__ = (
        "state",
        "service",
        "description",
        "metric",
        "ttl",
        "tags",
        "hostname",
        "aggregation",
        "time",
        "attributes",
        "type",
    )

    def __init__(
        self,
        state: str | None,
        service: str,
        description: str | None,
        metric: float | None,
        ttl: float | None,
        tags: list[str] | None = None,
        hostname: str | None = None,
        aggregation: Callable[[float, float, float], float | None] | None = None,
        evtime: float | None = None,
        attributes: dict[str, str] | None = None,
        type: str = "metric",
    ) -> None:
        self.state = state
        self.service = service
        self.description = description
        self.metric = metric
        self.ttl = ttl
        self.tags = tags if tags is not None else []
        self.hostname = hostname or defaultHostname()
        self.aggregation = aggregation
        self.time = time.time() if evtime is None else evtime
        self.attributes = attributes
        self.type = type

    def eid(self) -> str:
        """The identity of the series this event belongs to: host and service."""
        return f"{self.hostname}.{self.service}"

    id = eid  # the name older plugins call

    def copyWithMetric(self, metric: float | None) -> Event:
        """A copy of this event with another metric and no aggregation."""
        return Event(
            self.state,
            self.service,
            self.description,
            metric,
            self.ttl,
            tags=list(self.tags),
            hostname=self.hostname,
            evtime=self.time,
            attributes=dict(self.attributes) if self.attributes is not None else None,
            type=self.type,
        )

    def asDict(self) -> dict[str, Any]:
        """The event as plain data, with Riemann's field names."""
        return {
            "host": self.hostname,
            "service": self.service,
            "state": self.state,
            "metric": self.metric,
            "ttl": self.ttl,
            "tags": list(self.tags),
            "attributes": dict(self.attributes or {}),
            "description": self.description,
            "time": self.time,
            "type": self.type,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<Event {self.hostname} {self.service} state={self.state!r} "
            f"metric={self.metric!r} time={self.time:.6f}>"
        )


@implementer(IDuctSource)
class Source:
    """The base of every source.

    A polling source overrides `get`, which may return an Event, a list of
    Events, None, a Deferred of those, or be ``async def``.  A listening
    source overrides `startTimer` and `stopTimer` and passes what it
    receives to ``queueBack``.

    :param config: this source's validated configuration.
    :param queueBack: called with each list of events the source produces.
    :param duct: the running `duct.service.DuctService` (or a test double
        from `duct.testing`), which supplies ``clock`` and ``hostname``.
    """

    log = Logger()
    sync = False
    """When true, a poll never starts while the previous one is running."""

    graphs: dict[str, str] = {}
    """Graph type per service prefix (``line``, ``stack``, ``full-stack``, ``bar``)."""

    options: tuple[Option, ...] = (
        Option("source", "string", REQUIRED, "dotted path of the Source class"),
        Option("service", "string", REQUIRED, "service name, the prefix of every event"),
        Option("interval", "number", 60.0, "seconds between polls", minimum=0.001),
        Option("ttl", "number", 60.0, "time-to-live of each event, in seconds", minimum=0),
        Option("tags", "strings", [], "tags for every event: a list or a comma-separated string"),
        Option("attributes", "mapping", None, "attributes (key: value) for every event"),
        Option("hostname", "string", None, "host of every event (default: this machine)"),
        Option("route", "strings", None, "output name(s) to send to (default: every output)"),
        Option("critical", "mapping", None, 'service regex to rule, e.g. {cpu: "> 0.9"}'),
        Option("warning", "mapping", None, 'service regex to rule, e.g. {cpu: "> 0.8"}'),
        Option("start_delay", "number", None, "seconds to wait before the first poll", minimum=0),
        Option("watchdog", "boolean", False, "recreate the source after 10 silent intervals"),
        Option("debug", "boolean", False, "log every event this source emits"),
    )

    def __init__(self, config: dict[str, Any], queueBack: Callable[[list[Event]], Any], duct: Any):
        self.config = config
        self.queueBack = queueBack
        self.duct = duct
        self.clock: Any = duct.clock
        self.service: str = config["service"]
        self.interval = float(config.get("interval") or 60.0)
        ttl = config.get("ttl")
        self.ttl = float(60.0 if ttl is None else ttl)
        tags = config.get("tags") or []
        if isinstance(tags, str):
            tags = [tag.strip() for tag in tags.split(",") if tag.strip()]
        self.tags: list[str] = list(tags)
        self.attributes: dict[str, str] | None = config.get("attributes")
        self.hostname: str = (
            config.get("hostname") or getattr(duct, "hostname", None) or defaultHostname()
        )
        self.debug = bool(config.get("debug"))
        self.running = False
        self.polls = 0
        self.errors = 0
        self.skipped = 0
        self.emitted = 0
        self.lastPollDuration: float | None = None
        self.lastEventTime: float | None = None
        self._inflight: set[Deferred[list[Event]]] = set()
        self.t = task.LoopingCall(self.tick)
        self.t.clock = self.clock

    # -- events ------------------------------------------------------------

    def createEvent(
        self,
        state: str | None,
        description: str | None,
        metric: float | None,
        prefix: str | None = None,
        hostname: str | None = None,
        aggregation: Callable[[float, float, float], float | None] | None = None,
        evtime: float | None = None,
    ) -> Event:
        """An Event named ``service[.prefix]`` with this source's ttl, tags and attributes."""
        service = f"{self.service}.{prefix}" if prefix else self.service
        return Event(
            state,
            service,
            description,
            metric,
            self.ttl,
            tags=list(self.tags),
            hostname=hostname or self.hostname,
            aggregation=aggregation,
            evtime=self.clock.seconds() if evtime is None else evtime,
            attributes=dict(self.attributes) if self.attributes else None,
        )

    def createLog(
        self, type: str, data: str, evtime: float | None = None, hostname: str | None = None
    ) -> Event:
        """A log Event: ``type`` is its service and ``data`` its description."""
        return Event(
            None,
            type,
            data,
            None,
            self.ttl,
            tags=list(self.tags),
            hostname=hostname or self.hostname,
            evtime=self.clock.seconds() if evtime is None else evtime,
            attributes=dict(self.attributes) if self.attributes else None,
            type="log",
        )

    # -- polling -------------------------------------------------------------

    def get(self) -> Any:
        """Poll once.  Subclasses override this."""
        return None

    def startTimer(self) -> None:
        """Start polling every ``interval`` seconds, the first poll now."""
        self.t.start(self.interval, now=True)

    def stopTimer(self) -> Deferred[Any]:
        """Stop polling.  The Deferred fires once the poll in flight has finished."""
        if self.t.running:
            self.t.stop()
        if not self._inflight:
            return succeed(None)
        return DeferredList(list(self._inflight), consumeErrors=True)

    def tick(self) -> Deferred[list[Event]] | None:
        """The timer's call: poll, unless a ``sync`` poll is running or outputs are full."""
        if self.sync and self.running:
            self.skipped += 1
            return None
        accepting = getattr(self.duct, "accepting", None)
        if accepting is not None and not accepting(self):
            self.skipped += 1
            self.log.debug("{source}: outputs are full, poll skipped", source=self.service)
            return None
        d = self.poll()
        # Returning the Deferred makes LoopingCall wait for it: no overlap.
        return d if self.sync else None

    def poll(self) -> Deferred[list[Event]]:
        """Call `get` once and queue what it returns.

        The Deferred fires with the events of this poll (none if it failed);
        failures are logged and counted, never raised.
        """
        self.running = True
        self.polls += 1
        started = self.clock.seconds()
        d = maybeDeferred(self.get)
        d.addCallback(self._emit)
        d.addErrback(self._pollFailed)

        def finished(events: list[Event]) -> list[Event]:
            self.running = False
            self.lastPollDuration = self.clock.seconds() - started
            self._inflight.discard(d)
            return events

        d.addBoth(finished)
        if not d.called:
            self._inflight.add(d)
        return d

    def _emit(self, result: Any) -> list[Event]:
        if result is None:
            return []
        events = [result] if isinstance(result, Event) else list(result)
        if not events:
            return events
        self.emitted += len(events)
        self.lastEventTime = self.clock.seconds()
        if self.debug:
            for event in events:
                self.log.info("{source}: {event!r}", source=self.service, event=event)
        self.queueBack(events)
        return events

    def _pollFailed(self, failure: Failure) -> list[Event]:
        self.errors += 1
        self.log.failure("source {source} failed to poll", failure, source=self.service)
        return []


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

    options: tuple[Option, ...] = (
        Option("output", "string", REQUIRED, "dotted path of the Output class"),
        Option("name", "string", None, "name that sources route to (default: the class name)"),
        Option("maxsize", "integer", 100_000, "most events held in the buffer", minimum=1),
        Option(
            "max_bytes", "integer", 64 * 1024 * 1024, "most bytes held in the buffer", minimum=1
        ),
        Option("overflow", "string", "block", "what a full buffer does", choices=OVERFLOW_POLICIES),
        Option("batch_size", "integer", 500, "most events written at once", minimum=1),
        Option("flush_interval", "number", 1.0, "seconds a partial batch may wait", minimum=0),
        Option("retry_initial", "number", 0.5, "seconds before the first retry", minimum=0.01),
        Option("retry_max", "number", 30.0, "longest wait between retries", minimum=0.01),
        Option("debug", "boolean", False, "log each batch written"),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        self.config = config
        self.duct = duct
        self.clock: Any = duct.clock
        self.name: str = config.get("name") or type(self).__name__
        self.buffer = MemoryBuffer(
            self.name,
            self.clock,
            maxsize=config.get("maxsize") or 100_000,
            max_bytes=config.get("max_bytes") or 64 * 1024 * 1024,
            overflow=config.get("overflow") or "block",
        )
        self.batchSize: int = config.get("batch_size") or 500
        self.flushInterval = float(config.get("flush_interval", 1.0) or 0.0)
        self.retryInitial = float(config.get("retry_initial") or 0.5)
        self.retryMax = float(config.get("retry_max") or 30.0)
        self.received = 0
        self.sent = 0
        self.failures = 0
        self._retryDelay = 0.0
        self._writing = False
        self._retrying = False
        self._stopped = False
        self._flushCall: Any = None
        self._drained: list[Deferred[None]] = []

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> Any:
        """Connect or open the destination.  May return a Deferred or be async."""
        return None

    def stop(self) -> Any:
        """Close the destination.  May return a Deferred or be async."""
        self._stopped = True
        self._cancelFlush()
        self._fireDrained()  # nothing more will be written: release flush() waiters
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
        batch = self.buffer.take(self.batchSize)
        if batch is None:
            self._fireDrained()
            return
        self._writing = True
        d = maybeDeferred(self.writeBatch, batch.events)
        d.addCallbacks(
            self._written, self._writeFailed, callbackArgs=(batch,), errbackArgs=(batch,)
        )

    def _written(self, _: object, batch: Batch) -> None:
        self._writing = False
        self.buffer.ack(batch)
        self.sent += len(batch)
        self._retryDelay = 0.0
        if self.config.get("debug"):
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
