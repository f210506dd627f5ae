"""What the Riemann outputs share: queueing encoded events, pacing, TLS, the connection.

`duct.outputs.riemann.RiemannTCP` and `RiemannUDP` both queue events as
their encoded Riemann bytes, never as `Event` objects: a queued event then
costs its encoded size plus `QUEUE_OVERHEAD`, and events relayed from a
Riemann listener (`EncodedEvents`) are never decoded on the way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from duct.buffers.memory import Batch
from duct.event import Event
from duct.protocol.riemann import DecodeError, EncodedEvents, decodeMsg, encodeEvent, pb

QUEUE_OVERHEAD = 50
"""Bytes a queued encoded event costs beyond its length: the bytes object
header and its size and deadline kept beside it in the buffer."""


def hostList(value: Any) -> list[str]:
    """``server`` as a list of hosts: a list, or one (comma-separated) string."""
    if isinstance(value, str):
        value = value.split(",")
    hosts = [str(host).strip() for host in value or () if str(host).strip()]
    return hosts or ["localhost"]


def isNaNMetric(event: Event) -> bool:
    metric = event.metric
    return isinstance(metric, float) and not math.isfinite(metric)


def _deadline(message: pb.Event, now: float) -> float:
    if not message.HasField("ttl"):
        return math.inf
    if message.HasField("time_micros"):
        when = message.time_micros / 1_000_000
    elif message.HasField("time"):
        when = float(message.time)
    else:
        when = now  # Riemann stamps such an event when it arrives
    return when + message.ttl


def encodeForQueue(
    events: Sequence[Event] | EncodedEvents,
    allowNaN: bool = True,
    withDeadlines: bool = False,
    now: float = 0.0,
) -> tuple[list[bytes], list[float] | None, int]:
    """Encode events for a buffer: ``(encoded, deadlines, invalid)``.

    `EncodedEvents` pass through as they are; they are decoded (time and
    ttl only) when deadlines are asked for.  Their metrics are not checked
    for NaN: that would cost a decode per relayed event.  ``invalid`` counts
    the `Event` objects left out because their metric is NaN or infinite
    and ``allowNaN`` is false.
    """
    if isinstance(events, EncodedEvents):
        encoded = events.encoded
        if not withDeadlines:
            return encoded, None, 0
        deadlines = []
        for data in encoded:
            try:
                deadlines.append(_deadline(pb.Event.FromString(data), now))
            except DecodeError:
                deadlines.append(math.inf)
        return encoded, deadlines, 0
    out: list[bytes] = []
    kept: list[float] | None = [] if withDeadlines else None
    invalid = 0
    for event in events:
        if not allowNaN and isNaNMetric(event):
            invalid += 1
            continue
        out.append(encodeEvent(event))
        if kept is not None:
            kept.append(event.time + event.ttl if event.ttl is not None else math.inf)
    return out, kept, invalid


def entrySize(length: int) -> int:
    """Bytes one encoded event of ``length`` bytes takes inside a Msg."""
    return 1 + (max(length.bit_length(), 1) + 6) // 7 + length


class Flight:
    """A batch sent as one Msg: its place in the stream, and how often it was refused."""

    __slots__ = ("seq", "batch", "sentAt", "rejections")

    def __init__(self, seq: int, batch: Batch) -> None:
        self.seq = seq
        self.batch = batch
        self.sentAt = 0.0
        self.rejections = 0


class TokenBucket:
    """At most ``rate`` events a second, in bursts of at most ``burst``.

    `delay` says how long to wait before ``n`` events may go; nothing here
    waits: the caller schedules itself on the clock.
    """

    def __init__(self, clock: Any, rate: float, burst: int) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self._last = clock.seconds()

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(float(self.burst), self.tokens + (now - self._last) * self.rate)
        self._last = now

    def delay(self, n: int) -> float:
        """Seconds until ``n`` (at most ``burst``) events may be sent; 0 means now."""
        self._refill()
        missing = min(n, self.burst) - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate

    def spend(self, n: int) -> None:
        self._refill()
        self.tokens -= n


# -- the connection ----------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """Connects to one of several endpoints, moving to the next after a failure.

    It stays with an endpoint that works; `rotate` (on a refused or failed
    attempt, or a TLS handshake that failed) moves on to the next one.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, Any]],
        onFailure: Callable[[str, Failure], None],
    ) -> None:
        self.endpoints = list(endpoints)
        self.onFailure = onFailure
        self.index = 0

    @property
    def current(self) -> str:
        """The label (host:port) of the endpoint the next attempt uses."""
        return self.endpoints[self.index][0]

    def rotate(self) -> None:
        self.index = (self.index + 1) % len(self.endpoints)

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        label, endpoint = self.endpoints[self.index]
        d: Deferred[Any] = endpoint.connect(protocolFactory)
        d.addErrback(self._failed, label)
        return d

    def _failed(self, failure: Failure, label: str) -> Failure:
        if not failure.check(CancelledError, ConnectingCancelledError):
            self.rotate()
            self.onFailure(label, failure)
        return failure

    def __repr__(self) -> str:
        return f"<FailoverEndpoint {', '.join(label for label, _ in self.endpoints)}>"


