"""The three forms of a shared listener's endpoint: as configured, as bound, as taken over.

The parent binds each shared endpoint once (`boundListen`: ``ssl:`` is
bound as the plain ``tcp:`` socket under it).  What a worker listens on
instead (`adoptedListen`):

- a stream endpoint (``tcp:``, ``tcp6:``, ``ssl:``, ``unix:``):
  ``handoff:N:<the endpoint as configured>``, the connections the parent
  accepts on it and hands to the worker (`duct.workers.handoff`,
  `duct.workers.receive`);
- ``udp:``: ``adopted:FD:<the endpoint as configured>``, the bound socket
  itself, inherited as descriptor FD, which `adoptDatagram` reads: each
  datagram goes to one of the workers reading.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.endpoints import _parse, _parseSSL

SHARED_TYPES = ("tcp", "tcp6", "ssl", "unix", "udp")
"""The endpoint types a worker can adopt from the parent."""

ADOPTED = "adopted"
HANDOFF = "handoff"


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


def adoptedListen(listen: str, index: int, fd: int | None = None) -> str:
    """What a worker listens on instead of ``listen``, shared listener ``index``.

    A stream endpoint takes the connections handed off under ``index``; a
    UDP one adopts the inherited descriptor ``fd``.
    """
    if endpointType(listen) == "udp":
        if fd is None:
            raise ValueError(f"{listen}: a UDP socket is inherited, and no descriptor was given")
        return f"{ADOPTED}:{fd}:{listen}"
    return f"{HANDOFF}:{index}:{listen}"


def isAdopted(listen: str) -> bool:
    return listen.startswith(f"{ADOPTED}:")


def isHandOff(listen: str) -> bool:
    return listen.startswith(f"{HANDOFF}:")


def splitAdopted(listen: str) -> tuple[int, str]:
    """``adopted:FD:ENDPOINT`` as (FD, ENDPOINT)."""
    _, fd, original = listen.split(":", 2)
    return int(fd), original


def adoptDatagram(reactor: Any, listen: str, protocol: Any, maxPacketSize: int) -> Any:
    """A UDP port on the inherited socket ``adopted:FD:udp:...``."""
    fd, original = splitAdopted(listen)
    return reactor.adoptDatagramPort(fd, family(original), protocol, maxPacketSize)
