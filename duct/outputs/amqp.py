"""Publish events to RabbitMQ (AMQP 0-9-1), each batch confirmed by the broker."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

import pika
from pika.adapters.twisted_connection import TwistedChannel
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from duct.lib.amqp import AMQP_OPTIONS, Connector, declareQueue, urlProblems
from duct.lib.json import eventLines
from duct.options import Option
from duct.outputs.riemann_bytes import RiemannBytesOutput
from duct.protocol.riemann import msgFromEncoded, pb
from duct.stats import Stat, counter

__all__ = ["AMQP", "FORMATS"]

FORMATS = ("riemann", "json")
CONTENT_TYPES = {"riemann": "application/x-protobuf", "json": "application/x-ndjson"}
TEMPLATE_FIELDS = ("host", "service")


def templateFields(template: str) -> list[str]:
    """The fields a ``routing_key`` template names; ValueError if it does not parse."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


class AMQP(RiemannBytesOutput):
    """Publish batches to a RabbitMQ exchange with publisher confirms.

    Each batch (up to `batch_size` events) goes as one message per routing
    key, with ``delivery_mode`` 2 (persistent) unless `persistent` is
    false.  The batch leaves the buffer only when the broker confirmed
    every one of its messages; a nack, an unroutable message (published
    ``mandatory``) or a closed channel puts it back at the head of the
    buffer, to be published again: delivery is at least once.

    `format` ``riemann`` sends a Riemann protobuf ``Msg`` holding the
    batch's events; events relayed from a Riemann listener pass through
    as their bytes.  ``json`` sends JSON lines (`Event.asDict`).

    `routing_key` is a template on ``{host}`` and ``{service}``; by default
    it is `queue`, for the default exchange.  With `queue` set, the queue is
    declared on every connection (a `queue_type` ``quorum`` queue by
    default, replicated across a cluster).  `urls` are tried in turn, the
    next after each failure or loss.
    """

    options = (
        *AMQP_OPTIONS,
        Option("exchange", "string", "", "exchange to publish to (default: the default exchange)"),
        Option(
            "routing_key",
            "string",
            None,
            "routing key, a template on {host} and {service} (default: queue)",
        ),
        Option("format", "string", "riemann", "message body", choices=FORMATS),
        Option("persistent", "boolean", True, "publish with delivery_mode 2"),
        Option("batch_size", "integer", 500, "most events in one message", minimum=1),
        Option("flush_interval", "number", 0.1, "seconds a partial batch may wait", minimum=0),
        Option("max_in_flight", "integer", 8, "batches awaiting their confirm", minimum=1),
    )

    # fmt: off
    stats: tuple[Stat, ...] = (
        counter("published", "published", "published_messages", "messages published"),
        counter("nacked", "nacked", "nacked_batches",
                "batches the broker nacked or returned, or lost with the channel"),
        counter("reconnects", "reconnects", "reconnects", "connections made after the first"),
    )
    # fmt: on

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = urlProblems(config)
        key = config.get("routing_key")
        if isinstance(key, str):
            try:
                unknown = [f for f in templateFields(key) if f not in TEMPLATE_FIELDS]
            except ValueError as e:
                problems.append(("routing_key", f"not a template: {e}"))
            else:
                if unknown:
                    problems.append(
                        ("routing_key", f"unknown field {unknown[0]!r}; use {{host}}, {{service}}")
                    )
        elif key is None and not config.get("queue") and config.get("exchange", "") == "":
            problems.append(("routing_key", "set routing_key or queue"))
        return problems

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        self.acceptsEncoded = config.get("format", "riemann") == "riemann"
        super().__init__(config, duct)
        config = self.config
        self.reactor: Any = getattr(duct, "reactor", None) or self.clock
        self.format: str = config["format"]
        self.exchange: str = config["exchange"]
        self.routingKey: str = (
            config["routing_key"] if config["routing_key"] is not None else config["queue"] or ""
        )
        self.templated = bool(templateFields(self.routingKey))
        self.properties = pika.BasicProperties(
            content_type=CONTENT_TYPES[self.format],
            delivery_mode=2 if config["persistent"] else 1,
        )
        self.connected = False
        self.channel: TwistedChannel | None = None
        self.published = 0
        self.nacked = 0
        self.reconnects = 0
        self.connector = Connector(
            self.reactor, self.clock, config, f"output {self.name}", self._setup, self._ready,
            self._lost,
        )  # fmt: skip

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> None:
        self.connector.start()

    def closeClient(self) -> Deferred[Any]:
        return self.connector.stop()

    async def _setup(self, channel: TwistedChannel) -> None:
        await declareQueue(channel, self.config)
        await channel.confirm_delivery()

    def _ready(self, channel: TwistedChannel) -> None:
        if self.connector.connects > 1:
            self.reconnects += 1
        self.channel = channel
        self.connected = True
        self.resumeWriting()

    def _lost(self, channel: TwistedChannel) -> None:
        if self.channel is not channel:
            return
        self.channel = None
        self.connected = False
        count = self.requeueInFlight()
        if count:
            self.nacked += 1
            self.log.info(
                "output {output}: {count} unconfirmed events go back in the queue",
                output=self.name,
                count=count,
            )

    # -- the writer's hooks --------------------------------------------------------

    def canWrite(self) -> bool:
        return self.channel is not None

    def writeBatch(self, events: list[Any]) -> Deferred[Any]:
        """Publish the batch, a message per routing key; fires once all are confirmed."""
        channel = self.channel
        if channel is None:
            raise ConnectionError("not connected")
        confirms = [
            channel.basic_publish(
                self.exchange, key, body, properties=self.properties, mandatory=True
            )
            for key, body in self.messages(events)
        ]
        self.published += len(confirms)
        if len(confirms) == 1:
            return confirms[0].addErrback(self._nacked)
        done = DeferredList(confirms, fireOnOneErrback=True, consumeErrors=True)
        return done.addErrback(self._firstNacked)

    def _firstNacked(self, failure: Failure) -> Failure:
        first: Failure = getattr(failure.value, "subFailure", failure)
        return self._nacked(first)

    def _nacked(self, failure: Failure) -> Failure:
        self.nacked += 1
        return failure

    def messages(self, events: list[Any]) -> list[tuple[str, bytes]]:
        """(routing key, body) for each message of a batch."""
        if not self.templated:
            return [(self.routingKey, self.encode(events))]
        groups: dict[str, list[Any]] = {}
        for item in events:
            if self.acceptsEncoded:
                message = pb.Event.FromString(item)
                host, service = message.host, message.service
            else:
                host, service = item.hostname, item.service
            key = self.routingKey.format(host=host, service=service)
            groups.setdefault(key, []).append(item)
        return [(key, self.encode(items)) for key, items in groups.items()]

    def encode(self, events: list[Any]) -> bytes:
        if self.acceptsEncoded:
            return msgFromEncoded(events)
        return eventLines(events).encode("utf-8")
