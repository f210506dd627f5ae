"""Riemann listeners: events from Riemann clients, over TCP and UDP.

Events stay encoded on their way through (`EncodedEvents`): each Msg is
parsed once, to check it, and then passed on as the client's own bytes,
so a relay to a Riemann output does no per-event work; other outputs get
the events decoded once, by the pipeline.  Events pass on as the clients sent
them: the common options ``ttl``, ``tags``, ``attributes`` and
``hostname`` do not apply to them, while ``route``, ``warning`` and
``critical`` do.

Over TCP a Msg is acknowledged once its events are in the buffer of every
output it is routed to.  While an output with ``overflow: block`` lacks
room for all of a Msg's events, the ack is held and the connection stops
reading, so a client that waits for its acks slows down instead of losing
events.  A Msg above 64 KiB or 1,000 events is checked and handed on in
steps (`duct.sources.riemann_large`), so that no Msg holds the reactor for
more than a few milliseconds at a time.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Error as ProtobufError
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from duct.errors import TooLarge
from duct.lib.lograte import RateLimitedLog
from duct.listening import WORKERS_OPTION, CannotListen, listenDatagram, listenNow, serverEndpoint
from duct.objects import Source
from duct.options import Option
from duct.protocol.riemann import MAX_DATAGRAM, EncodedEvents, ack, decodeMsg
from duct.sources.riemann_budget import Budget
from duct.sources.riemann_large import LARGE_FRAME, PIECE_EVENTS, receiveInSteps
from duct.sources.riemann_protocol import RiemannTCPProtocol, _TCPFactory
from duct.stats import Stat, counter, gauge, size

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_PENDING_BYTES",
    "RiemannTCP",
    "RiemannTCPProtocol",
    "RiemannUDP",
]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
"""The largest Msg a TCP client may send, in bytes, unless ``max_frame`` says otherwise."""

DEFAULT_MAX_EVENTS = 100_000
"""The most events one Msg may carry, unless ``max_events`` says otherwise: a
hundred times more than clients batch, and the default ``maxsize`` of a buffer."""

DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
"""The most bytes a TCP listener holds in large frames, across its connections."""

DEFAULT_MAX_CONNECTIONS = 1000
"""The most client connections a TCP listener keeps open."""

DEFAULT_IDLE_TIMEOUT = 300.0
"""Seconds without a byte from a client before its connection is closed."""

MAX_EVENTS_OPTION = Option(
    "max_events",
    "integer",
    DEFAULT_MAX_EVENTS,
    "most events one Msg may carry; a Msg with more is refused (ok: false)",
    minimum=1,
)

OK = ack()
QUERY_REFUSED = ack(
    False,
    "queries are not supported: duct's Riemann listener accepts events only;"
    " send queries to a Riemann server",
)
REFUSED = ack(False, "internal error: the events were not accepted")


def _listenString(port: int | None, interface: str | None) -> str:
    """The ``listen`` endpoint for the original duct's ``port`` (and an ``interface``)."""
    address = (interface or "127.0.0.1").replace(":", "\\:")  # an IPv6 address, escaped
    return f"tcp:{5555 if port is None else port}:interface={address}"


