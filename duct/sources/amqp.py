"""Consume events from a RabbitMQ queue, each message acked once its events are queued."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pika.adapters.twisted_connection import ClosableDeferredQueue, TwistedChannel
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from duct.errors import TooLarge
from duct.lib.amqp import AMQP_OPTIONS, Connector, declareQueue, urlProblems
from duct.lib.eventjson import decodeText, eventFromJson, jsonValues
from duct.lib.lograte import RateLimitedLog
from duct.objects import Source
from duct.options import Option
from duct.protocol.riemann import EncodedEvents, decodeMsg
from duct.stats import Stat, counter, gauge

__all__ = ["AMQP", "decodeBody"]

FORMATS = ("auto", "riemann", "json")


def decodeBody(body: bytes, contentType: str | None, fmt: str, hostname: str, now: float) -> Any:
    """The events of a message: `EncodedEvents` for a Riemann Msg, else a list of `Event`.

    With ``fmt`` ``auto``, the content type chooses (JSON for ``*json``,
    else Riemann).  Raises for a body that does not decode.
    """
    if fmt == "auto":
        fmt = "json" if contentType and "json" in contentType else "riemann"
    if fmt == "json":
        text = decodeText(body)
        return [
            eventFromJson(value, index, hostname, now)
            for index, value in enumerate(jsonValues(text))
        ]
    msg = decodeMsg(body)
    return EncodedEvents.fromMsg(msg, body)


class AMQP(Source):
    """Consume events from `queue`, as one of several competing consumers.

    Messages are Riemann protobuf ``Msg`` bodies or JSON lines (`format`;
    ``auto`` goes by the content type).  At most `prefetch` messages are
    unacknowledged at once.  A message is acked only when its events are in
    the buffer of every output they are routed to (with a disk buffer, in
    its file): until then a full output holds the ack, and a lost
    connection has the broker deliver the message again, here or to
    another consumer.  A message that does not decode, or holds more
    events than a routed output could ever hold, is rejected without
    requeueing: with `dead_letter_exchange`, the queue (declared with
    ``x-dead-letter-exchange``) sends it there.  Each is counted in
    ``rejected``.
    """

    listens = True

    options = (
        *AMQP_OPTIONS,
        Option("declare", "boolean", True, "declare the queue before consuming"),
        Option("prefetch", "integer", 100, "most messages unacknowledged at once", minimum=1),
        Option("format", "string", "auto", "message body", choices=FORMATS),
    )

    # fmt: off
    stats: tuple[Stat, ...] = (
        counter("messages", "messages", "messages", "messages whose events were queued and acked"),
        counter("rejected", "rejected", "rejected_messages",
                "messages rejected (dead-lettered when the queue has an exchange for them)"),
        gauge("unacked", "sum", "unacked", "unacked_messages",
              "messages received and not yet acked"),
        counter("reconnects", "reconnects", "reconnects", "connections made after the first"),
    )
    # fmt: on

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = urlProblems(config)
        if not config.get("queue"):
            problems.append(("queue", "name the queue to consume"))
        return problems

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.reactor: Any = getattr(self.duct, "reactor", None) or self.clock
        self.queue: str = config["queue"]
        self.prefetch: int = config["prefetch"]
        self.format: str = config["format"]
        self.messages = 0
        self.rejected = 0
        self.unacked = 0
        self.reconnects = 0
        self.channel: TwistedChannel | None = None
        self.rateLog = RateLimitedLog(self.log, self.clock)
        self._consumer: ClosableDeferredQueue | None = None
        self.connector = Connector(
            self.reactor, self.clock, config, f"amqp source {self.service}", self._setup,
            self._ready, self._lost,
        )  # fmt: skip

    @property
    def down(self) -> str | None:
        """None while consuming; else why not (for ``/health``)."""
        return None if self.channel is not None else f"not consuming {self.queue}"

    def startTimer(self) -> None:
        self.connector.start()

    def stopTimer(self) -> Deferred[Any]:
        return self.connector.stop()

    async def _setup(self, channel: TwistedChannel) -> None:
        await channel.basic_qos(prefetch_count=self.prefetch)
        if self.config["declare"]:
            await declareQueue(channel, self.config)
        consumer, _ = await channel.basic_consume(queue=self.queue, auto_ack=False)
        self._consumer = consumer

    def _ready(self, channel: TwistedChannel) -> None:
        if self.connector.connects > 1:
            self.reconnects += 1
        self.channel = channel
        consumer = self._consumer
        if consumer is not None:
            self._next(consumer, channel)

    def _lost(self, channel: TwistedChannel) -> None:
        if self.channel is channel:
            self.channel = None
            self.unacked = 0  # the broker delivers them again

    def _next(self, consumer: ClosableDeferredQueue, channel: TwistedChannel) -> None:
        d = consumer.get()
        d.addCallbacks(self._received, lambda _: None, callbackArgs=(consumer, channel))

    def _received(self, message: Any, consumer: ClosableDeferredQueue, channel: Any) -> None:
        tag = message.method.delivery_tag
        self.unacked += 1
        try:
            self._handle(message, channel, tag)
        finally:
            if channel is self.channel:
                self._next(consumer, channel)

    def _handle(self, message: Any, channel: TwistedChannel, tag: int) -> None:
        now = self.clock.seconds()
        try:
            events = decodeBody(
                message.body, message.properties.content_type, self.format, self.hostname, now
            )
        except Exception as e:
            self._reject(channel, tag, f"cannot decode: {e}")
            return
        if not len(events):
            self._ack(None, channel, tag)
            return
        if self.debug:
            decoded = events.decode() if isinstance(events, EncodedEvents) else events
            for event in decoded:
                self.log.info("{source}: {event!r}", source=self.service, event=event)
        try:
            result = self.queueBack(events)
        except TooLarge as e:
            self._reject(channel, tag, str(e))
            return
        self.emitted += len(events)
        self.lastEventTime = now
        d = result if isinstance(result, Deferred) else succeed(None)
        d.addCallbacks(self._ack, self._notQueued, callbackArgs=(channel, tag))

    def _ack(self, _: object, channel: Any, tag: int) -> None:
        current = self.channel
        if current is None or current is not channel or current.is_closed:
            return  # the broker delivers it again
        current.basic_ack(delivery_tag=tag)
        self.unacked -= 1
        self.messages += 1

    def _notQueued(self, failure: Failure) -> None:
        self.errors += 1
        self.log.failure("amqp source {source}: events not queued", failure, source=self.service)

    def _reject(self, channel: TwistedChannel, tag: int, why: str) -> None:
        self.rejected += 1
        self.unacked -= 1
        self.rateLog.emit(
            "rejected",
            "amqp source {source}: a message from {queue} was rejected: {why}",
            source=self.service,
            queue=self.queue,
            why=why,
        )
        if not channel.is_closed:
            channel.basic_reject(delivery_tag=tag, requeue=False)
