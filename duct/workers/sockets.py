"""The listening sockets the workers share, bound once in the parent.

The parent binds each endpoint with Twisted (so a port in use fails the
start with the usual message) and stops reading it at once: it never
accepts a connection itself.  Each worker inherits the descriptors and
adopts them; the kernel hands each new connection to one of the workers
waiting in ``accept``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory

from duct.listening import listenNow


class SharedSockets:
    """The bound sockets, one per shared endpoint, in the order the workers inherit them.

    :param reactor: the reactor that binds them.
    :param listens: the endpoint strings (``tcp:...``) to bind.
    """

    def __init__(self, reactor: Any, listens: list[str]) -> None:
        self.reactor = reactor
        self.listens = list(listens)
        self.ports: list[Any] = []

    def bind(self) -> None:
        """Bind every endpoint; `duct.listening.CannotListen` (and none bound) if one fails."""
        try:
            for listen in self.listens:
                port, _ = listenNow(
                    serverFromString(self.reactor, listen), Factory(), "listen", listen
                )
                port.stopReading()  # the workers accept; the parent never does
                self.ports.append(port)
        except Exception:
            self.close()
            raise

    def descriptors(self) -> list[int]:
        """The sockets' file descriptors, in the order of ``listens``."""
        return [port.fileno() for port in self.ports]

    def close(self) -> None:
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
