"""munin: every plugin of a munin-node, over the munin protocol."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from duct.aggregators import Counter, Counter32
from duct.lib.process import Timeout
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason

RATES = {"COUNTER": Counter32, "DERIVE": Counter}
"""The munin field types that are counters, and how they become per-second rates."""


class MuninProtocol(LineOnlyReceiver):
    """Sends one munin-node command at a time; `command` fires with its reply.

    A one-line reply (``cap``, ``list``) fires with that line, a listing
    (``config``, ``fetch``) with its lines up to the ``.`` that ends it.
    The greeting (``# munin node at ...``) and comments are skipped.
    """

    delimiter = b"\n"

    def __init__(self) -> None:
        self.pending: Deferred[Any] | None = None
        self.listing = False
        self.lines: list[str] = []

    def command(self, line: str, listing: bool = False) -> Deferred[Any]:
        reply: Deferred[Any] = Deferred()
        self.pending, self.listing, self.lines = reply, listing, []
        self.sendLine(line.encode("utf-8"))
        return reply

    def lineReceived(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if line.startswith("#") or self.pending is None:
            return
        if self.listing and line != ".":
            self.lines.append(line)
            return
        pending, self.pending = self.pending, None
        pending.callback(self.lines if self.listing else line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.errback(ConnectionError("munin-node closed the connection"))


def parseConfig(lines: list[str]) -> tuple[str, dict[str, dict[str, str]]]:
    """A plugin's category (``system`` if it names none), and each field's attributes.

    ``load.type GAUGE`` and ``load.info ...`` give ``{"load": {"type": ..., "info": ...}}``.
    """
    category = "system"
    fields: dict[str, dict[str, str]] = {}
    for line in lines:
        name, _, value = line.partition(" ")
        if name == "graph_category":
            category = value.strip()
        elif "." in name and not name.startswith("graph_"):
            field, _, key = name.rpartition(".")
            fields.setdefault(field, {})[key] = value.strip()
    return category, fields


class MuninNode(Source):
    """Every plugin of the munin-node at ``host:port``.

    ``{service}.{category}.{plugin}.{field}``: each value the node fetches,
    described by the field's ``info`` (else ``plugin.field``); ``COUNTER``
    and ``DERIVE`` fields are per-second rates.  ``{service}.state``: 1 with
    state ``ok`` when the node answered; 0, ``critical``, with the reason,
    when it refused, closed or took longer than ``timeout``.
    """

    sync = True
    options = (
        Option("host", "string", "localhost", "munin-node host"),
        Option("port", "integer", 4949, "munin-node port", minimum=1),
        Option("timeout", "number", 10.0, "seconds for the whole exchange", above=0),
    )

    async def get(self) -> list[Event]:
        host, port = self.config["host"], self.config["port"]
        timeout = float(self.config["timeout"])
        exchange = Deferred.fromCoroutine(self._exchange(host, port, timeout))

        def timedOut(result: object, seconds: float) -> Any:
            raise Timeout(f"no answer in {seconds:g}s")

        try:
            events: list[Event] = await exchange.addTimeout(
                timeout, self.clock, onTimeoutCancel=timedOut
            )
        except Exception:
            reason = failureReason(Failure())
            return [self.createEvent("critical", f"munin-node {host}:{port}: {reason}", 0,
                                     "state")]  # fmt: skip
        return [*events, self.createEvent("ok", f"munin-node {host}:{port}", 1, "state")]

    def connect(self, host: str, port: int, timeout: float) -> Deferred[MuninProtocol]:
        """Connect to the node; fires with the `MuninProtocol`."""
        endpoint: Any = HostnameEndpoint(self.duct.reactor, host, port, timeout=timeout)
        connecting: Deferred[MuninProtocol] = endpoint.connect(Factory.forProtocol(MuninProtocol))
        return connecting

    async def _exchange(self, host: str, port: int, timeout: float) -> list[Event]:
        proto = await self.connect(host, port, timeout)
        try:
            await proto.command("cap multigraph")
            plugins = (await proto.command("list")).split()
            events: list[Event] = []
            for plugin in plugins:
                category, fields = parseConfig(await proto.command(f"config {plugin}", True))
                values = await proto.command(f"fetch {plugin}", True)
                events.extend(self._events(plugin, category, fields, values))
            return events
        finally:
            transport: Any = proto.transport
            transport.abortConnection()

    def _events(
        self, plugin: str, category: str, fields: dict[str, dict[str, str]], values: list[str]
    ) -> list[Event]:
        events = []
        for line in values:
            name, _, value = line.partition(" ")
            field = name.removesuffix(".value")
            if name.startswith("multigraph") or field == name:
                continue
            try:
                metric = float(value)
            except ValueError:  # "U": munin's unknown
                continue
            about = fields.get(field, {})
            base = f"{plugin}.{field}"
            rate = RATES.get(about.get("type", "GAUGE"))
            description = about.get("info", base)
            events.append(
                self.createEvent("ok", description, metric, f"{category}.{base}", None, rate)
            )
        return events
