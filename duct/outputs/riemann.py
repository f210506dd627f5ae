"""Send events to Riemann: over TCP or TLS with acknowledgements (`RiemannTCP`), or UDP."""

from __future__ import annotations

import random
from collections import deque
from typing import Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure

from duct.buffers.memory import MemoryBuffer
from duct.lib.lograte import RateLimitedLog
from duct.lib.tls import clientTLSOptions
from duct.objects import Event, Output
from duct.options import Option
from duct.outputs.riemann_common import (
    QUEUE_OVERHEAD,
    FailoverEndpoint,
    Flight,
    RiemannClientFactory,
    RiemannClientProtocol,
    TokenBucket,
    clientEndpoints,
    encodeForQueue,
    hostList,
)
from duct.outputs.riemann_udp import RiemannUDP
from duct.protocol.riemann import EncodedEvents, frame, msgFromEncoded, pb

__all__ = ["RiemannTCP", "RiemannUDP"]


class RiemannTCP(Output):
    """Send events to Riemann over TCP or TLS, and wait for its acknowledgements.

    Events are queued encoded (events relayed from a Riemann listener are
    passed on byte for byte) and sent in Msgs of up to `batch_size` (here
    100 by default; a partial Msg waits at most `flush_interval`, 0.1 s).
    Up to `max_in_flight` Msgs may wait for their reply at once; Riemann
    answers in order, so each reply settles the oldest.  An event leaves the
    buffer only when the server replied `ok: true`.  A Msg refused with
    `ok: false` is logged with the server's error and sent again after
    `retry_initial`, doubling up to `retry_max`, at most `max_retries`
    times; then its events are dropped (counted as `rejected`).  When the
    connection is lost, every Msg still waiting goes back to the head of the
    buffer, in order, and is sent again once connected: delivery is at least
    once, and a reconnection may repeat up to `max_in_flight` x `batch_size`
    events.

    `server` may list several hosts: after a failed attempt the next one is
    tried.  With `tls`, the server's certificate is checked against `ca` (or
    the system's trust store) and its name against the host; `cert` and
    `key` present a client certificate.  An `endpoint` string (Twisted's
    syntax, e.g. `tls:riemann.example:5554:caCertsDir=/etc/ssl/certs`)
    replaces `server`, `port` and the TLS options.  With `expire` (and a
    memory buffer), events whose time plus ttl has passed are dropped rather
    than sent (counted as `expired`).  NaN and infinite metrics are dropped
    (counted as `invalid`) unless `allow_nan`; events relayed encoded are
    not checked.
    """

    acceptsEncoded = True

    options = (
        Option("server", "strings", "localhost", "Riemann host, or a list tried in turn"),
        Option("port", "integer", 5555, "Riemann's TCP (or TLS) port", minimum=1),
        Option("endpoint", "string", None, "client endpoint string; replaces server, port, tls"),
        Option("tls", "boolean", False, "connect with TLS"),
        Option("ca", "string", None, "PEM file of the CAs to trust (default: the system's)"),
        Option("cert", "string", None, "PEM file of a client certificate to present"),
        Option("key", "string", None, "PEM file of the client key (default: in cert)"),
        Option("tls_verify", "boolean", True, "check the server's certificate and name"),
        Option("batch_size", "integer", 100, "most events in one Msg", minimum=1),
        Option("flush_interval", "number", 0.1, "seconds a partial Msg may wait", minimum=0),
        Option("max_in_flight", "integer", 4, "Msgs sent and not yet acknowledged", minimum=1),
        Option("max_retries", "integer", 5, "resends of a Msg refused with ok: false", minimum=0),
        Option(
            "ack_timeout",
            "number",
            30.0,
            "seconds to await a reply before reconnecting",
            minimum=0.01,
        ),
        Option("expire", "boolean", False, "drop queued events older than their ttl"),
        Option("allow_nan", "boolean", False, "send NaN and infinite metrics"),
        Option("maxrate", "number", None, "most events sent a second (default: no limit)"),
        Option("reconnect_initial", "number", 0.1, "seconds before reconnecting", minimum=0.01),
        Option("reconnect_max", "number", 3.0, "longest wait to reconnect", minimum=0.01),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.expire = bool(config.get("expire"))
        old = self.buffer
        if self.expire and isinstance(old, MemoryBuffer):  # a disk buffer keeps no deadlines
            self.buffer = MemoryBuffer(
                self.name, self.clock, old.maxsize, old.max_bytes, old.overflow, expiring=True
            )
        self.reactor: Any = getattr(duct, "reactor", None) or self.clock
        self.servers = hostList(config.get("server", "localhost"))
        self.port = int(config.get("port") or 5555)
        self.endpointString: str | None = config.get("endpoint")
        self.tls = bool(config.get("tls"))
        self.tlsVerify = config.get("tls_verify") is not False
        self.batchSize = config.get("batch_size") or 100
        self.flushInterval = float(config.get("flush_interval", 0.1) or 0.0)
        self.maxInFlight: int = config.get("max_in_flight") or 4
        retries = config.get("max_retries")
        self.maxRetries: int = 5 if retries is None else retries
        self.allowNaN = bool(config.get("allow_nan"))
        maxrate = config.get("maxrate")
        if maxrate is not None and maxrate <= 0:
            raise ValueError(f"maxrate must be above 0, got {maxrate!r}")
        self.bucket = (
            TokenBucket(self.clock, maxrate, min(self.batchSize, int(maxrate))) if maxrate else None
        )
        initial = float(config.get("reconnect_initial") or 0.1)
        self._policy = backoffPolicy(
            initialDelay=initial,
            maxDelay=max(initial, float(config.get("reconnect_max") or 3.0)),
            factor=2,
            jitter=lambda: random.random() * initial * 0.1,
        )
        # Stats, for logs and for whoever reports on outputs.
        self.rejected = 0  # replies with ok: false
        self.reconnects = 0
        self.connected = False
        self._window: deque[Flight] = deque()  # sent, replies awaited, oldest first
        self._held: deque[Flight] = deque()  # refused, to be sent again after a backoff
        self._seq = 0
        self._proto: RiemannClientProtocol | None = None
        self._connections = 0
        self._failedInARow = 0
        self._flushDue = False
        self._rateCall: Any = None
        self.ackTimeout = float(config.get("ack_timeout") or 30.0)
        self._ackCall: Any = None
        self._backoffCall: Any = None
        self._service: ClientService | None = None
        self.endpoint: FailoverEndpoint | None = None
        self._logs = RateLimitedLog(self.log, self.clock)

    @property
    def inFlight(self) -> int:
        """Msgs sent and not yet answered."""
        return len(self._window)

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> None:
        if self._service is not None:
            return
        if self.endpointString and (self.tls or self.config.get("ca") or self.config.get("cert")):
            self.log.warn(
                "output {output}: endpoint is set, so tls, ca, cert and key are ignored",
                output=self.name,
            )
        elif self.tls and not self.tlsVerify:
            self.log.warn(
                "output {output}: tls_verify is false: the server's certificate is not checked",
                output=self.name,
            )
        endpoints = clientEndpoints(
            self.reactor,
            self.servers,
            self.port,
            self.endpointString,
            self._tlsOptions if self.tls else None,
        )
        self.endpoint = FailoverEndpoint(endpoints, self._connectFailed)
        self._service = ClientService(
            cast(IStreamClientEndpoint, self.endpoint),
            cast(IProtocolFactory, RiemannClientFactory(self, self.endpoint)),
            retryPolicy=self._reconnectDelay,
            clock=self.clock,
        )
        self._service.startService()

    def _tlsOptions(self, host: str) -> Any:
        config = self.config
        return clientTLSOptions(
            host, config.get("ca"), config.get("cert"), config.get("key"), self.tlsVerify
        )

    def _reconnectDelay(self, attempt: int) -> float:
        # ClientService counts a TLS handshake that failed as a connection
        # made; our own count keeps backing off through those too.
        return self._policy(max(attempt, self._failedInARow) - 1)

    def stop(self) -> Deferred[None]:
        self._stopped = True
        self._cancelFlush()
        for name in ("_rateCall", "_backoffCall"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        self._fireDrained()
        service, self._service = self._service, None
        stopped = service.stopService() if service is not None and service.running else None
        d = stopped if stopped is not None else succeed(None)
        return d.addBoth(self._closeBuffer)

    def _closeBuffer(self, result: object) -> object:
        close = getattr(self.buffer, "close", None)  # a disk buffer's
        if close is not None:
            close()
        return result

    def flush(self) -> Deferred[None]:
        """Send everything buffered now; fires once the server acknowledged it all."""
        if self._stopped or not self.buffer.depth:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        self._pump()
        return d

    def _checkDrained(self) -> None:
        if self._drained and not self.buffer.depth:
            self._fireDrained()

    # -- events in ---------------------------------------------------------------

    def eventsReceived(self, events: list[Event] | EncodedEvents) -> int:
        """Encode and queue events; return how many the buffer kept."""
        self.received += len(events)
        encoded, deadlines, invalid = encodeForQueue(
            events, self.allowNaN, self.expire, self.clock.seconds()
        )
        if invalid:
            self.buffer.recordDrop("invalid", invalid)
        if not encoded:
            return 0
        kept = self.buffer.put(encoded, [len(data) + QUEUE_OVERHEAD for data in encoded], deadlines)
        self._pump()
        return kept

    # -- sending -----------------------------------------------------------------

    def _pump(self) -> None:
        """Send what the window, the rate limit and the batching allow."""
        if self._stopped:
            return
        full = min(self.batchSize, self.bucket.burst) if self.bucket else self.batchSize
        while (
            self._proto is not None
            and self._backoffCall is None
            and len(self._window) < self.maxInFlight
        ):
            if self._held:
                self._send(self._held.popleft())
                continue
            pending = len(self.buffer)
            if not pending:
                break
            if pending < full and not (self._flushDue or self._drained or not self.flushInterval):
                if self._flushCall is None:
                    self._flushCall = self.clock.callLater(self.flushInterval, self._flushNow)
                break
            count = min(full, pending)
            if self.bucket is not None:
                wait = self.bucket.delay(count)
                if wait > 0:
                    if self._rateCall is None:
                        self._rateCall = self.clock.callLater(wait, self._rateReady)
                    break
            batch = self.buffer.take(count)
            if batch is None:  # all of it expired
                break
            if self.bucket is not None:
                self.bucket.spend(len(batch))
            self._seq += 1
            self._send(Flight(self._seq, batch))
        if not len(self.buffer):
            self._flushDue = False
            self._cancelFlush()
        self._checkDrained()

    def _flushNow(self) -> None:
        self._flushCall = None
        self._flushDue = True
        self._pump()

    def _rateReady(self) -> None:
        self._rateCall = None
        self._pump()

    def _backoffDone(self) -> None:
        self._backoffCall = None
        self._pump()

    def _send(self, flight: Flight) -> None:
        transport: Any = self._proto.transport if self._proto is not None else None
        flight.sentAt = self.clock.seconds()
        self._window.append(flight)
        transport.write(frame(msgFromEncoded(flight.batch.events)))
        if self._ackCall is None:
            self._ackCall = self.clock.callLater(self.ackTimeout, self._ackTimedOut)

    def _watchAcks(self) -> None:
        """Time the oldest Msg still awaiting its reply, if any."""
        if self._ackCall is not None and self._ackCall.active():
            self._ackCall.cancel()
        self._ackCall = None
        if self._window:
            due = self._window[0].sentAt + self.ackTimeout - self.clock.seconds()
            self._ackCall = self.clock.callLater(max(0.0, due), self._ackTimedOut)

    def _ackTimedOut(self) -> None:
        """A server that holds the connection but never replies: reconnect."""
        self._ackCall = None
        proto = self._proto
        if proto is None or not self._window:
            return
        self._logs.emit(
            "ack_timeout",
            "output {output}: no reply from {server} in {timeout}s; reconnecting",
            output=self.name,
            server=proto.label,
            timeout=self.ackTimeout,
        )
        proto.transport.abortConnection()  # type: ignore[union-attr]

    # -- replies -------------------------------------------------------------------

    def _reply(self, proto: RiemannClientProtocol, msg: pb.Msg) -> None:
        if proto is not self._proto:
            return
        if not self._window:
            self._logs.emit(
                "unexpected",
                "output {output}: {server} replied to a Msg never sent; ignored",
                output=self.name,
                server=proto.label,
            )
            return
        flight = self._window.popleft()
        self._watchAcks()
        batch = flight.batch
        if msg.ok:
            self.buffer.ack(batch)
            self.sent += len(batch)
            self.acked += 1
            self.lastAckLatency = self.clock.seconds() - flight.sentAt
            if self.config.get("debug"):
                self.log.info("{output}: sent {count} events", output=self.name, count=len(batch))
        else:
            self._refused(proto, flight, msg.error or "no error given")
        self._pump()

    def _refused(self, proto: RiemannClientProtocol, flight: Flight, error: str) -> None:
        self.rejected += 1
        flight.rejections += 1
        fields: dict[str, Any] = dict(
            output=self.name, server=proto.label, count=len(flight.batch), error=error
        )
        if flight.rejections > self.maxRetries:
            self._logs.emit(
                "rejected",
                "output {output}: {server} refused {count} events ({error}); giving up on them",
                **fields,
            )
            self.buffer.discard(flight.batch, "rejected")
            return
        delay = min(self.retryInitial * 2 ** (flight.rejections - 1), self.retryMax)
        self._logs.emit(
            "rejected",
            "output {output}: {server} refused {count} events ({error}); "
            "retry {attempt} of {retries} in {delay:.1f}s",
            attempt=flight.rejections,
            retries=self.maxRetries,
            delay=delay,
            **fields,
        )
        self._held.append(flight)
        if self._backoffCall is None:
            self._backoffCall = self.clock.callLater(delay, self._backoffDone)

    # -- the connection ----------------------------------------------------------------

    def _ready(self, proto: RiemannClientProtocol) -> None:
        self._proto = proto
        self.connected = True
        self._failedInARow = 0
        self._connections += 1
        if self._connections > 1:
            self.reconnects += 1
        self.log.info(
            "output {output}: connected to {server}", output=self.name, server=proto.label
        )
        self._pump()

    def _connectFailed(self, label: str, failure: Failure) -> None:
        self._failedInARow += 1
        self._logs.emit(
            "connect",
            "output {output}: cannot connect to {server}: {error}",
            output=self.name,
            server=label,
            error=failure.getErrorMessage() or repr(failure.value),
        )

    def _lost(self, proto: RiemannClientProtocol, reason: Failure | None) -> None:
        error = "" if reason is None else (reason.getErrorMessage() or repr(reason.value))
        if proto is not self._proto:
            # Never ready: most likely a TLS handshake that failed.
            if not proto.ready and not self._stopped and self.endpoint is not None:
                self.endpoint.rotate()
                self._connectFailed(proto.label, reason or Failure(ConnectionError(error)))
            return
        self._proto = None
        self.connected = False
        if self._ackCall is not None and self._ackCall.active():
            self._ackCall.cancel()
        self._ackCall = None
        flights = sorted([*self._window, *self._held], key=lambda flight: flight.seq)
        self._window.clear()
        self._held.clear()
        if self._backoffCall is not None:
            self._backoffCall.cancel()
            self._backoffCall = None
        for flight in reversed(flights):  # newest first, so the oldest ends at the head
            self.buffer.requeue(flight.batch)
        if not self._stopped:
            self._logs.emit(
                "lost",
                "output {output}: lost the connection to {server} ({error}); "
                "{count} events go back in the queue",
                output=self.name,
                server=proto.label,
                error=error,
                count=sum(len(flight.batch) for flight in flights),
            )
