"""Send events to Riemann: over TCP or TLS with acknowledgements (`RiemannTCP`), or UDP."""

from __future__ import annotations

import random
from typing import Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure

from duct.buffers.memory import Batch, MemoryBuffer
from duct.lib.tls import clientTLSOptions
from duct.lib.tokenbucket import TokenBucket
from duct.objects import Event, Output
from duct.options import Option
from duct.output import Refused
from duct.outputs.riemann_client import (
    FailoverEndpoint,
    RiemannClientFactory,
    RiemannClientProtocol,
    clientEndpoints,
)
from duct.outputs.riemann_common import encodeForQueue, entries, hostList
from duct.outputs.riemann_udp import RiemannUDP
from duct.protocol.riemann import ENCODED_OVERHEAD, EncodedEvents, msgFromEncoded, pb, sizesOf

__all__ = ["RiemannTCP", "RiemannUDP"]


class RiemannTCP(Output):
    """Send events to Riemann over TCP or TLS, and wait for its acknowledgements.

    Events are queued encoded and sent in Msgs of up to `batch_size` (here
    1000 by default; a partial Msg waits at most `flush_interval`, 0.1 s,
    and a backlog goes in full Msgs at once).  A Msg relayed from a Riemann
    listener is passed on byte for byte and, in a memory buffer, queued
    whole: several are sent joined into one Msg, one larger than
    `batch_size` goes alone, and a full buffer drops whole Msgs (each of
    their events counted).  Up to `max_in_flight` Msgs may wait for their
    reply at once; Riemann answers in order, so each reply settles the
    oldest.  An event leaves the
    buffer only when the server replied `ok: true`.  Riemann answers
    `ok: false` when it could not process what a Msg holds, so a refused
    Msg is split in halves, each sent again at once, until the events (or
    relayed Msgs) it refuses stand alone; those are dropped, counted as
    `rejected` and logged with the server's error, and every other event
    is delivered.  With `max_retries` above 0, each is first sent again
    that many times, after `retry_initial` doubling up to `retry_max`,
    while the events behind it go on.  An event that cannot be encoded
    (text that is not valid Unicode) is dropped as it arrives, counted as
    `rejected` too.  When the
    connection is lost, every Msg still waiting goes back to the head of the
    buffer, in order, and is sent again once connected: delivery is at least
    once, and a reconnection may repeat up to `max_in_flight` Msgs (each of
    `batch_size` events, or one larger relayed Msg).

    `server` may list several hosts: after a failed attempt the next one is
    tried.  With `tls`, the server's certificate is checked against `ca` (or
    the system's trust store) and its name against the host; `cert` and
    `key` present a client certificate.  An `endpoint` string (Twisted's
    syntax, e.g. `tls:riemann.example:5554:caCertsDir=/etc/ssl/certs`)
    replaces `server`, `port` and the TLS options.  With `expire` (and a
    memory buffer), events whose time plus ttl has passed are dropped rather
    than sent (counted as `expired`).  NaN and infinite metrics are dropped
    (counted as `invalid`) unless `allow_non_finite`; events relayed encoded are
    not checked.  With `allow_nan: false`, events that have no metric at
    all are dropped too (counted as `invalid`).

    The original duct's names are taken: `interval` is `flush_interval`
    (seconds between sends), `pressure` caps the Msgs awaiting their ack
    (`max_in_flight` is `pressure + 1`; -1, no limit, keeps
    `max_in_flight`), `failover: true` with a list in `server` is what
    a list always does here, and `maxrate: 0` is no limit.  The original
    had no `allow_non_finite`: its `allow_nan` was about events with no
    metric, and so it is here.
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
        Option("batch_size", "integer", 1000, "most events in one Msg", minimum=1),
        Option("flush_interval", "number", 0.1, "seconds a partial Msg may wait", minimum=0),
        Option("max_in_flight", "integer", 8, "Msgs sent and not yet acknowledged", minimum=1),
        Option(
            "max_retries",
            "integer",
            0,
            "resends of a single event refused with ok: false before it is dropped "
            "(0: dropped at once; the rest of its Msg is delivered either way)",
            minimum=0,
        ),
        Option(
            "ack_timeout",
            "number",
            30.0,
            "seconds to await a reply before reconnecting",
            minimum=0.01,
        ),
        Option("expire", "boolean", False, "drop queued events older than their ttl"),
        Option(
            "allow_nan",
            "boolean",
            True,
            "send events that have no metric; false drops them (counted as invalid)",
        ),
        Option(
            "allow_non_finite",
            "boolean",
            False,
            "send NaN and infinite metrics (dropped and counted as invalid otherwise)",
        ),
        Option(
            "maxrate", "number", None, "most events sent a second (0 or unset: no limit)", minimum=0
        ),
        Option(
            "interval",
            "number",
            None,
            "the original's name for flush_interval: seconds between sends",
            minimum=0,
            alias_of="flush_interval",
        ),
        Option(
            "pressure",
            "integer",
            None,
            "the original's cap on Msgs awaiting their ack: sets max_in_flight to pressure + 1"
            " (-1: no cap, max_in_flight stays)",
            minimum=-1,
            alias_of="max_in_flight",
            convert=lambda pressure, config: None if pressure < 0 else pressure + 1,
        ),
        Option(
            "failover",
            "boolean",
            False,
            "the original's switch for a list in server; a list is always tried in turn here",
        ),
        Option("reconnect_initial", "number", 0.1, "seconds before reconnecting", minimum=0.01),
        Option("reconnect_max", "number", 3.0, "longest wait to reconnect", minimum=0.01),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        config = self.config
        self.reactor: Any = getattr(duct, "reactor", None) or self.clock
        self.servers = hostList(config["server"])
        self.port: int = config["port"]
        self.endpointString: str | None = config["endpoint"]
        self.tls: bool = config["tls"]
        self.tlsVerify: bool = config["tls_verify"]
        self.maxRetries: int = config["max_retries"]
        self.ackTimeout = float(config["ack_timeout"])
        self.expire: bool = config["expire"]
        self.allowMissing: bool = config["allow_nan"]
        self.allowNaN: bool = config["allow_non_finite"]
        maxrate = config["maxrate"]
        if maxrate is not None and maxrate < 0:
            raise ValueError(f"maxrate must be 0 (no limit) or more, got {maxrate!r}")
        if maxrate:
            self.bucket = TokenBucket(self.clock, maxrate, min(self.batchSize, int(maxrate)))
        initial = float(config["reconnect_initial"])
        self._policy = backoffPolicy(
            initialDelay=initial,
            maxDelay=max(initial, float(config["reconnect_max"])),
            factor=2,
            jitter=lambda: random.random() * initial * 0.1,
        )
        self.reconnects = 0
        self.connected = False
        self.connection: RiemannClientProtocol | None = None
        """The connection Msgs go to, once ready."""
        self._connections = 0
        self._service: ClientService | None = None
        self.endpoint: FailoverEndpoint | None = None
        self.grouped: bool = isinstance(self.buffer, MemoryBuffer) and self.buffer.grouped
        """Whether the buffer holds Msgs (relayed whole) rather than single events."""

    def bufferOptions(self) -> dict[str, Any]:
        # In memory, a relayed Msg is queued and sent whole: one item, however
        # many events.  Expiring is per event, so it queues single events.
        return {"expiring": self.config["expire"], "grouped": True}

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> None:
        if self._service is not None:
            return
        config = self.config
        if self.endpointString and (self.tls or config["ca"] or config["cert"]):
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
        factory = RiemannClientFactory(self.endpoint, self.clock, self.ackTimeout, self.name)
        self._service = ClientService(
            cast(IStreamClientEndpoint, self.endpoint),
            cast(IProtocolFactory, factory),
            retryPolicy=lambda attempt: self._policy(attempt - 1),
            clock=self.clock,
            prepareConnection=self._prepare,
        )
        self._service.startService()

    def _tlsOptions(self, host: str) -> Any:
        config = self.config
        return clientTLSOptions(host, config["ca"], config["cert"], config["key"], self.tlsVerify)

    def _prepare(self, protocol: Any) -> Deferred[None]:
        """A connection counts once it is ready: for TLS, once the handshake is done."""
        return protocol.whenReady().addCallback(self._ready)

    def closeClient(self) -> Deferred[None]:
        service, self._service = self._service, None
        stopped = service.stopService() if service is not None and service.running else None
        return stopped if stopped is not None else succeed(None)

    # -- events in ---------------------------------------------------------------

    def eventsReceived(self, events: list[Event] | EncodedEvents) -> int:
        """Encode and queue events; return how many the buffer kept."""
        count = len(events)
        self.received += count
        if self.grouped and not self.expire and isinstance(events, EncodedEvents):
            payload = events.payload
            kept = self.buffer.putItem(payload, len(payload) + ENCODED_OVERHEAD, count)
            self.resumeWriting()
            return kept
        encoded, deadlines, invalid, failed, error = encodeForQueue(
            events, self.allowNaN, self.expire, self.clock.seconds(), self.allowMissing
        )
        if invalid:
            self.buffer.recordDrop("invalid", invalid)
        if failed:
            self.dropUnencodable(events, failed, error)
        if not encoded:
            return 0
        if self.grouped:
            encoded = entries(encoded)
        kept = self.buffer.put(encoded, sizesOf(encoded), deadlines)
        self.resumeWriting()
        return kept

    def batchEvents(self, batch: Batch) -> EncodedEvents:
        if self.grouped:
            return EncodedEvents.fromPayload(b"".join(batch.events), len(batch))
        return EncodedEvents(list(batch.events))

    # -- the writer's hooks --------------------------------------------------------

    def canWrite(self) -> bool:
        return self.connection is not None

    def writeBatch(self, events: list[bytes]) -> Deferred[None]:
        """Send one Msg; fires on ``ok: true``, fails on ``ok: false``, timeout or loss."""
        connection = self.connection
        if connection is None:
            raise ConnectionError("not connected")
        d = connection.sendMsg(events if self.grouped else msgFromEncoded(events))
        return d.addCallback(self._replied, connection)

    def _replied(self, msg: pb.Msg, connection: RiemannClientProtocol) -> None:
        if not msg.ok:
            raise Refused(msg.error or "no error given", connection.label)

    def describeItem(self, item: Any) -> str:
        """An encoded event (or a relayed Msg) as host and service, for the log."""
        try:
            if self.grouped:
                msg = pb.Msg.FromString(item)
                if not msg.events:
                    return f"a Msg of {len(item)} bytes"
                first, count = msg.events[0], len(msg.events)
                more = f" and {count - 1} more" if count > 1 else ""
                return f"{first.host} {first.service}{more}"
            event = pb.Event.FromString(item)
            return f"{event.host} {event.service}"
        except Exception:
            return super().describeItem(item)

    # -- the connection ----------------------------------------------------------------

    def _ready(self, connection: RiemannClientProtocol) -> None:
        self.connection = connection
        self.connected = True
        self._connections += 1
        if self._connections > 1:
            self.reconnects += 1
        self.log.info(
            "output {output}: connected to {server}", output=self.name, server=connection.label
        )
        connection.notifyLost().addCallback(self._lost)
        self.resumeWriting()

    def _connectFailed(self, label: str, failure: Failure) -> None:
        self.rateLog.emit(
            "connect",
            "output {output}: cannot connect to {server}: {error}",
            output=self.name,
            server=label,
            error=failure.getErrorMessage() or repr(failure.value),
        )

    def _lost(self, connection: RiemannClientProtocol) -> None:
        if connection is not self.connection:
            return
        self.connectionLost(connection.label, connection.lostReason)
