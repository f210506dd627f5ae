"""A StatsD listener: counters, gauges, timers and sets over UDP and TCP, flushed each interval."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols.basic import LineOnlyReceiver

from duct.lib.statsd import Buckets, Key, Malformed, parseLine, percentile
from duct.listening import CannotListen
from duct.objects import Event, Source
from duct.options import Option
from duct.stats import counter


class _Datagrams(DatagramProtocol):
    def __init__(self, source: StatsD) -> None:
        self.source = source

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.source.received(datagram.split(b"\n"))


class _Lines(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024
    source: StatsD

    def lineReceived(self, line: bytes) -> None:
        self.source.received([line])

    def lineLengthExceeded(self, line: bytes) -> None:
        self.source.malformed += 1
        transport: Any = self.transport
        transport.loseConnection()


class _LineFactory(Factory):
    def __init__(self, source: StatsD) -> None:
        self.source = source

    def buildProtocol(self, addr: Any) -> _Lines:
        protocol = _Lines()
        protocol.source = self.source
        return protocol


class StatsD(Source):
    """Listens for StatsD on UDP (and TCP) ``port``; every ``interval`` emits what arrived.

    A counter ``name`` is ``{service}.name``, per second (sample rates
    ``|@0.1`` scaled up); a gauge its value (``+3``/``-3`` change it); a
    timer ``.count``, ``.mean``, ``.min``, ``.max`` and each of
    ``percentiles`` (``.p90``); a set ``.count`` of its distinct members.
    DogStatsD tags (``|#k:v``) are attributes.  At most ``max_keys`` series
    are held between flushes: a sample for a new one past that is refused
    and counted (``refused``), as is each malformed line (``malformed``).
    """

    listens = True
    options = (
        Option("port", "integer", 8125, "port to listen on (0: any free one)", minimum=0),
        Option("interface", "string", "127.0.0.1", "address to listen on"),
        Option("tcp", "boolean", False, "listen on TCP too, one line per sample"),
        Option("max_keys", "integer", 10000, "most series held between flushes", minimum=1),
        Option("max_values", "integer", 10000, "most timer values or set members per series",
               minimum=1),
        Option("percentiles", "list", [90], "timer percentiles to emit"),
    )  # fmt: skip
    stats = (
        counter("samples", "samples", "samples", "samples received"),
        counter("malformed", "malformed", "malformed", "lines that are not StatsD"),
        counter("refused", "buckets.refused", "refused", "samples refused past max_keys"),
    )

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        c = self.config
        self.buckets = Buckets(c["max_keys"], c["max_values"])
        self.samples = 0
        self.malformed = 0
        self.ports: list[Any] = []
        self.failure: str | None = None

    @property
    def down(self) -> str | None:
        return None if self.ports else self.failure or "not listening"

    def received(self, lines: list[bytes]) -> None:
        for raw in lines:
            if not raw.strip():
                continue
            try:
                samples = parseLine(raw.decode("utf-8"))
            except (Malformed, UnicodeDecodeError):
                self.malformed += 1
                continue
            for sample in samples:
                self.samples += 1
                self.buckets.add(sample)

    def startTimer(self) -> None:
        """Bind UDP (and TCP) now, raising `CannotListen` if it cannot; then flush each interval."""
        reactor, port, interface = self.duct.reactor, self.config["port"], self.config["interface"]
        try:
            udp = reactor.listenUDP(port, _Datagrams(self), interface=interface,
                                    maxPacketSize=65536)  # fmt: skip
            self.ports.append(udp)
            if self.config["tcp"]:
                factory = _LineFactory(self)
                self.ports.append(reactor.listenTCP(udp.getHost().port if port == 0 else port,
                                                    factory, interface=interface))  # fmt: skip
        except CannotListenError as e:
            self.failure = f"cannot listen on {interface}:{port}: {e}"
            for bound in self.ports:
                bound.stopListening()
            self.ports = []
            raise CannotListen("port", f"{interface}:{port}", str(e)) from None
        self.log.info("statsd listener {source} on port {port}", source=self.service,
                      port=self.ports[0].getHost().port)  # fmt: skip
        self.t.start(self.interval, now=False)

    def stopTimer(self) -> Deferred[Any]:
        stopped = super().stopTimer()
        ports, self.ports = self.ports, []
        if not ports:
            return stopped
        return DeferredList([stopped, *(maybeDeferred(p.stopListening) for p in ports)])

    def get(self) -> list[Event]:
        events = self.flush()
        self.buckets.flush()
        return events

    def flush(self) -> list[Event]:
        b, events = self.buckets, []
        for key, total in b.counters.items():
            events.append(self._event(key, "", total / self.interval))
        for key, value in b.gauges.items():
            events.append(self._event(key, "", value))
        for key, values in b.timers.items():
            ordered = sorted(values)
            events += [self._event(key, ".count", len(ordered)),
                       self._event(key, ".mean", sum(ordered) / len(ordered)),
                       self._event(key, ".min", ordered[0]),
                       self._event(key, ".max", ordered[-1])]  # fmt: skip
            for p in self.config["percentiles"]:
                name = f".p{float(p):g}".replace(".", "_")[1:]
                events.append(self._event(key, f".{name}", percentile(ordered, float(p))))
        for key, members in b.sets.items():
            events.append(self._event(key, ".count", len(members)))
        return events

    def _event(self, key: Key, suffix: str, value: float) -> Event:
        name, kind, tags = key
        return self.createEvent("ok", f"statsd {kind} {name}", value, name + suffix,
                                attributes=dict(tags) or None)  # fmt: skip