class _RiemannListener(Source):
    """What the TCP and UDP listeners share: decoding, counting, passing events on."""

    # fmt: off
    stats: tuple[Stat, ...] = (
        counter("messages", "frames", "messages", "messages that carried events"),
        counter("malformed", "malformed", "malformed_messages", "messages that did not parse"),
        counter("queries", "queries", "queries_refused", "query messages, refused"),
        counter("oversized", "oversized", "oversized_messages",
                "frames or datagrams over the size limit"),
        counter("held", "held", "held_messages",
                "messages whose events waited for room in a full output"),
        counter("repaired", "repaired", "repaired_events",
                "events whose text was not UTF-8, repaired when decoded"),
        gauge("waiting", "sum", "waiting", "waiting_messages",
              "messages whose events wait for room now"),
        counter("too_many_events", "tooMany", "too_many_events_messages",
                "messages refused for carrying more than max_events events"),
        counter("too_large", "tooLarge", "too_large_messages",
                "messages refused for being larger than a blocking output's buffer"),
        counter("stepped", "stepped", "stepped_messages",
                "large messages checked and handed on in steps"),
        counter("decode_steps", "decodeSteps", "decode_steps",
                "reactor turns taken by large messages"),
    )
    # fmt: on

    options: tuple[Option, ...] = (WORKERS_OPTION,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames = 0
        """Msgs (frames or datagrams) that carried events."""
        self.malformed = 0
        """Msgs that did not parse."""
        self.queries = 0
        """Msgs with a query, which are refused."""
        self.oversized = 0
        """Frames above ``max_frame`` (TCP) or datagrams above 16384 bytes (UDP)."""
        self.held = 0
        """Msgs whose events had to wait in the pipeline for room in a full output."""
        self.waiting = 0
        """Msgs whose events are waiting in the pipeline now, or are handed on in steps."""
        self.repaired = 0
        """Events whose text was not UTF-8, repaired to U+FFFD when the pipeline
        decoded them; bytes relayed undecoded are passed on as they came."""
        self.tooMany = 0
        """Msgs refused for carrying more than ``max_events`` events."""
        self.tooLarge = 0
        """Msgs refused for being larger than a blocking output's buffer can ever hold."""
        self.stepped = 0
        """Large Msgs checked and handed on in steps (`duct.sources.riemann_large`)."""
        self.decodeSteps = 0
        """Reactor turns those steps took."""
        self.maxEvents: int = self.config["max_events"]
        self.rateLog = RateLimitedLog(self.log, self.clock)
        self.port: Any = None
        """The listening port once bound: ``port.getHost().port`` is its number."""
        self.failure: str | None = None
        """Why the last attempt to listen failed, if it did."""

    listens = True

    @property
    def down(self) -> str | None:
        """None while listening; else why not (for ``/health``)."""
        if self.port is not None:
            return None
        return self.failure or f"not listening on {self.address}"

    @property
    def address(self) -> str:
        """What this listener listens on, as configured."""
        raise NotImplementedError

    @property
    def received(self) -> int:
        """Events received in well-formed Msgs: for a listener, the same as ``emitted``."""
        return self.emitted

    def receive(self, data: bytes) -> bytes | Deferred[bytes]:
        """Decode one Msg and pass its events to the pipeline.

        Returns the reply to send at once or, while the events wait for room
        in a full output, a Deferred that fires with the reply once they are
        in every routed buffer.  A Msg above `LARGE_FRAME` bytes or
        `PIECE_EVENTS` events is checked and handed on in steps
        (`duct.sources.riemann_large`), and always answered by a Deferred.
        """
        if len(data) > LARGE_FRAME:
            return receiveInSteps(self, data)
        try:
            msg = decodeMsg(data)
            if msg.HasField("query"):
                self.queries += 1
                return QUERY_REFUSED
            events = EncodedEvents.fromMsg(msg, data)  # the client's bytes, checked once
        except ProtobufError as e:  # DecodeError, or EncodeError for a missing required field
            self.malformed += 1
            return ack(False, f"malformed message: {e}")
        count = len(events)
        if not count:
            return OK
        if count > PIECE_EVENTS and count <= self.maxEvents:
            return receiveInSteps(self, data)
        if count > self.maxEvents:
            return self.refuse(
                "tooMany",
                f"too many events: {count} in one message, above max_events ({self.maxEvents})",
                count,
            )
        if self.debug:
            self.logEvents(events)
        try:
            result = self.queueBack(events)
        except TooLarge as e:
            return self.refuse("tooLarge", str(e), count)
        except Exception:
            self.countMsg(count)
            self.errors += 1
            self.log.failure("riemann listener {source}: events refused", source=self.service)
            return REFUSED
        # countMsg, inlined: this is every Msg's path.
        self.frames += 1
        self.emitted += count
        self.lastEventTime = self.clock.seconds()
        if not isinstance(result, Deferred):
            if events.repaired:
                self.repaired += events.repaired
            return OK
        self.held += 1
        self.waiting += 1
        return result.addBoth(self._settled, events)

    def countMsg(self, count: int) -> None:
        """Count a Msg of ``count`` events on its way to the pipeline."""
        self.frames += 1
        self.emitted += count
        self.lastEventTime = self.clock.seconds()

    def logEvents(self, events: EncodedEvents) -> None:
        """With ``debug``, log each event."""
        for event in events.decode():
            self.log.info("{source}: {event!r}", source=self.service, event=event)

    def refuse(self, stat: str, reason: str, count: int) -> bytes:
        """Count a Msg refused for ``reason`` under the counter ``stat``; its reply."""
        setattr(self, stat, getattr(self, stat) + 1)
        self.rateLog.emit(
            stat,
            "riemann listener {source}: a message of {count} events was refused: {reason}",
            source=self.service,
            count=count,
            reason=reason,
        )
        return ack(False, reason)

    def _settled(self, result: object, events: EncodedEvents) -> bytes:
        self.waiting -= 1
        self.repaired += events.repaired
        if isinstance(result, Failure):
            if result.check(TooLarge):  # routed anew, to a smaller output, while it waited
                return self.refuse("tooLarge", result.getErrorMessage(), len(events))
            self.errors += 1
            self.log.failure(
                "riemann listener {source}: events lost in the pipeline",
                result,
                source=self.service,
            )
            return REFUSED
        return OK


class RiemannTCP(_RiemannListener):
    """Receives events from Riemann clients over TCP, and acknowledges them.

    Each frame is a 4-byte big-endian length and a Riemann ``Msg``.  A Msg
    with events is answered ``ok: true`` once its events are in the buffer
    of every output it is routed to.  While an output with
    ``overflow: block`` is full, the ack is held and the connection is not
    read until there is room: the client slows down, and no event is
    dropped.  Replies on a connection keep the order of its frames.

    A Msg that does not parse is answered ``ok: false`` with the parser's
    error, and the connection stays usable.  A query is answered
    ``ok: false``: queries are not supported.  A frame above ``max_frame``
    is answered ``ok: false``, and its connection is closed.  The default,
    16 MiB, is far above what clients batch (a hundred events take about
    10 KiB) and bounds the memory one connection can hold.

    Limits, each answered so that the client knows why:

    - ``max_events`` (default 100000): a Msg with more events is answered
      ``ok: false`` and counted in ``too_many_events``; the connection
      stays usable.
    - A Msg with more events than the ``maxsize`` of an output it is routed
      to with ``overflow: block``, or more bytes than its ``max_bytes``,
      could never fit: it is answered ``ok: false`` naming the output and
      the limit, and counted in ``too_large``.  One that fits, but not yet,
      waits for room for all its events; no buffer goes over its bounds.
    - A Msg above 64 KiB or 1,000 events is checked a step at a time and
      handed on in pieces of at most 1,000 events, one per reactor turn;
      it is answered once every piece is in every routed buffer
      (``stepped``, ``decode_steps``).
    - ``max_pending_bytes`` (default 64 MiB, at least ``max_frame``):
      the bytes held in frames above 64 KiB, from when their length is
      read until their events are handed on, across every connection.
      Past it, a connection starting such a frame waits, paused, for room
      (``budget_pauses``; ``pending_bytes`` is what is held now).
    - ``max_connections`` (default 1000): one more connection is answered
      with one ``ok: false`` Msg saying why and closed
      (``refused_connections``).
    - ``idle_timeout`` (default 300 seconds; 0 for none): a connection that
      sends nothing for that long, while it is free to send, is closed
      (``idle_closed``); while its ack is held it is never idle.

    ``listen`` takes any Twisted server endpoint string, for example
    ``tcp:5555:interface=0.0.0.0`` or
    ``ssl:5556:privateKey=key.pem:certKey=cert.pem``.  The original duct's
    ``port`` is taken too: it listens on that port on 127.0.0.1, or on
    ``interface`` if given (the original listened on every interface).  On stop, duct stops
    accepting connections and closes the open ones, each once the frames
    it had already read are acknowledged.

    Events pass on as the clients sent them: the common options ``ttl``,
    ``tags``, ``attributes`` and ``hostname`` do not apply to them.
    """

    # fmt: off
    stats = (
        gauge("connections", "sum", size("connections"), "connections", "client connections open"),
        counter("refused_connections", "refusedConnections", "refused_connections",
                "connections refused beyond max_connections"),
        counter("idle_closed", "idleClosed", "idle_closed_connections",
                "connections closed after idle_timeout without a byte"),
        counter("budget_pauses", "budgetPauses", "budget_pauses",
                "times a connection waited for max_pending_bytes to have room"),
        gauge("pending_bytes", "sum", "budget.used", "pending_bytes",
              "bytes reserved by large frames being read or handed on"),
    )
    # fmt: on

    options = (
        Option(
            "listen",
            "string",
            "tcp:5555:interface=127.0.0.1",
            "Twisted server endpoint, e.g. tcp:5555:interface=0.0.0.0 or ssl:5556:...",
        ),
        Option(
            "port",
            "integer",
            None,
            "the original's key: sets listen to tcp:PORT on interface (127.0.0.1 unless given)",
            minimum=0,
            alias_of="listen",
            convert=lambda port, config: _listenString(port, config.get("interface")),
        ),
        Option(
            "interface",
            "string",
            None,
            "with port: the address to listen on (0.0.0.0 for every one); sets listen",
            alias_of="listen",
            convert=lambda interface, config: _listenString(config.get("port"), interface),
        ),
        Option(
            "max_frame",
            "integer",
            DEFAULT_MAX_FRAME,
            "largest Msg a client may send, in bytes; a larger one closes its connection",
            minimum=1,
        ),
        MAX_EVENTS_OPTION,
        Option(
            "max_pending_bytes",
            "integer",
            DEFAULT_MAX_PENDING_BYTES,
            "most bytes held in large frames across connections (at least max_frame);"
            " beyond it, connections wait",
            minimum=1,
        ),
        Option(
            "max_connections",
            "integer",
            DEFAULT_MAX_CONNECTIONS,
            "most client connections open at once; one more is refused and closed",
            minimum=1,
        ),
        Option(
            "idle_timeout",
            "duration",
            DEFAULT_IDLE_TIMEOUT,
            "close a connection that sends nothing for this long (0: never)",
            minimum=0,
        ),
    )

    @classmethod
    def optionProblems(cls, config: dict[str, Any]) -> list[tuple[str, str]]:
        """What is wrong between options, once each is valid: (key, message) pairs."""
        pending = config.get("max_pending_bytes", DEFAULT_MAX_PENDING_BYTES)
        frame = config.get("max_frame", DEFAULT_MAX_FRAME)
        if isinstance(pending, int) and isinstance(frame, int) and pending < frame:
            return [
                (
                    "max_pending_bytes",
                    f"must be at least max_frame ({frame}), got {pending}: a frame of"
                    " max_frame bytes could never be read",
                )
            ]
        return []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, message in self.optionProblems(self.config):
            raise ValueError(f"{key}: {message}")
        self.listen: str = self.config["listen"]
        self.maxFrame: int = self.config["max_frame"]
        self.maxConnections: int = self.config["max_connections"]
        self.idleTimeout: float = self.config["idle_timeout"]
        self.budget = Budget(self.config["max_pending_bytes"])
        """Bytes of large frames held across connections (`duct.sources.riemann_budget`)."""
        self.refusedConnections = 0
        self.idleClosed = 0
        self.budgetPauses = 0
        self.factory = _TCPFactory(self)
        self.listening: Deferred[Any] | None = None
        """Fires with the port once bound, or with None if listening failed later (logged)."""
        self.connections: set[RiemannTCPProtocol] = set()

    @property
    def address(self) -> str:
        return self.listen

    def startTimer(self) -> None:
        """Listen on ``listen``; raises `CannotListen` if it cannot (a port in use)."""
        if self.port is not None or (self.listening is not None and not self.listening.called):
            return  # listening, or about to
        endpoint = serverEndpoint(self.duct.reactor, self.listen)
        self.failure = None
        try:
            port, pending = listenNow(endpoint, self.factory, "listen", self.listen)
        except CannotListen as e:
            self.errors += 1
            self.failure = str(e)
            raise
        if port is not None:
            self.listening = succeed(self._listening(port))
        elif pending is not None:  # an endpoint that binds later: a failure is logged
            self.listening = pending.addCallbacks(self._listening, self._listenFailed)

    def _listening(self, port: Any) -> Any:
        self.port = port
        self.log.info(
            "riemann listener {source} listening on {address}",
            source=self.service,
            address=port.getHost(),
        )
        return port

    def _listenFailed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        self.errors += 1
        self.failure = f"cannot listen on {self.listen}: {failure.getErrorMessage()}"
        self.log.failure(
            "riemann listener {source} cannot listen on {listen}",
            failure,
            source=self.service,
            listen=self.listen,
        )

    def stopTimer(self) -> Deferred[Any]:
        """Stop accepting connections and close the open ones once answered.

        The Deferred fires once the port is closed.  It does not wait for the
        connections, whose held acks may wait for a full output to drain.
        """
        for connection in list(self.connections):
            connection.closeWhenIdle()
        listening, self.listening = self.listening, None
        if listening is not None and not listening.called:
            listening.cancel()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)


