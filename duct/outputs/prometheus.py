"""Prometheus: a scrape endpoint with each series' latest value, and remote write.

`Prometheus` serves ``/<metric_path>`` on a port of its own (and
optionally a path of the agent's web site); `RemoteWrite` (in
`duct.outputs.remotewrite`) pushes samples to a remote write receiver.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from duct.lib.promlabels import LABEL_OPTIONS, Labeller, SeriesKey
from duct.lib.promseries import SeriesTable, TableCollector
from duct.listening import listenNow
from duct.objects import Event, Output
from duct.options import Option
from duct.output import Refused
from duct.outputs.remotewrite import RemoteWrite
from duct.stats import counter, gauge
from duct.web.metrics import CONTENT_TYPE
from duct.web.responses import LeafResource

__all__ = ["Prometheus", "RemoteWrite"]

EXPIRE_INTERVAL = 5.0
"""Seconds between sweeps of expired series (a scrape sweeps too)."""


class Prometheus(Output):
    """Serve the latest value of each host and service as a gauge, for Prometheus to scrape.

    The endpoint is ``http://<interface>:<port>/<metric_path>``, and also
    ``/<web_path>`` on the agent's web server when `web_path` is set.  Each
    event sets the gauge of its series: the metric name is `prefix` and
    the service with dots (and anything else Prometheus does not allow)
    made underscores, the labels are ``host``, the attributes (those
    `labels` lists, or all), and with `tags_label` the Riemann tags.  A
    series lasts for its last event's ttl (`default_ttl` for an event with
    none), counted from when it arrived.  An event counts as delivered
    once it is in the table a scrape reads.

    Not carried: the state, the description and the event's time (a
    scrape is stamped when Prometheus takes it), and events with no
    metric, which are skipped and counted as ``skipped``.  At
    `max_series`, an event that would add a series is refused, counted as
    ``series_refused`` and ``rejected``; events of series already held go on.
    """

    listens = True

    options = (
        Option("port", "integer", 9100, "TCP port of the scrape endpoint (0: any)", minimum=0),
        Option("interface", "string", "127.0.0.1", "address the scrape endpoint listens on"),
        Option("metric_path", "string", "metrics", "path of the scrape endpoint"),
        Option(
            "web_path",
            "string",
            None,
            "also serve the gauges at this path of the agent's web server (default: not)",
        ),
        *LABEL_OPTIONS,
        Option(
            "default_ttl",
            "duration",
            300.0,
            "seconds a series lasts when its event has no ttl",
            above=0,
        ),
        Option("max_series", "integer", 100_000, "most series held", minimum=1),
        Option("batch_size", "integer", 5000, "most events applied at once", minimum=1),
        Option("flush_interval", "number", 0.0, "seconds a partial batch may wait", minimum=0),
    )

    # fmt: off
    stats = (
        gauge("series", "sum", "table.count", "prometheus_series", "series held"),
        counter("series_refused", "seriesRefused", "prometheus_series_refused",
                "events refused because they would pass max_series"),
        counter("series_expired", "table.expired", "prometheus_series_expired",
                "series removed when their ttl ran out"),
        counter("scrapes", "scrapes", "prometheus_scrapes", "scrapes answered"),
        counter("skipped", "skipped", "events_skipped", "events with no metric"),
    )
    # fmt: on

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        config = self.config
        self.reactor: Any = getattr(duct, "reactor", None) or self.clock
        self.portNumber: int = config["port"]
        self.interface: str = config["interface"]
        self.metricPath = "/" + config["metric_path"].strip("/")
        self.webPath: str | None = config["web_path"]
        self.defaultTTL = float(config["default_ttl"])
        self.labeller = Labeller(config)
        self.table = SeriesTable(self.clock, config["max_series"])
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(TableCollector([self.table]))
        self.seriesRefused = 0
        self.scrapes = 0
        self.skipped = 0
        self.port: Any = None
        """The listening port, once bound."""
        self._factory: WrappingFactory | None = None
        self._sweep = task.LoopingCall(self.table.expire)
        self._sweep.clock = self.clock

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        path = str(config.get("web_path") or "")
        if "/" in path.strip("/"):
            yield "web_path", f"must be a single path segment, got {path!r}"
        if not str(config.get("metric_path") or "").strip("/"):
            yield "metric_path", "must not be empty"

    @property
    def address(self) -> str:
        """The endpoint string the scrape endpoint listens on."""
        interface = self.interface.replace(":", "\\:")
        return f"tcp:{self.portNumber}:interface={interface}"

    # -- lifecycle -------------------------------------------------------------

    def listen(self) -> None:
        """Bind the scrape endpoint; raises `CannotListen` (naming ``port``) if it cannot."""
        if self.port is not None:
            return
        endpoint = serverFromString(self.reactor, self.address)
        self._factory = WrappingFactory(Site(ScrapeRoot(self)))  # it tracks the connections
        port, pending = listenNow(endpoint, self._factory, "port", self.address)
        if pending is not None:  # TCP binds at once; this is for completeness
            pending.addCallback(self._bound)
        else:
            self._bound(port)

    def _bound(self, port: Any) -> None:
        self.port = port
        if not self.portNumber:  # any port: the same one when listening again
            self.portNumber = port.getHost().port
        self.log.info(
            "prometheus output {output} serving {path} on {address}",
            output=self.name,
            path=self.metricPath,
            address=port.getHost(),
        )

    def stopListening(self) -> Deferred[None]:
        """Close the scrape endpoint and its connections (the gauges are kept).

        `listen` opens it again.
        """
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        factory, self._factory = self._factory, None
        if factory is not None:
            for protocol in list(factory.protocols):
                protocol.transport.loseConnection()
        d: Deferred[None] = Deferred.fromCoroutine(_stop(port))
        return d

    def createClient(self) -> None:
        self.listen()
        if not self._sweep.running:
            self._sweep.start(EXPIRE_INTERVAL, now=False)

    def closeClient(self) -> Deferred[None]:
        if self._sweep.running:
            self._sweep.stop()
        return self.stopListening()

    # -- events in -------------------------------------------------------------------

    def writeBatch(self, events: list[Event]) -> None:
        """Set the gauges; refuse the events that would pass `max_series`, setting none."""
        table, labeller = self.table, self.labeller
        keys: list[SeriesKey | None] = []
        new: set[SeriesKey] = set()
        refused: list[int] = []
        room = table.room()
        for index, event in enumerate(events):
            if event.metric is None:
                keys.append(None)
                continue
            key = labeller.key(event)
            if key not in new and key not in table:
                if len(new) >= room:
                    room += table.expire()  # once full, make what room expiry can
                if len(new) >= room:
                    refused.append(index)
                    keys.append(None)
                    continue
                new.add(key)
            keys.append(key)
        if refused:
            self.seriesRefused += len(refused)
            raise Refused(f"more than max_series ({table.maxSeries}) series", self.name, refused)
        default = self.defaultTTL
        for event, held in zip(events, keys, strict=True):
            if held is None or event.metric is None:
                self.skipped += 1
                continue
            ttl = event.ttl if event.ttl and event.ttl > 0 else default
            table.set(held, float(event.metric), ttl, event.service)

    # -- exposition ----------------------------------------------------------------

    def exposition(self) -> bytes:
        """The gauges in Prometheus's text format, expired series swept first."""
        self.scrapes += 1
        self.table.expire()
        return generate_latest(self.registry)

    def webRoutes(self) -> Mapping[str, Any]:
        """The gauges at `web_path` of the agent's web server, when it is set."""
        if not self.webPath:
            return {}
        return {self.webPath.strip("/"): ScrapePage(self)}


async def _stop(port: Any) -> None:
    await port.stopListening()


class ScrapePage(LeafResource):
    """Answers GET with the output's gauges."""

    def __init__(self, output: Prometheus) -> None:
        super().__init__()
        self.output = output

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return self.output.exposition()


class ScrapeRoot(Resource):
    """The scrape endpoint's site: the gauges at `metric_path`, a link to them at ``/``."""

    isLeaf = True

    def __init__(self, output: Prometheus) -> None:
        super().__init__()
        self.output = output
        self.page = ScrapePage(output)

    def render(self, request: Request) -> bytes:
        path = request.path.decode("utf-8", "replace").rstrip("/") or "/"
        if path == self.output.metricPath:
            request.postpath = []
            return self.page.render(request)
        if path == "/":
            link = self.output.metricPath.encode()
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return b'<html><body><a href="' + link + b'">Metrics</a></body></html>\n'
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found\n"
