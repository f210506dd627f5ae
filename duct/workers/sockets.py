"""The listening sockets the workers share, bound once in the parent.

The parent binds each endpoint with Twisted (so a port in use fails the
start with the usual message) and stops reading it at once.  On a stream
endpoint the parent's `duct.workers.handoff.Distributor` accepts, on a
descriptor of its own, and hands each connection to a worker; a UDP
socket is inherited by the workers, which read it.  A TLS endpoint is
bound as its plain TCP socket (the workers do the TLS); a UNIX socket's
file is removed when the parent stops listening, as Twisted does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import DatagramProtocol, Factory

from duct.listening import listenDatagram, listenNow
from duct.workers.endpoints import boundListen, endpointType


class SharedSockets:
    """The bound sockets, one per shared endpoint, in the order the workers inherit them.

    :param reactor: the reactor that binds them.
    :param listens: the endpoint strings (``tcp:``, ``ssl:``, ``unix:``, ``udp:``) to bind.
    """

    def __init__(self, reactor: Any, listens: list[str]) -> None:
        self.reactor = reactor
        self.listens = list(listens)
        self.ports: list[Any] = []

    def bind(self) -> None:
        """Bind every endpoint; `duct.listening.CannotListen` (and none bound) if one fails."""
        try:
            for listen in self.listens:
                port = self.bindOne(listen)
                port.stopReading()  # the hand-off accepts on its own descriptor; workers read UDP
                self.ports.append(port)
        except Exception:
            self.close()
            raise

    def bindOne(self, listen: str) -> Any:
        if endpointType(listen) == "udp":
            return listenDatagram(self.reactor, listen, DatagramProtocol(), 65536)
        endpoint = serverFromString(self.reactor, boundListen(listen))
        port, _ = listenNow(endpoint, Factory(), "listen", listen)
        return port

    def descriptors(self) -> list[int]:
        """The sockets' file descriptors, in the order of ``listens``."""
        return [port.fileno() for port in self.ports]

    def close(self) -> None:
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
