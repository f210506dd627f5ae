"""One AMQP channel kept open to the first of several brokers that answers.

`Connector` connects with pika's Twisted adapter to each of ``urls`` in
turn, backing off after each failure, opens a channel and hands it to
``setup`` (declarations, confirms, QoS), then to ``ready``.  When the
channel or the connection closes it calls ``lost`` and starts again with
the next URL.  The AMQP plugins share it and `AMQP_OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import pika
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.logger import Logger

from duct.lib.lograte import RateLimitedLog
from duct.lib.tls import clientTLSOptions
from duct.options import Option

__all__ = ["AMQP_OPTIONS", "QUEUE_TYPES", "Connector", "queueArguments", "urlProblems"]

QUEUE_TYPES = ("quorum", "classic")

AMQP_OPTIONS: tuple[Option, ...] = (
    Option(
        "urls",
        "strings",
        ["amqp://guest:guest@localhost:5672/%2F"],
        "broker URLs (amqp:// or amqps://), tried in turn",
    ),
    Option("ca", "string", None, "PEM file of the CAs to trust for amqps (default: the system's)"),
    Option("cert", "string", None, "PEM file of a client certificate to present"),
    Option("key", "string", None, "PEM file of the client key (default: in cert)"),
    Option("tls_verify", "boolean", True, "check the broker's certificate and name"),
    Option("queue", "string", None, "queue to declare (and, for a source, consume)"),
    Option("queue_type", "string", "quorum", "type of the declared queue", choices=QUEUE_TYPES),
    Option("durable", "boolean", True, "declare the queue durable"),
    Option("dead_letter_exchange", "string", None, "the queue's x-dead-letter-exchange"),
    Option("reconnect_initial", "number", 0.2, "seconds before reconnecting", minimum=0.01),
    Option("reconnect_max", "number", 5.0, "longest wait to reconnect", minimum=0.01),
)


def urlProblems(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The problems of ``urls`` (and the queue options), for `optionProblems`."""
    problems = []
    urls = config.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    for url in urls or ():
        scheme = urlsplit(str(url)).scheme
        if scheme not in ("amqp", "amqps"):
            problems.append(("urls", f"expected amqp:// or amqps:// URLs, got {url!r}"))
            continue
        try:
            pika.URLParameters(str(url))
        except Exception as e:
            problems.append(("urls", f"{url!r}: {e}"))
    if not urls:
        problems.append(("urls", "name at least one broker"))
    if config.get("queue_type") == "quorum" and config.get("durable") is False:
        problems.append(("durable", "a quorum queue is always durable"))
    return problems


def queueArguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``queue_declare`` arguments the options ask for."""
    arguments: dict[str, Any] = {"x-queue-type": config["queue_type"]}
    if config.get("dead_letter_exchange") is not None:
        arguments["x-dead-letter-exchange"] = config["dead_letter_exchange"]
    return arguments


def declareQueue(channel: TwistedChannel, config: Mapping[str, Any]) -> Deferred[Any]:
    """Declare the configured queue, if there is one."""
    if not config.get("queue"):
        return succeed(None)
    return channel.queue_declare(
        queue=config["queue"],
        durable=config["queue_type"] == "quorum" or config["durable"],
        arguments=queueArguments(config),
    )


class Connector:
    """Keeps a channel open to one of ``urls``; see the module's docstring."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        clock: Any,
        config: Mapping[str, Any],
        name: str,
        setup: Callable[[TwistedChannel], Any],
        ready: Callable[[TwistedChannel], None],
        lost: Callable[[TwistedChannel], None],
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.config = config
        urls = config["urls"]
        self.urls: Sequence[str] = [urls] if isinstance(urls, str) else list(urls)
        self.name = name
        self.setup = setup
        self.ready = ready
        self.lost = lost
        self.initial = float(config["reconnect_initial"])
        self.maxDelay = max(self.initial, float(config["reconnect_max"]))
        self.channel: TwistedChannel | None = None
        self.protocol: TwistedProtocolConnection | None = None
        self.url: str | None = None
        """The broker connected to now."""
        self.connects = 0
        self.failures = 0
        self._next = 0
        self._delay = 0.0
        self._call: Any = None
        self._running = False
        self.rateLog = RateLimitedLog(self.log, clock)

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._attempt()

    def stop(self) -> Deferred[Any]:
        """Stop reconnecting and close the connection; fires once it is closed."""
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        protocol, self.protocol = self.protocol, None
        if protocol is None or protocol.is_closed:
            return succeed(None)
        closed = protocol.closed
        if closed is None:  # still in its handshake
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            return succeed(None)
        done: Deferred[Any] = Deferred()
        closed.addBoth(lambda _: done.callback(None))
        _close(protocol)
        return done

    def _attempt(self) -> None:
        self._call = None
        if not self._running:
            return
        url = self.urls[self._next % len(self.urls)]
        self._next += 1
        Deferred.fromCoroutine(self._connect(url)).addErrback(self._failed, url)

    def _endpoint(self, url: str) -> tuple[Any, pika.URLParameters]:
        params = pika.URLParameters(url)
        endpoint: Any = TCP4ClientEndpoint(
            self.reactor, params.host, params.port, timeout=max(1, int(params.socket_timeout or 10))
        )
        if urlsplit(url).scheme == "amqps":
            config = self.config
            options = clientTLSOptions(
                params.host, config["ca"], config["cert"], config["key"], config["tls_verify"]
            )
            endpoint = wrapClientTLS(options, endpoint)
            params.ssl_options = None  # Twisted does the TLS
        return endpoint, params

    async def _connect(self, url: str) -> None:
        endpoint, params = self._endpoint(url)
        protocol = TwistedProtocolConnection(params, custom_reactor=self.reactor)
        await connectProtocol(endpoint, protocol)
        if not self._running:
            protocol.transport.abortConnection()
            return
        self.protocol = protocol
        try:
            await protocol.ready
            channel: TwistedChannel = await protocol.channel()
            await self.setup(channel)
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            if self.protocol is protocol:
                self.protocol = None
            raise
        if not self._running:
            _close(protocol)
            return
        self.channel = channel
        self.url = url
        self.connects += 1
        self._delay = 0.0
        self._next -= 1  # stay with this broker next time
        self.log.info("{name}: connected to {url}", name=self.name, url=_safe(url))
        channel.on_closed.addBoth(self._channelClosed, channel, protocol, url)
        self.ready(channel)

    def _channelClosed(
        self, reason: Any, channel: TwistedChannel, protocol: TwistedProtocolConnection, url: str
    ) -> None:
        if self.channel is channel:
            self.channel = None
        if self.protocol is protocol:
            self.protocol = None
        _close(protocol)
        self.lost(channel)
        if not self._running:
            return
        self.rateLog.emit(
            "lost",
            "{name}: lost the channel to {url} ({error})",
            name=self.name,
            url=_safe(url),
            error=_describe(reason),
        )
        self._next += 1  # the next broker first
        self._retry()

    def _failed(self, failure: Any, url: str) -> None:
        self.failures += 1
        self.rateLog.emit(
            "connect",
            "{name}: cannot connect to {url}: {error}",
            name=self.name,
            url=_safe(url),
            error=_describe(failure),
        )
        self._retry()

    def _retry(self) -> None:
        if not self._running or self._call is not None:
            return
        self._delay = min(max(self._delay * 2, self.initial), self.maxDelay)
        self._call = self.clock.callLater(self._delay, self._attempt)


def _close(protocol: TwistedProtocolConnection) -> None:
    """Close ``protocol`` unless it is closing or closed already."""
    if protocol.is_open:
        protocol.close()


def _describe(reason: Any) -> str:
    value = getattr(reason, "value", reason)
    return str(value) or repr(value)


def _safe(url: str) -> str:
    """``url`` without its password, for the log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
