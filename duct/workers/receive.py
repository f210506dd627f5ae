"""A worker's side of stream listeners: connections the parent accepted, handed to it.

The worker inherits its end of a UNIX socket pair (`duct.workers.handoff`)
and reads connected sockets from it, each with the index of its listener.
A listener source in the worker listens on ``handoff:INDEX:ENDPOINT``
(`duct.workers.endpoints.adoptedListen`): its factory is registered here under
INDEX, and each socket for INDEX is adopted as a connection of that
factory, inside TLS when ENDPOINT is an ``ssl:`` one (its key and
certificate are read in the worker, by Twisted's own ``ssl:`` parser).
A connection's end is told to the parent, so that it can give the next
ones to the worker holding fewest.

Sockets that come while no factory is registered for their listener (a
reload restarting it) wait, a bounded number of them, for the next one.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from duct.workers.endpoints import endpointType, tlsContext
from duct.workers.handoff import CLOSED, RECORD

MAX_WAITING = 1000
"""Sockets kept for a listener that has no factory now; older ones beyond are closed."""

_receiver: Receiver | None = None
"""This worker's receiver, once `listenForHandOffs` set it up."""


@implementer(IFileDescriptorReceiver)
class Receiver(Protocol):
    """Reads (index, socket) hand-offs and adopts each socket as a connection."""

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.factories: dict[int, Any] = {}
        self.waiting: dict[int, deque[int]] = {}
        self._fds: deque[int] = deque()
        self._partial = b""
        self.adopted = 0

    def fileDescriptorReceived(self, fd: int) -> None:
        os.set_inheritable(fd, False)
        self._fds.append(fd)

    def dataReceived(self, data: bytes) -> None:
        data = self._partial + data
        size = RECORD.size
        end = len(data) - len(data) % size
        self._partial = data[end:]
        for offset in range(0, end, size):
            (index,) = RECORD.unpack_from(data, offset)
            if self._fds:
                self._deliver(index, self._fds.popleft())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        while self._fds:
            os.close(self._fds.popleft())
        if self.reactor.running:
            self.log.warn("worker: the parent's hand-off socket closed")

    def register(self, index: int, factory: Any) -> None:
        self.factories[index] = factory
        waiting = self.waiting.pop(index, deque())
        while waiting:
            self._deliver(index, waiting.popleft())

    def unregister(self, index: int, factory: Any) -> None:
        if self.factories.get(index) is factory:
            del self.factories[index]

    def _deliver(self, index: int, fd: int) -> None:
        factory = self.factories.get(index)
        if factory is None:
            waiting = self.waiting.setdefault(index, deque())
            waiting.append(fd)
            if len(waiting) > MAX_WAITING:
                self._closed(waiting.popleft())
            return
        try:
            os.set_blocking(fd, False)
            transport = self.reactor.adoptStreamConnection(fd, _family(fd), factory)
        except OSError as e:  # the client was gone before it came
            self.log.info("worker: a handed-off connection was already closed: {error}", error=e)
            transport = None
        finally:
            os.close(fd)  # the transport holds its own duplicate
        if transport is None:
            self._notify()
            return
        self.adopted += 1
        _whenLost(transport.protocol, self._notify)

    def _closed(self, fd: int) -> None:
        os.close(fd)
        self._notify()

    def _notify(self) -> None:
        transport: Any = self.transport
        if transport is not None and transport.connected:
            transport.write(CLOSED)


def _family(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    try:
        return int(sock.family)
    finally:
        sock.detach()


def _whenLost(protocol: Any, callback: Any) -> None:
    """Call ``callback`` after ``protocol`` loses its connection.

    The protocol is left as it is, on its own transport (no wrapper between
    them, which would cost every read a call and hide the TCP transport).
    """
    lost = protocol.connectionLost

    def connectionLost(reason: Failure = connectionDone) -> None:
        try:
            lost(reason)
        finally:
            callback()

    protocol.connectionLost = connectionLost


def listenForHandOffs(reactor: Any, fd: int) -> Receiver:
    """Read hand-offs on the inherited socket ``fd``; the endpoints then find the receiver."""
    global _receiver
    receiver = Receiver(reactor)
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, Factory.forProtocol(lambda: receiver))
    os.close(fd)
    _receiver = receiver
    return receiver


class HandOffPort:
    """What a listener holds while it takes handed-off connections."""

    def __init__(self, receiver: Receiver, index: int, factory: Any, listen: str) -> None:
        self.receiver = receiver
        self.index = index
        self.factory = factory
        self.listen = listen

    def getHost(self) -> str:
        return f"{self.listen} (connections from the parent)"

    def stopListening(self) -> Deferred[None]:
        self.receiver.unregister(self.index, self.factory)
        self.factory.doStop()
        return succeed(None)


class HandOffEndpoint:
    """``handoff:INDEX:ENDPOINT``: the connections the parent accepts on ENDPOINT."""

    def __init__(self, listen: str) -> None:
        _, index, self.original = listen.split(":", 2)
        self.index = int(index)

    def listen(self, factory: Any) -> Deferred[HandOffPort]:
        receiver = _receiver
        if receiver is None:
            raise RuntimeError(f"{self.original}: no hand-off socket from a parent here")
        port = HandOffPort(receiver, self.index, factory, self.original)
        factory.doStart()
        if endpointType(self.original) == "ssl":
            _, contextFactory, _ = tlsContext(self.original)
            factory = TLSMemoryBIOFactory(contextFactory, False, factory)
        receiver.register(self.index, factory)
        return succeed(port)
