"""An sFlow v5 collector: interface rates from counter samples, traffic breakdowns from flows."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.protocol import DatagramProtocol

from duct.lib.lograte import RateLimitedLog
from duct.lib.reversedns import ReverseNames
from duct.listening import CannotListen, listenDatagram
from duct.objects import Event, Source
from duct.options import Option
from duct.protocol.sflow import Datagram, Malformed, decode
from duct.stats import counter

_Key = tuple[str, int]
"""An interface: the agent's address and the ifIndex."""


class _Receiver(DatagramProtocol):
    def __init__(self, source: sFlow) -> None:
        self.source = source

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.source.received(datagram, addr[0])


class sFlow(Source):  # noqa: N801 (the original's name, which configurations use)
    """Collects sFlow v5 on UDP ``port``: interface rates and, each interval, who the traffic was.

    From generic interface counter samples, ``{service}.{ifindex}.inOctets``
    and ``.outOctets`` in bytes per second, emitted when the second sample
    of an interface arrives and each one after.  From flow samples whose
    sampled header holds IPv4, every ``interval`` and per input interface:
    ``{service}.{ifindex}.ip.{address}.src`` and ``.dst``, and
    ``.port.{port}.src`` and ``.dst`` for TCP and UDP, in bytes per second
    estimated from the samples (IPv4 length times the sampling rate, over
    the interval).  The host of each event is the agent's address, or with
    ``dnslookup`` its name from a reverse lookup (cached, never waited on
    for more than ``dns_timeout`` seconds).  At most ``max_keys``
    interfaces, addresses and ports are held between flushes; a sample that
    would add one more is counted (``refused``); a datagram that does not
    decode is counted (``malformed``) and logged at a bounded rate.
    """

    listens = True
    options = (
        Option("port", "integer", 6343, "UDP port to listen on (0: any free one)", minimum=0),
        Option("interface", "string", "127.0.0.1", "address to listen on"),
        Option("dnslookup", "boolean", True, "name each agent by a reverse DNS lookup"),
        Option("dns_timeout", "number", 5.0, "seconds a reverse lookup may take", above=0),
        Option("dns_cache", "integer", 1000, "most agent names kept", minimum=1),
        Option("max_keys", "integer", 10000,
               "most interfaces, addresses and ports held between flushes", minimum=1),
    )  # fmt: skip
    stats = (
        counter("datagrams", "datagrams", "datagrams", "sFlow datagrams received"),
        counter("malformed", "malformed", "malformed", "datagrams that did not decode"),
        counter("skipped", "skipped", "skipped", "samples and records of unknown types, skipped"),
        counter("refused", "refused", "refused", "samples refused past max_keys"),
    )

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        c = self.config
        self.maxKeys: int = c["max_keys"]
        self.datagrams = self.malformed = self.skipped = self.refused = 0
        self.counters: dict[_Key, tuple[int, int, float]] = {}
        """The last inOctets, outOctets and arrival time of each interface."""
        self.traffic: dict[_Key, dict[tuple[str, str, str], float]] = defaultdict(dict)
        """Bytes seen this interval per interface, by (``ip``/``port``, value, direction)."""
        self.held = 0
        self.names = ReverseNames(duct.reactor, self.clock, size=c["dns_cache"],
                                  timeout=c["dns_timeout"])  # fmt: skip
        self.port: Any = None
        self._badLog = RateLimitedLog(self.log, self.clock, interval=60.0)

    @property
    def down(self) -> str | None:
        return None if self.port is not None else "not listening"

    def startTimer(self) -> None:
        """Bind now (`duct.listening.CannotListen` if it cannot); then flush each interval."""
        interface = self.config["interface"].replace(":", "\\:")
        listen = f"udp:{self.config['port']}:interface={interface}"
        try:
            self.port = listenDatagram(self.duct.reactor, listen, _Receiver(self), 65536)
        except CannotListen as e:  # named by the option a user wrote
            raise CannotListen("port", e.address, e.reason) from None
        self.log.info("sFlow collector {source} on port {port}", source=self.service,
                      port=self.port.getHost().port)  # fmt: skip
        self.t.start(self.interval, now=False)

    def stopTimer(self) -> Deferred[Any]:
        stopped = super().stopTimer()
        port, self.port = self.port, None
        if port is None:
            return stopped
        return DeferredList([stopped, maybeDeferred(port.stopListening)])

    # -- receiving -----------------------------------------------------------

    def received(self, data: bytes, peer: str) -> None:
        """Decode one datagram from ``peer`` and take in what it holds; never raises."""
        try:
            datagram = decode(data)
        except Malformed as e:
            self.malformed += 1
            self._badLog.emit("malformed", "sFlow {source}: a datagram from {peer} did not"
                              " decode: {why}", source=self.service, peer=peer,
                              why=str(e))  # fmt: skip
            return
        self.datagrams += 1
        self.skipped += datagram.skipped
        agent = datagram.agent if datagram.agent not in ("", "0.0.0.0") else peer
        self._flows(agent, datagram)
        self._counters(agent, datagram)

    def _hold(self, table: dict[Any, Any], key: Any) -> bool:
        """Whether ``key`` is in ``table`` or may be added to it within ``max_keys``."""
        if key in table:
            return True
        if self.held >= self.maxKeys:
            self.refused += 1
            return False
        self.held += 1
        return True

    def _flows(self, agent: str, datagram: Datagram) -> None:
        for flow in datagram.flows:
            packet = flow.packet
            if packet is None:
                continue
            interface = (agent, flow.inputIndex)
            if not self._hold(self.traffic, interface):
                continue
            seen = self.traffic[interface]
            weight = packet.length * max(flow.samplingRate, 1)
            keys = [("ip", packet.src, "src"), ("ip", packet.dst, "dst")]
            if packet.sport is not None and packet.dport is not None:
                keys += [("port", str(packet.sport), "src"), ("port", str(packet.dport), "dst")]
            for key in keys:
                if self._hold(seen, key):
                    seen[key] = seen.get(key, 0.0) + weight

    def _counters(self, agent: str, datagram: Datagram) -> None:
        now = self.clock.seconds()
        rates: list[tuple[str, str, float]] = []
        for c in datagram.counters:
            interface = (agent, c.index)
            last = self.counters.get(interface)
            if last is None and not self._hold(self.counters, interface):
                continue
            self.counters[interface] = (c.inOctets, c.outOctets, now)
            if last is None:
                continue
            elapsed = now - last[2]
            deltaIn, deltaOut = c.inOctets - last[0], c.outOctets - last[1]
            if elapsed <= 0 or deltaIn < 0 or deltaOut < 0:  # too soon, or the agent restarted
                continue
            for name, delta in (("inOctets", deltaIn), ("outOctets", deltaOut)):
                rate = delta / elapsed
                rates.append((f"{c.index}.{name}",
                              f"sFlow index {c.index} {name}/sec {rate:0.2f}", rate))  # fmt: skip
        if rates:
            self._queueFor(agent, rates, now)

    # -- emitting ------------------------------------------------------------

    def _queueFor(self, agent: str, items: list[tuple[str, str, float]], evtime: float) -> None:
        """Queue ``(prefix, description, metric)`` events, named for ``agent`` once it is known."""

        def send(host: str) -> None:
            self.queueBack([self.createEvent("ok", description, metric, prefix, hostname=host,
                                             evtime=evtime)
                            for prefix, description, metric in items])  # fmt: skip

        if not self.config["dnslookup"]:
            send(agent)
            return
        self.names.lookup(agent).addCallback(send).addErrback(
            lambda f: self.log.failure("sFlow {source}: events lost", f, source=self.service)
        )

    def get(self) -> list[Event]:
        """Emit the traffic breakdowns of the interval that ended, and start the next one."""
        traffic, self.traffic = self.traffic, defaultdict(dict)
        self.held = len(self.counters)
        now = self.clock.seconds()
        for (agent, index), seen in traffic.items():
            items = []
            for (kind, value, direction), total in seen.items():
                rate = total / self.interval
                what = "addr" if kind == "ip" else "port"
                items.append((f"{index}.{kind}.{value}.{direction}",
                              f"sFlow if:{index} {what}:{value} {direction} octets/sec"
                              f" {rate:0.2f}", rate))  # fmt: skip
            if items:
                self._queueFor(agent, items, now)
        return []
