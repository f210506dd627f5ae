"""The Riemann TCP client: failover across servers, and one connection's protocol.

`FailoverEndpoint` tries each server in turn; `RiemannClientProtocol`
sends Msgs and hands back Riemann's replies, in order; `clientEndpoints`
builds the endpoints (TCP, TLS, or a Twisted endpoint string).
"""

from __future__ import annotations

import struct
from collections import deque
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
from twisted.internet.interfaces import (
    IHandshakeListener,
    IProtocol,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from duct.protocol.riemann import DecodeError, decodeMsg, pb

__all__ = [
    "CONNECT_TIMEOUT",
    "FailoverEndpoint",
    "RiemannClientFactory",
    "RiemannClientProtocol",
    "clientEndpoints",
]

_LENGTH = struct.Struct(">I")


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """Connects to one of several endpoints, moving to the next after a failed attempt.

    It stays with an endpoint that works.  An attempt fails when the
    endpoint cannot connect, or when the connection is lost before its
    protocol is ready (a TLS handshake that failed); ``onFailure`` hears of
    each, and the next attempt uses the next endpoint.

    A connection lost before it is ready is not passed on to the factory's
    protocol wrapper: `ClientService` is still preparing it and has no
    transition for its loss.  Its protocol's `whenReady` fails instead,
    which `ClientService` counts as a failed attempt in its backoff.
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
        d: Deferred[Any] = endpoint.connect(_GateFactory(protocolFactory, self, label))
        d.addCallbacks(_inner, self.attemptFailed, errbackArgs=(label,))
        return d

    def attemptFailed(self, failure: Failure, label: str) -> Failure:
        """An attempt on ``label`` failed: move on, and tell ``onFailure``."""
        if not failure.check(CancelledError, ConnectingCancelledError):
            self.rotate()
            self.onFailure(label, failure)
        return failure

    def __repr__(self) -> str:
        return f"<FailoverEndpoint {', '.join(label for label, _ in self.endpoints)}>"


def _inner(gate: _ReadyGate) -> Any:
    return gate.inner


class _GateFactory(Factory):
    """Builds a `_ReadyGate` around each protocol the wrapped factory builds."""

    noisy = False

    def __init__(self, factory: Any, endpoint: FailoverEndpoint, label: str) -> None:
        self.factory = factory
        self.endpoint = endpoint
        self.label = label

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        inner = self.factory.buildProtocol(addr)
        return None if inner is None else _ReadyGate(inner, self.endpoint, self.label)


@implementer(IProtocol, IHandshakeListener)
class _ReadyGate:
    """Passes everything to ``inner``, but a loss before it is ready only fails its `whenReady`."""

    def __init__(self, inner: Any, endpoint: FailoverEndpoint, label: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.label = label

    def makeConnection(self, transport: Any) -> None:
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def handshakeCompleted(self) -> None:
        self.inner.handshakeCompleted()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inner.ready:
            self.inner.connectionLost(reason)
        elif self.inner.abandon(reason):
            self.endpoint.attemptFailed(reason, self.label)

    def connectionMade(self) -> None:  # IProtocol; makeConnection calls inner's
        pass


@implementer(IHandshakeListener)
class RiemannClientProtocol(Int32StringReceiver):
    """One connection to Riemann: `sendMsg` frames a Msg and returns its reply.

    Riemann answers Msgs in order, one reply each.  When the oldest Msg has
    waited ``ackTimeout`` seconds for its reply, the connection is aborted.
    `whenReady` fires once connected (for TLS, once the handshake is done)
    and fails if the connection is lost first; `notifyLost` fires with the
    reason when a ready connection is lost, and then every Msg still
    waiting fails.
    """

    MAX_LENGTH = 1 << 20  # replies to writes are a few bytes; refuse anything absurd
    log = Logger()

    def __init__(self, label: str, clock: Any, ackTimeout: float, name: str = "riemann") -> None:
        self.label = label
        self.clock = clock
        self.ackTimeout = ackTimeout
        self.name = name
        self.ready = False
        self._ready: Deferred[RiemannClientProtocol] = Deferred(self._cancelReady)
        self.lostReason: Failure | None = None
        """Why the connection was lost, once it was."""
        self._lost: list[Deferred[RiemannClientProtocol]] = []
        self._waiting: deque[tuple[Deferred[pb.Msg], float]] = deque()
        self._ackCall: Any = None

    # -- readiness ---------------------------------------------------------------

    def whenReady(self) -> Deferred[RiemannClientProtocol]:
        """Fires with this protocol once it can send; fails if the connection is lost first."""
        return self._ready

    def _cancelReady(self, _: Deferred[RiemannClientProtocol]) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionMade(self) -> None:
        if not ISSLTransport.providedBy(self.transport):
            self._becomeReady()

    def handshakeCompleted(self) -> None:
        self._becomeReady()

    def _becomeReady(self) -> None:
        if not self.ready and not self._ready.called:
            self.ready = True
            self._ready.callback(self)

    def abandon(self, reason: Failure) -> bool:
        """The connection was lost before it was ready: fail `whenReady`.

        Returns whether `whenReady` was still awaited (not cancelled).
        """
        if self.ready or self._ready.called:
            return False
        self._ready.errback(reason)
        return True

    def notifyLost(self) -> Deferred[RiemannClientProtocol]:
        """A Deferred that fires with this protocol once its (ready) connection is lost.

        `lostReason` then says why.
        """
        d: Deferred[RiemannClientProtocol] = Deferred()
        self._lost.append(d)
        return d

    # -- Msgs and replies ----------------------------------------------------------

    def sendMsg(self, payload: bytes | Sequence[bytes]) -> Deferred[pb.Msg]:
        """Send one serialized Msg; the Deferred fires with Riemann's reply.

        ``payload`` may be given in parts (Msgs of events, which concatenate
        into one): they are written as they are, never joined here.
        """
        d: Deferred[pb.Msg] = Deferred()
        self._waiting.append((d, self.clock.seconds()))
        transport: Any = self.transport
        if isinstance(payload, bytes):
            transport.writeSequence((_LENGTH.pack(len(payload)), payload))
        else:
            transport.writeSequence([_LENGTH.pack(sum(map(len, payload))), *payload])
        if self._ackCall is None:
            self._watchAcks()
        return d

    @property
    def waiting(self) -> int:
        """Msgs sent and not yet answered."""
        return len(self._waiting)

    def _watchAcks(self) -> None:
        self._ackCall = None
        if self._waiting:
            due = self._waiting[0][1] + self.ackTimeout - self.clock.seconds()
            self._ackCall = self.clock.callLater(max(0.0, due), self._ackTimedOut)

    def _ackTimedOut(self) -> None:
        """The oldest Msg has waited ``ackTimeout``: the server holds the connection, mute."""
        if self._waiting and self._waiting[0][1] + self.ackTimeout > self.clock.seconds() + 1e-6:
            self._watchAcks()  # answered meanwhile: time the Msg now oldest
            return
        self._ackCall = None
        if not self._waiting:
            return
        self.log.warn(
            "output {output}: no reply from {server} in {timeout}s; reconnecting",
            output=self.name,
            server=self.label,
            timeout=self.ackTimeout,
        )
        transport: Any = self.transport
        transport.abortConnection()

    def stringReceived(self, string: bytes) -> None:
        try:
            msg = decodeMsg(string)
        except DecodeError as e:
            self.log.warn(
                "{output}: malformed reply from {server} ({error}); reconnecting",
                output=self.name,
                server=self.label,
                error=e,
            )
            self._drop()
            return
        if not self._waiting:
            self.log.warn(
                "output {output}: {server} replied to a Msg never sent; ignored",
                output=self.name,
                server=self.label,
            )
            return
        d, _ = self._waiting.popleft()
        if not self._waiting and self._ackCall is not None:
            self._ackCall.cancel()  # nothing left to time
            self._ackCall = None
        d.callback(msg)

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn(
            "{output}: reply of {length} bytes from {server} is too long; reconnecting",
            output=self.name,
            length=length,
            server=self.label,
        )
        self._drop()

    def _drop(self) -> None:
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._ackCall is not None and self._ackCall.active():
            self._ackCall.cancel()
        self._ackCall = None
        self.lostReason = reason
        if not self.abandon(reason):
            lost, self._lost = self._lost, []
            for d in lost:
                d.callback(self)
        waiting, self._waiting = self._waiting, deque()
        for reply, _ in waiting:
            reply.errback(reason)


class RiemannClientFactory(Factory):
    """Builds a `RiemannClientProtocol` for each connection `FailoverEndpoint` makes."""

    noisy = False

    def __init__(
        self, endpoint: FailoverEndpoint, clock: Any, ackTimeout: float, name: str
    ) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.ackTimeout = ackTimeout
        self.name = name

    def buildProtocol(self, addr: Any) -> RiemannClientProtocol:
        protocol = RiemannClientProtocol(
            self.endpoint.current, self.clock, self.ackTimeout, self.name
        )
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
