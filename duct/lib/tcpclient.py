"""One TCP request/reply exchange with a deadline, for the sources that speak a protocol.

`connectWithin` connects a protocol to an endpoint and `within` bounds any
Deferred, both on the source's clock, failing with `duct.lib.process.Timeout`
so that a server that does not answer turns into a ``critical`` event and
never holds a poll for longer than its ``timeout``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol

from duct.lib.process import Timeout

T = TypeVar("T")
P = TypeVar("P", bound=Protocol)


def tcpEndpoint(reactor: Any, host: str, port: int, timeout: float) -> Any:
    """An `IStreamClientEndpoint` for ``host:port``: a name, an IPv4 or an IPv6 address."""
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


def within(d: Deferred[T], seconds: float, clock: Any, what: str) -> Deferred[T]:
    """``d``, cancelled and failed with `Timeout` if it has not fired in ``seconds``."""

    def timedOut(result: object, timeout: float) -> Any:
        raise Timeout(f"{what}: no answer in {timeout:g}s")

    return d.addTimeout(seconds, clock, onTimeoutCancel=timedOut)


async def connectWithin(endpoint: Any, protocol: P, seconds: float, clock: Any, where: str) -> P:
    """Connect ``protocol`` through ``endpoint``; `Timeout` past ``seconds``."""
    connecting = endpoint.connect(Factory.forProtocol(lambda: protocol))
    await within(connecting, seconds, clock, f"connecting to {where}")
    return protocol


def reason(error: BaseException) -> str:
    """A one-line reason for a failed exchange, for an event's description."""
    text = str(error).replace("\n", " ").strip()
    return text or type(error).__name__