@implementer(IHandshakeListener)
class RiemannClientProtocol(Int32StringReceiver):
    """One connection to Riemann: frames out, one reply Msg per Msg in, in order.

    It reports to its ``output`` through ``_ready`` (connected, and for TLS
    the handshake done), ``_reply`` and ``_lost``.
    """

    MAX_LENGTH = 1 << 20  # replies to writes are a few bytes; refuse anything absurd
    log = Logger()

    def __init__(self, output: Any, label: str) -> None:
        self.output = output
        self.label = label
        self.ready = False

    def connectionMade(self) -> None:
        if not ISSLTransport.providedBy(self.transport):
            self._becomeReady()

    def handshakeCompleted(self) -> None:
        self._becomeReady()

    def _becomeReady(self) -> None:
        if not self.ready:
            self.ready = True
            self.output._ready(self)

    def stringReceived(self, string: bytes) -> None:
        try:
            msg = decodeMsg(string)
        except DecodeError as e:
            self.log.warn(
                "{output}: malformed reply from {server} ({error}); reconnecting",
                output=self.output.name,
                server=self.label,
                error=e,
            )
            self._drop()
            return
        self.output._reply(self, msg)

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn(
            "{output}: reply of {length} bytes from {server} is too long; reconnecting",
            output=self.output.name,
            length=length,
            server=self.label,
        )
        self._drop()

    def _drop(self) -> None:
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.output._lost(self, reason)


class RiemannClientFactory(Factory):
    """Builds a `RiemannClientProtocol` for each connection `FailoverEndpoint` makes."""

    noisy = False

    def __init__(self, output: Any, endpoint: FailoverEndpoint) -> None:
        self.output = output
        self.endpoint = endpoint

    def buildProtocol(self, addr: Any) -> RiemannClientProtocol:
        protocol = RiemannClientProtocol(self.output, self.endpoint.current)
        protocol.factory = self
        return protocol


CONNECT_TIMEOUT = 10
"""Seconds one connection attempt may take before the next server is tried."""


def clientEndpoints(
    reactor: Any,
    hosts: Sequence[str],
    port: int,
    description: str | None = None,
    tls: Callable[[str], Any] | None = None,
) -> list[tuple[str, Any]]:
    """A ``(label, endpoint)`` for each host, tried in turn.

    An endpoint ``description`` (``clientFromString``'s syntax) replaces
    them all.  Addresses are used as they are and names are looked up on
    each attempt; ``tls``, if given, makes the TLS options for a host.
    """
    if description:
        return [(description, clientFromString(reactor, description))]
    endpoints: list[tuple[str, Any]] = []
    for host in hosts:
        endpoint: Any
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(reactor, host, port, CONNECT_TIMEOUT)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(reactor, host, port, CONNECT_TIMEOUT)
        else:
            endpoint = HostnameEndpoint(reactor, host, port, CONNECT_TIMEOUT)
        if tls is not None:
            endpoint = wrapClientTLS(tls(host), endpoint)
        label = f"[{host}]:{port}" if isIPv6Address(host) else f"{host}:{port}"
        endpoints.append((label, endpoint))
    return endpoints
