"""The parent's side of stream listeners in workers: accept each connection, hand it on.

Why the parent accepts: when every worker accepts from one shared
socket, the kernel wakes them all and the first to run takes the
connection, so a few long-lived connections (a Riemann client keeps its
own open) end up mostly in one worker; four clients on two workers were
split 3 to 1 in every run of ``bench/riemann_relay.py --workers``.
Instead, the parent accepts, and passes the connected socket
(``SCM_RIGHTS`` over a UNIX socket pair, one per worker) to the worker
that runs the listener and holds the fewest connections, in turn when
several hold as few. Each worker tells the parent, one byte each, when a
connection it was given closes, and which listeners it takes connections
for when it starts and after each reload (one a reload removed gets
none). The parent never reads from a connection: it costs an accept and
a ``sendmsg`` per connection, nothing per event.

A connection that no worker can take now (none is serving yet, or every
socket pair is full) waits in the listening socket's backlog: the parent
stops accepting until a worker is ready.  One whose hand-off fails (the
worker just died) goes to the next worker, or is closed and counted if
there is none, and its client connects again.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

RECORD = struct.Struct(">H")
"""What goes with each handed-off socket: the index of its listener."""

CLOSED = b"c"
"""What a worker sends back for each handed-off connection that closed."""

ACCEPTS_PER_READ = 64
"""Connections accepted each time a listening socket is readable, before the reactor turns."""


class WorkerLink(Protocol):
    """The parent's end of one worker's socket pair: sockets out, closes back.

    :param sock: the parent's end, non-blocking; sockets are sent on it
        directly, so that each is closed here as soon as it is sent.
    :param listeners: the indexes of the listeners the worker runs.
    """

    def __init__(
        self, sock: socket.socket, listeners: set[int], onLost: Callable[[], None]
    ) -> None:
        self.sock = sock
        self.listeners = listeners
        self.onLost = onLost
        self.open = 0
        """Connections handed to the worker that it has not reported closed."""
        self.handed = 0
        self.ready = False
        self.lost = False

    def send(self, index: int, conn: socket.socket) -> bool:
        """Hand ``conn`` to the worker; False if its socket pair cannot take it now."""
        try:
            socket.send_fds(self.sock, [RECORD.pack(index)], [conn.fileno()])
        except BlockingIOError:
            return False
        except OSError:
            self.lost = True  # the worker is gone: its end of the pair closed
            return False
        self.open += 1
        self.handed += 1
        return True

    def dataReceived(self, data: bytes) -> None:
        self.open = max(0, self.open - data.count(CLOSED))

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.lost:
            self.lost = True
            self.onLost()

    @property
    def available(self) -> bool:
        return self.ready and not self.lost

    def close(self) -> None:
        self.lost = True
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()
        self.sock.close()


@implementer(IReadDescriptor)
class Acceptor:
    """Accepts on one bound listening socket and gives each connection to ``handOff``.

    :param sock: a duplicate of the listening socket (the bound port keeps its own).
    :param handOff: takes (index, connection); returns whether a worker took it.
    """

    def __init__(
        self, reactor: Any, index: int, sock: socket.socket, handOff: Callable[..., bool]
    ) -> None:
        self.reactor = reactor
        self.index = index
        self.sock = sock
        self.handOff = handOff
        self.reading = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "workers-accept"

    def startReading(self) -> None:
        if not self.reading and self.sock.fileno() >= 0:
            self.reading = True
            self.reactor.addReader(self)

    def stopReading(self) -> None:
        if self.reading:
            self.reading = False
            self.reactor.removeReader(self)

    def doRead(self) -> None:
        for _ in range(ACCEPTS_PER_READ):
            if not self.reading:
                return  # no worker can take one now: the rest wait in the backlog
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # out of descriptors: the connections wait for the next read
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                raise
            with conn:
                self.handOff(self.index, conn)

    def connectionLost(self, reason: Failure) -> None:
        self.stopReading()

    def close(self) -> None:
        self.stopReading()
        self.sock.close()


class Distributor:
    """Hands the connections of every stream listener to the workers that run it.

    :param reactor: watches the listening sockets and the socket pairs.
    :param ports: index -> the bound listening port (only its descriptor is read).
    """

    log = Logger()

    def __init__(self, reactor: Any, ports: dict[int, Any]) -> None:
        self.reactor = reactor
        self.acceptors = {
            index: Acceptor(reactor, index, _duplicate(port), self.handOff)
            for index, port in ports.items()
        }
        self.links: dict[int, WorkerLink] = {}
        self._turn = 0
        self.dropped = 0
        """Connections closed because no worker could take them."""

    def link(self, number: int, listeners: set[int]) -> socket.socket:
        """A socket pair for worker ``number``: returns the worker's end, to be inherited.

        The link takes connections once `ready` says the worker serves.
        """
        self.unlink(number)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        link = WorkerLink(ours, listeners & set(self.acceptors), self._resume)
        self.reactor.adoptStreamConnection(
            ours.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: link)
        )
        self.links[number] = link
        return theirs

    def retarget(self, number: int, listeners: set[int]) -> None:
        """Worker ``number`` takes connections for ``listeners`` only, as it said (a reload)."""
        link = self.links.get(number)
        if link is not None:
            link.listeners = listeners & set(self.acceptors)
            self._resume()

    def ready(self, number: int) -> None:
        link = self.links.get(number)
        if link is not None:
            link.ready = True
            self._resume()

    def unlink(self, number: int) -> None:
        link = self.links.pop(number, None)
        if link is not None:
            link.close()
            self._resume()

    def start(self) -> None:
        self._resume()

    def stop(self) -> None:
        """Accept nothing more; connections not yet accepted wait for the next start."""
        for acceptor in self.acceptors.values():
            acceptor.close()
        links, self.links = self.links, {}
        for link in links.values():
            link.close()

    def handOff(self, index: int, conn: socket.socket) -> bool:
        """Give ``conn`` to the worker of listener ``index`` with the fewest connections."""
        for link in self._candidates(index):
            if link.send(index, conn):
                return True
        self.dropped += 1
        self.log.warn(
            "workers: no worker could take a connection to listener {index}; it is closed"
            " ({dropped} so far)",
            index=index,
            dropped=self.dropped,
        )
        self._resume()  # stops accepting if no worker is ready
        return False

    def _candidates(self, index: int) -> list[WorkerLink]:
        links = [link for link in self.links.values() if link.available and index in link.listeners]
        if not links:
            return []
        self._turn = (self._turn + 1) % len(links)
        links = links[self._turn :] + links[: self._turn]
        return sorted(links, key=lambda link: link.open)  # stable: ties keep their turn

    def _resume(self) -> None:
        """Accept on each listener that a ready worker runs; not on the others."""
        links = [link for link in self.links.values() if link.available]
        for index, acceptor in self.acceptors.items():
            if any(index in link.listeners for link in links):
                acceptor.startReading()
            else:
                acceptor.stopReading()

    def info(self, number: int) -> dict[str, int]:
        """Worker ``number``'s connections: open now, and handed to it in all."""
        link = self.links.get(number)
        if link is None:
            return {"connections": 0, "connections_handed": 0}
        return {"connections": link.open, "connections_handed": link.handed}


def _duplicate(port: Any) -> socket.socket:
    sock = socket.socket(fileno=os.dup(port.fileno()))
    sock.setblocking(False)
    return sock
