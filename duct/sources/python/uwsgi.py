"""uWSGI: the Emperor's vassals, from its JSON stats server (``--emperor-stats``)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from duct.lib.tcpclient import connectWithin, reason, tcpEndpoint, within
from duct.objects import Event, Source
from duct.options import Option

MAX_STATS = 4 * 1024 * 1024
"""The most bytes of stats taken: an Emperor with thousands of vassals sends far less."""


class StatsError(ValueError):
    """What the stats server sent is not an Emperor's stats."""


class StatsProtocol(Protocol):
    """Reads what the stats server writes until it closes; ``done`` fires with the bytes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self.abort())

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > MAX_STATS and not self.done.called:
            self.done.errback(StatsError(f"more than {MAX_STATS} bytes of stats"))
            self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(b"".join(self.chunks))


def vassalsOf(raw: bytes) -> list[dict[str, Any]]:
    """The ``vassals`` of the Emperor's stats, or `StatsError` saying why they are not there."""
    try:
        stats = json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError is one too
        raise StatsError(f"not JSON ({e}): {raw[:60]!r}") from None
    vassals = stats.get("vassals") if isinstance(stats, dict) else None
    if not isinstance(vassals, list) or not all(isinstance(v, dict) for v in vassals):
        raise StatsError(f"no list of vassals in the stats: {raw[:60]!r}")
    return vassals


def _count(vassal: dict[str, Any], key: str) -> int:
    value = vassal.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Emperor(Source):
    """The vassals of a uWSGI Emperor, from the stats server at ``host:port``.

    ``{service}.{vassal}.accepting`` (1 while the vassal accepts requests)
    and ``{service}.{vassal}.respawns`` for each vassal, by its id (the
    name of its file, such as ``app.ini``); ``{service}.total.active``,
    the vassals accepting, ``{service}.total.accepting``, the sum of
    ``accepting``, and ``{service}.total.respawns``, the vassals that have
    been respawned.  ``{service}.state``: 1, ``ok``, when the stats were
    read; 0, ``critical``, with the reason, when the connection is
    refused, the stats are not JSON, or nothing has come by ``timeout``.
    """

    sync = True
    options = (
        Option("host", "string", "localhost", "host of the Emperor's stats server"),
        Option("port", "integer", 6001, "port of the Emperor's stats server", minimum=1),
        Option("timeout", "number", 10.0, "seconds to connect and read the stats", above=0),
    )

    async def _read(self, where: str, timeout: float) -> bytes:
        protocol = await connectWithin(self.endpoint(), StatsProtocol(), timeout, self.clock,
                                       where)  # fmt: skip
        return await protocol.done

    def endpoint(self) -> Any:
        config = self.config
        return tcpEndpoint(self.duct.reactor, config["host"], config["port"],
                           float(config["timeout"]))  # fmt: skip

    async def get(self) -> list[Event]:
        where = f"{self.config['host']}:{self.config['port']}"
        timeout = float(self.config["timeout"])
        try:
            reading = Deferred.fromCoroutine(self._read(where, timeout))
            vassals = vassalsOf(await within(reading, timeout, self.clock, "stats"))
        except Exception as e:
            return [self.createEvent("critical", f"uWSGI Emperor {where}: {reason(e)}", 0,
                                     "state")]  # fmt: skip
        events = []
        active = accepting = respawned = 0
        for vassal in vassals:
            name = str(vassal.get("id", "unknown"))
            accepts, respawns = _count(vassal, "accepting"), _count(vassal, "respawns")
            active += accepts > 0
            accepting += accepts
            respawned += respawns > 0
            events.append(self.createEvent("ok", "accepting", accepts, f"{name}.accepting"))
            events.append(self.createEvent("ok", "respawns", respawns, f"{name}.respawns"))
        return [*events,
                self.createEvent("ok", "active", active, "total.active"),
                self.createEvent("ok", "accepting", accepting, "total.accepting"),
                self.createEvent("ok", "respawns", respawned, "total.respawns"),
                self.createEvent("ok", f"uWSGI Emperor {where}: {len(vassals)} vassals", 1,
                                 "state")]  # fmt: skip