class _UDPProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, source: RiemannUDP) -> None:
        self.source = source

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if len(datagram) > MAX_DATAGRAM:
            self.source.oversized += 1
            return
        source = self.source
        if source.waiting >= source.maxWaiting:
            # A UDP client cannot be slowed down: past this bound, shed load
            # rather than let memory grow while an output is full.
            source.shed += 1
            source.shedLog.emit(
                "shed",
                "riemann listener {source}: outputs full, {count} datagrams dropped so far",
                source=source.service,
                count=source.shed,
            )
            return
        source.receive(datagram)


class RiemannUDP(_RiemannListener):
    """Receives events from Riemann clients over UDP.

    Each datagram is one unframed ``Msg`` of at most 16384 bytes, as for
    Riemann's server.  There is no reply: a larger datagram is dropped and
    counted in ``oversized``, a malformed one in ``malformed``, a query in
    ``queries``.  Nor can a UDP client be slowed down: while an output with
    ``overflow: block`` is full, the events of each datagram wait in the
    pipeline until there is room (``waiting`` counts those datagrams), up to
    ``max_waiting`` datagrams; beyond that, datagrams are dropped, counted
    in ``shed`` and logged at a limited rate, so memory stays bounded.

    As over TCP, a datagram with more than ``max_events`` events (default
    100000) is dropped and counted in ``too_many_events``; one larger than
    the buffer of an output with ``overflow: block`` can ever hold, in
    ``too_large``; and one of more than 1,000 events is handed on in pieces,
    one per reactor turn.

    It listens on ``interface`` (``0.0.0.0`` or ``::`` for every
    interface) and ``port``, or on ``listen``
    (``udp:PORT:interface=ADDRESS``) if given.  As over TCP, events pass on
    as the clients sent them.
    """

    stats = (
        counter("shed", "shed", "shed_datagrams", "datagrams dropped while outputs were full"),
    )

    datagrams = True
    """It listens on a ``udp:`` endpoint (for the workers that share it)."""

    options = (
        Option("interface", "string", "127.0.0.1", "address to listen on, 0.0.0.0 for every one"),
        Option("port", "integer", 5555, "UDP port to listen on (0: any free port)", minimum=0),
        Option(
            "listen",
            "string",
            None,
            "udp:PORT:interface=ADDRESS, instead of port and interface",
        ),
        Option("max_waiting", "integer", 1000, "datagrams held while outputs are full", minimum=1),
        MAX_EVENTS_OPTION,
    )

    @classmethod
    def optionProblems(cls, config: dict[str, Any]) -> list[tuple[str, str]]:
        """A ``listen`` that is not a UDP endpoint."""
        from duct.workers.endpoints import parseUDP

        listen = config.get("listen")
        if isinstance(listen, str):
            try:
                parseUDP(listen)
            except ValueError as e:
                return [("listen", str(e))]
        return []

    @classmethod
    def listenOf(cls, config: dict[str, Any]) -> str:
        """The UDP endpoint ``config`` listens on: ``listen``, or ``port`` and ``interface``."""
        from duct.workers.endpoints import escape

        if config.get("listen"):
            return str(config["listen"])
        port = 5555 if config.get("port") is None else config["port"]
        return f"udp:{port}:interface={escape(config.get('interface') or '127.0.0.1')}"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listen: str | None = self.config["listen"]
        self.interface: str = self.config["interface"]
        self.portNumber: int = self.config["port"]
        self.maxWaiting: int = self.config["max_waiting"]
        self.shed = 0
        self.shedLog = RateLimitedLog(self.log, self.clock)
        self.protocol = _UDPProtocol(self)

    @property
    def address(self) -> str:
        return self.listen or f"udp:{self.portNumber}:interface={self.interface}"

    def startTimer(self) -> None:
        """Start listening; raises `CannotListen` if the port cannot be bound."""
        if self.port is not None:
            return
        try:
            # Read whole datagrams: an oversized one is then seen and counted,
            # rather than truncated into a malformed one.
            self.port = listenDatagram(
                self.duct.reactor, self.listenOf(self.config), self.protocol, 65536
            )
        except CannotListen as e:
            self.errors += 1
            self.failure = f"cannot listen on {self.address}: {e.reason}"
            key = "listen" if self.listen else "port"
            raise CannotListen(key, self.address, e.reason) from None
        self.log.info(
            "riemann listener {source} listening on {address}",
            source=self.service,
            address=self.port.getHost(),
        )

    def stopTimer(self) -> Deferred[Any]:
        """Stop listening; the Deferred fires once the port is closed."""
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)
