"""Send metrics to Graphite's carbon over TCP, as plaintext lines or pickles."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint

from duct.objects import Event, Output
from duct.options import Option
from duct.outputs.graphite_client import CarbonFactory, CarbonProtocol
from duct.outputs.graphite_format import (
    PICKLE_MAX_LENGTH,
    PathTemplate,
    Point,
    UncarriedEvent,
    pickleMessages,
    plaintextLine,
    templateProblem,
)
from duct.outputs.riemann_client import clientEndpoints

__all__ = ["Graphite"]

DEFAULT_PORTS = {"plaintext": 2003, "pickle": 2004}


class Graphite(Output):
    """Send metrics to Graphite's carbon (carbon-cache or carbon-relay) over TCP.

    Each event becomes one point, ``path value timestamp``: the path is
    ``{prefix}.{host}.{service}`` (``{prefix}.{service}`` with
    `prefix_hostname` false), or `template`, whose fields are ``{prefix}``,
    ``{host}`` (the hostname with its dots made ``_``), ``{fqdn}`` (the
    hostname as nodes), ``{short}`` (its first label), ``{service}`` and
    ``{state}``.  Spaces, slashes and other characters a path node cannot
    hold become ``_``.  The timestamp is the event's time in whole
    seconds, carbon's resolution.  With `protocol` ``plaintext`` (port
    2003) points go as lines; with ``pickle`` (port 2004) as
    length-prefixed pickled lists of ``(path, (timestamp, value))``, each
    message within `pickle_max_length`.

    What carbon cannot carry is not sent: the state, description, tags,
    attributes and ttl of an event are left out, and an event with no
    metric, a NaN or infinite one, or a path too long for carbon's store
    is dropped and counted as ``rejected``.

    Carbon never answers, so "delivered" means this: a batch counts as
    written once the socket has taken all of its bytes (the transport's
    buffer ran dry) and the connection then stayed open for
    `confirm_after` seconds.  A connection lost before that puts the batch
    (and every later one) back at the head of the buffer, to be sent again
    once reconnected, with backoff from `reconnect_initial` to
    `reconnect_max`; bytes that do not leave within `write_timeout` (carbon
    stopped reading) drop the connection the same way.  So delivery is at
    least once: a batch carbon had read before the connection broke is
    sent again (whisper overwrites a point at the same timestamp, so this
    repeats no data there, but a carbon-aggregator sums it twice).  And it
    is not an acknowledgement: what carbon holds in its cache when it is
    killed, or what sits in the kernel's buffers when the carbon host
    dies without closing the connection, is lost with no error seen.
    """

    options = (
        Option("server", "string", "localhost", "carbon's host"),
        Option(
            "port",
            "integer",
            None,
            "carbon's port (default: 2003 for plaintext, 2004 for pickle)",
            minimum=1,
        ),
        Option(
            "protocol",
            "string",
            "plaintext",
            "carbon's receiver to write to",
            choices=("plaintext", "pickle"),
        ),
        Option("prefix", "string", None, "path prefix, a dotted path (default: none)"),
        Option("prefix_hostname", "boolean", True, "put the event's host in the path"),
        Option(
            "template",
            "string",
            None,
            "path template of {prefix} {host} {fqdn} {short} {service} {state} "
            "(replaces prefix_hostname)",
        ),
        Option("batch_size", "integer", 1000, "most points written at once", minimum=1),
        Option("max_in_flight", "integer", 64, "batches written and not yet confirmed", minimum=1),
        Option(
            "confirm_after",
            "number",
            1.0,
            "seconds the connection must stay open after a batch left the socket "
            "for it to count as delivered",
            minimum=0,
        ),
        Option(
            "write_timeout",
            "number",
            30.0,
            "seconds for a batch's bytes to leave the socket before reconnecting",
            above=0,
        ),
        Option(
            "pickle_max_length",
            "integer",
            PICKLE_MAX_LENGTH,
            "most bytes in one pickle message (carbon's PICKLE_RECEIVER_MAX_LENGTH)",
            minimum=256,
        ),
        Option("reconnect_initial", "number", 0.1, "seconds before reconnecting", minimum=0.01),
        Option("reconnect_max", "number", 3.0, "longest wait to reconnect", minimum=0.01),
    )

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        template = config.get("template")
        if template is not None:
            problem = templateProblem(template)
            if problem:
                yield "template", problem

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        config = self.config
        self.reactor: Any = getattr(duct, "reactor", None) or self.clock
        self.server: str = config["server"]
        self.protocol: str = config["protocol"]
        self.port: int = config["port"] or DEFAULT_PORTS[self.protocol]
        template = config["template"]
        if template is None:
            template = (
                "{prefix}.{host}.{service}" if config["prefix_hostname"] else "{prefix}.{service}"
            )
        self.paths = PathTemplate(template, config["prefix"])
        self.confirmAfter = float(config["confirm_after"])
        self.writeTimeout = float(config["write_timeout"])
        self.pickleMaxLength: int = config["pickle_max_length"]
        initial = float(config["reconnect_initial"])
        self._policy = backoffPolicy(
            initialDelay=initial,
            maxDelay=max(initial, float(config["reconnect_max"])),
            factor=2,
            jitter=lambda: random.random() * initial * 0.1,
        )
        self.connected = False
        self.connection: CarbonProtocol | None = None
        self.reconnects = 0
        self._connections = 0
        self._service: ClientService | None = None

    @property
    def label(self) -> str:
        return f"{self.server}:{self.port}"

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> None:
        if self._service is not None:
            return
        [(_, endpoint)] = clientEndpoints(self.reactor, [self.server], self.port)
        factory = CarbonFactory(
            self.label, self.clock, self.confirmAfter, self.writeTimeout, self.name
        )
        self._service = ClientService(
            cast(IStreamClientEndpoint, endpoint),
            cast(IProtocolFactory, factory),
            retryPolicy=lambda attempt: self._policy(attempt - 1),
            clock=self.clock,
            prepareConnection=self._ready,
        )
        self._service.startService()

    def closeClient(self) -> Deferred[None]:
        service, self._service = self._service, None
        stopped = service.stopService() if service is not None and service.running else None
        return stopped if stopped is not None else succeed(None)

    # -- the writer's hooks --------------------------------------------------------

    def canWrite(self) -> bool:
        return self.connection is not None

    def encodePoint(self, event: Event) -> Point:
        """An event as the point carbon stores; `UncarriedEvent` if it cannot."""
        point = self.paths.point(event)
        if self.protocol == "pickle" and len(point.path) + 64 > self.pickleMaxLength:
            raise UncarriedEvent(f"a path of {len(point.path)} bytes is past pickle_max_length")
        return point

    def encodeBatch(self, events: list[Event]) -> list[bytes]:
        """The bytes of a batch; `Unencodable` names the events carbon cannot carry."""
        points = self.encodeEach(events, self.encodePoint)
        if self.protocol == "pickle":
            return pickleMessages(points, self.pickleMaxLength)
        return [b"".join(map(plaintextLine, points))]

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        connection = self.connection
        if connection is None:
            raise ConnectionError("not connected")
        return connection.send(self.encodeBatch(events))

    # -- the connection ----------------------------------------------------------------

    def _ready(self, connection: CarbonProtocol) -> None:
        self.connection = connection
        self.connected = True
        self._connections += 1
        if self._connections > 1:
            self.reconnects += 1
        self.log.info(
            "output {output}: connected to carbon at {server} ({protocol})",
            output=self.name,
            server=self.label,
            protocol=self.protocol,
        )
        # ClientService hands over a proxy of the protocol: compare that one.
        connection.notifyLost().addCallback(lambda _: self._lost(connection))
        self.resumeWriting()

    def _lost(self, connection: CarbonProtocol) -> None:
        if connection is not self.connection:
            return
        self.connectionLost(f"carbon at {self.label}", connection.lostReason)
