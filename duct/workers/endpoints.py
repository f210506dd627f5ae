"""The three forms of a shared listener's endpoint: as configured, as bound, as adopted.

The parent binds each shared endpoint once (`boundListen`: ``ssl:`` is
bound as the plain ``tcp:`` socket under it) and passes the socket to
the workers; each worker listens on `adoptedListen` instead:

- ``tcp:``/``tcp6:``: Twisted's ``systemd:domain=INET:index=N``;
- ``ssl:``, ``unix:`` and ``udp:``: ``adopted:N:<the endpoint as configured>``,
  which `adoptedEndpoint` and `adoptDatagram` turn into a port on the
  inherited descriptor.  A TLS listener's key and certificate are read
  there, in the worker, by Twisted's own ``ssl:`` parser, so a restarted
  worker reads the files again; a UNIX socket's file is left to the
  parent, which removed it when it stops, as Twisted does.

A descriptor ``N`` is found where Twisted's ``systemd:`` endpoint finds
it, in what it read of ``LISTEN_FDS``/``LISTEN_PID`` (set by
`duct.workers.__main__`).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import _parse, _parseSSL, _SystemdParser
from twisted.protocols.tls import TLSMemoryBIOFactory

SHARED_TYPES = ("tcp", "tcp6", "ssl", "unix", "udp")
"""The endpoint types a worker can adopt from the parent."""

ADOPTED = "adopted"


def endpointType(listen: str) -> str:
    return listen.split(":", 1)[0]


def escape(value: str) -> str:
    """``value`` as one field of an endpoint string (an IPv6 address has colons)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def parseUDP(listen: str) -> tuple[int, str]:
    """``udp:PORT[:interface=ADDRESS]`` as (port, interface); ValueError if it is not one."""
    args, kwargs = _parse(listen)
    if args[:1] != ["udp"] or len(args) != 2 or set(kwargs) - {"interface"}:
        raise ValueError(f"expected udp:PORT or udp:PORT:interface=ADDRESS, got {listen!r}")
    try:
        port = int(args[1])
    except ValueError:
        raise ValueError(f"not a port number: {args[1]!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"not a port number: {port}")
    return port, str(kwargs.get("interface", ""))


def tlsContext(listen: str) -> tuple[int, Any, dict[str, Any]]:
    """An ``ssl:`` endpoint's port, context factory and listening options, as Twisted parses it.

    It reads the key and certificate files: a missing or bad one raises.
    """
    args, kwargs = _parse(listen)
    (port, _, contextFactory), options = _parseSSL(None, *args[1:], **kwargs)
    return int(port), contextFactory, options


def family(listen: str) -> int:
    """The address family of the socket ``listen`` binds."""
    kind = endpointType(listen)
    if kind == "unix":
        return socket.AF_UNIX
    if kind == "tcp6":
        return socket.AF_INET6
    _, kwargs = _parse(listen)
    return socket.AF_INET6 if ":" in str(kwargs.get("interface", "")) else socket.AF_INET


def boundListen(listen: str) -> str:
    """What the parent binds for ``listen``: a TLS endpoint's plain TCP socket, else itself."""
    if endpointType(listen) != "ssl":
        return listen
    args, kwargs = _parse(listen)
    bound = f"tcp:{args[1]}"
    for key in ("interface", "backlog"):
        if key in kwargs:
            bound += f":{key}={escape(str(kwargs[key]))}"
    return bound


def adoptedListen(index: int, listen: str) -> str:
    """The endpoint a worker listens on instead of ``listen``: inherited descriptor ``index``."""
    if endpointType(listen) in ("tcp", "tcp6"):
        domain = "INET6" if family(listen) == socket.AF_INET6 else "INET"
        return f"systemd:domain={domain}:index={index}"
    return f"{ADOPTED}:{index}:{listen}"


def isAdopted(listen: str) -> bool:
    return listen.startswith(f"{ADOPTED}:")


def splitAdopted(listen: str) -> tuple[int, str]:
    """``adopted:N:ENDPOINT`` as (the descriptor, ENDPOINT)."""
    _, index, original = listen.split(":", 2)
    # Twisted's own view: reading LISTEN_FDS clears it, and its systemd: parser did at import.
    return _SystemdParser._sddaemon.inheritedDescriptors()[int(index)], original


class _KeptUNIXPort(unix.Port):
    """An adopted UNIX port that leaves the socket, and its file, to the parent that bound it.

    Twisted's UNIX port shuts its socket down and removes its file when it
    stops listening, which a worker that stops must not do: the socket is
    the one every worker shares, and the parent's file names it.  (Twisted
    spares an adopted TCP socket the shutdown, but not a UNIX one.)
    """

    _shouldShutdown = False

    def connectionLost(self, reason: Any) -> None:
        tcp.Port.connectionLost(self, reason)


class AdoptedEndpoint:
    """A stream server endpoint on an inherited TLS or UNIX socket (``adopted:N:...``)."""

    def __init__(self, reactor: Any, listen: str) -> None:
        self.reactor = reactor
        self.fd, self.original = splitAdopted(listen)

    def listen(self, factory: Any) -> Deferred[Any]:
        kind = endpointType(self.original)
        if kind == "unix":
            port = _KeptUNIXPort._fromListeningDescriptor(self.reactor, self.fd, factory)
            port.startListening()
            return succeed(port)
        if kind != "ssl":
            raise ValueError(f"no stream socket to adopt for {self.original!r}")
        _, contextFactory, _ = tlsContext(self.original)
        wrapped = TLSMemoryBIOFactory(contextFactory, False, factory)
        port = self.reactor.adoptStreamPort(self.fd, family(self.original), wrapped)
        port._type = "TLS"  # as Twisted's listenSSL names it in its logs
        return succeed(port)


def adoptedEndpoint(reactor: Any, listen: str) -> AdoptedEndpoint:
    return AdoptedEndpoint(reactor, listen)


def adoptDatagram(reactor: Any, listen: str, protocol: Any, maxPacketSize: int) -> Any:
    """A UDP port on the inherited socket ``adopted:N:udp:...``."""
    fd, original = splitAdopted(listen)
    return reactor.adoptDatagramPort(fd, family(original), protocol, maxPacketSize)
