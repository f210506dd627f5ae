"""memcached: the figures of its ``stats`` command, over TCP."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.protocols.basic import LineOnlyReceiver

from duct.aggregators import Counter64
from duct.lib.tcpclient import connectWithin, reason, tcpEndpoint, within
from duct.objects import Event, Source
from duct.options import Option

COUNTERS = (
    "reclaimed", "evictions", "total_items", "touch_hits", "touch_misses",
    "delete_misses", "delete_hits", "incr_hits", "incr_misses",
    "cas_hits", "cas_misses", "cas_badval", "get_misses", "get_hits",
    "decr_misses", "decr_hits", "cmd_set", "cmd_flush", "cmd_touch", "cmd_get",
    "bytes_written", "bytes_read",
)  # fmt: skip
GAUGES = ("curr_connections", "curr_items", "hash_bytes", "bytes")


class StatsProtocol(LineOnlyReceiver):
    """Sends ``stats``; ``done`` fires with the ``STAT name value`` lines up to ``END``."""

    delimiter = b"\r\n"

    def __init__(self) -> None:
        self.stats: dict[str, str] = {}
        self.done: Deferred[dict[str, str]] = Deferred()

    def connectionMade(self) -> None:
        self.sendLine(b"stats")

    def lineReceived(self, line: bytes) -> None:
        if self.done.called:
            return
        if line == b"END":
            self.done.callback(self.stats)
        elif line.startswith(b"STAT "):
            _, name, value = line.decode("utf-8", "replace").split(" ", 2)
            self.stats[name] = value
        else:
            self.done.errback(ValueError(f"memcached answered {line[:80]!r}"))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(ConnectionError("memcached closed the connection before END"))


class Memcache(Source):
    """Reads memcache metrics: the ``stats`` of the memcached at ``host:port``.

    ``{service}.{name}``, with the stat's underscores as dots:
    ``curr.connections``, ``curr.items``, ``hash.bytes`` and ``bytes`` as
    they are; per second, ``get.hits``, ``get.misses``, ``cmd.get``,
    ``cmd.set``, ``evictions``, ``bytes.read``, ``bytes.written`` and the
    other hit, miss and command counts.  ``{service}.state`` is 1 with the
    connection, 0 and ``critical`` when it is refused or ``timeout`` passes.
    """

    sync = True
    options = (
        Option("host", "string", "127.0.0.1", "memcached host"),
        Option("port", "integer", 11211, "memcached port", minimum=1),
        Option("timeout", "number", 10.0, "seconds to connect and get the stats", above=0),
    )

    def endpoint(self) -> Any:
        """Where the server is; a test may put a recorded server here."""
        config = self.config
        return tcpEndpoint(self.duct.reactor, config["host"], config["port"],
                           float(config["timeout"]))  # fmt: skip

    async def get(self) -> list[Event]:
        where = f"{self.config['host']}:{self.config['port']}"
        timeout = float(self.config["timeout"])
        try:
            protocol = await connectWithin(self.endpoint(), StatsProtocol(), timeout,
                                           self.clock, where)  # fmt: skip
            try:
                stats = await within(protocol.done, timeout, self.clock, f"memcached at {where}")
            finally:
                transport: Any = protocol.transport
                transport.loseConnection()
        except Exception as e:
            return [self.createEvent("critical", f"Connection refused: {reason(e)}", 0, "state")]
        events = [self.createEvent("ok", "Connection", 1, "state")]
        for key in COUNTERS + GAUGES:
            if key in stats:
                rate = Counter64 if key in COUNTERS else None
                description, prefix = key.capitalize().replace("_", " "), key.replace("_", ".")
                events.append(self.createEvent("ok", description, int(stats[key]), prefix,
                                               aggregation=rate))  # fmt: skip
        return events
