"""Binding listeners at start, so that a port that cannot be bound fails the start.

A relay whose only job is to listen is not healthy when it cannot: the web
server and the listener sources bind while the service starts, and a
failure there is an exception naming the address, which ``twistd`` turns
into exit status 1 (`duct.tap`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from duct.errors import Problem
from duct.options import Option

WORKERS_OPTION = Option(
    "workers",
    "integer",
    None,
    "worker processes that run this listener (default: the top-level workers; 0: the parent)",
    minimum=0,
)
"""The per-listener ``workers:``, declared by each listener that worker processes can run."""


class CannotListen(Exception):
    """A listener could not bind its address.

    :param key: the configuration key that names the address (``listen``).
    :param address: what it tried to listen on, as configured.
    :param reason: why, as the system said it.
    """

    def __init__(self, key: str, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.key = key
        self.address = address
        self.reason = reason


def listenNow(
    endpoint: Any, factory: Any, key: str, address: str
) -> tuple[Any, Deferred[Any] | None]:
    """Listen on ``endpoint``; raise `CannotListen` if that fails at once.

    TCP, TLS and UNIX endpoints bind synchronously, so a port in use is
    known before this returns.  Returns ``(port, None)`` once bound, or
    ``(None, pending)`` for an endpoint that binds later: ``pending`` then
    fires with the port, or fails.
    """
    d = endpoint.listen(factory)
    if not d.called:
        return None, d
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    (result,) = outcome
    if isinstance(result, Failure):
        raise CannotListen(key, address, result.getErrorMessage())
    return result, None


def serverEndpoint(reactor: Any, listen: str) -> Any:
    """The stream server endpoint for ``listen``: Twisted's, or a socket inherited from a parent.

    ``handoff:N:...`` is what a worker listens on instead of a stream
    endpoint the parent accepts on (`duct.workers.endpoints`).
    """
    from duct.workers.endpoints import isHandOff

    if isHandOff(listen):
        from duct.workers.receive import HandOffEndpoint

        return HandOffEndpoint(listen)
    return serverFromString(reactor, listen)


def listenDatagram(reactor: Any, listen: str, protocol: Any, maxPacketSize: int) -> Any:
    """Listen for datagrams on ``udp:PORT[:interface=ADDRESS]``, or on an inherited socket.

    Raises `CannotListen` (key ``listen``) if the port cannot be bound.
    """
    from twisted.internet.error import CannotListenError

    from duct.workers.endpoints import adoptDatagram, isAdopted, parseUDP

    if isAdopted(listen):
        return adoptDatagram(reactor, listen, protocol, maxPacketSize)
    port, interface = parseUDP(listen)
    try:
        return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=maxPacketSize)
    except CannotListenError as e:
        raise CannotListen("listen", listen, str(e)) from None


def probe(config: Any, reactor: Any) -> list[Problem]:
    """Bind and release every address ``config`` listens on; a problem for each that fails.

    What ``duct check`` does so that a port in use is found before the
    agent starts.  The web server's endpoint is bound with an empty
    factory, and each listener source is built on its own (no output is
    built, so no buffer directory is opened) and started, then stopped.
    """
    problems: list[Problem] = []
    web = config.get("web")
    if web is not None:
        listen = web.get("listen") or "tcp:8901:interface=127.0.0.1"
        try:
            endpoint = serverFromString(reactor, listen)
            port, pending = listenNow(endpoint, Factory(), "listen", listen)
        except CannotListen as e:
            problems.append(Problem(config.path, "web", e.key, str(e)))
        else:
            _release(port, pending)
    stub = _ProbeDuct(reactor, config)
    for item in config.sources:
        if not getattr(item.cls, "listens", False):
            continue
        source = item.cls(dict(item.config), lambda events: None, stub)
        try:
            source.startTimer()
        except CannotListen as e:
            problems.append(Problem(item.file, item.label, e.key, str(e)))
        except Exception as e:  # an endpoint that cannot be built: a TLS key that is unreadable...
            why = f"cannot listen: {type(e).__name__}: {e}"
            problems.append(Problem(item.file, item.label, "listen", why))
        else:
            source.stopTimer()
    return problems


def _release(port: Any, pending: Deferred[Any] | None) -> None:
    if port is not None:
        port.stopListening()
    elif pending is not None:
        pending.cancel()


class _ProbeDuct:
    """What a listener source needs of the agent while it is probed."""

    def __init__(self, reactor: Any, config: Any) -> None:
        self.reactor = self.clock = reactor
        self.config = config
        self.hostname = config.get("hostname") or "localhost"
