"""``duct send``: events from the command line to a Riemann server, or to an agent's listener.

The events go in Msgs of at most `PER_MSG` events over one TCP (or TLS)
connection, each Msg waiting for its reply before the next.  `send`
returns an exit status: 0 once every Msg was acknowledged, 1 if the
server refused one (its error is printed), 2 if it could not be reached
or did not answer within the timeout.  Events are given as options
(`eventFromArguments`) or as JSON, as the HTTP ingest takes them
(`eventsFromJson`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from duct.event import Event, defaultHostname
from duct.lib.eventjson import BadEvent, decodeText, eventFromJson, jsonValues
from duct.protocol.riemann import encodeEvent, frame, msgFromEncoded, pb

PER_MSG = 1000
"""Events in one Msg at most: what a listener's default ``max_events`` takes many times over."""

DEFAULT_SERVER = "127.0.0.1:5555"


class SendError(Exception):
    """The events could not be sent; ``code`` is the exit status to give (1 refused, 2 else)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def eventFromArguments(
    service: str,
    host: str | None = None,
    state: str | None = None,
    metric: float | None = None,
    ttl: float | None = None,
    description: str | None = None,
    tags: Sequence[str] = (),
    attributes: Sequence[str] = (),
    when: float | None = None,
) -> Event:
    """One event from ``duct send``'s options; ValueError naming the option if one is bad."""
    pairs: dict[str, str] = {}
    for attribute in attributes:
        key, sep, value = attribute.partition("=")
        if not sep or not key:
            raise ValueError(f"--attribute {attribute!r}: expected KEY=VALUE")
        pairs[key] = value
    return Event(
        state,
        service,
        description,
        metric,
        ttl,
        tags=list(tags),
        hostname=host or defaultHostname(),
        evtime=time.time() if when is None else when,
        attributes=pairs or None,
    )


def eventsFromJson(body: bytes, host: str | None = None) -> list[Event]:
    """The events of a JSON body (an object, an array or JSON lines); `BadEvent` if one is bad."""
    text = decodeText(body)
    now = time.time()
    hostname = host or defaultHostname()
    return [
        eventFromJson(value, index, hostname, now) for index, value in enumerate(jsonValues(text))
    ]


def parseServer(server: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[v6]:PORT`` for an IPv6 address); ValueError if it is not one."""
    host, port = server, "5555"
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"--server {server!r}: expected [ADDRESS]:PORT")
            port = rest[1:]
    elif server.count(":") == 1:
        host, port = server.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--server {server!r}: expected HOST or HOST:PORT")
    return host, int(port)


class _Client(Int32StringReceiver):
    """Sends each Msg and waits for its reply; ``done`` fires once all are acknowledged."""

    MAX_LENGTH = 16 * 1024 * 1024
    transport: Any

    def __init__(self, msgs: list[bytes]) -> None:
        self.msgs = msgs
        self.sent = 0
        self.done: Deferred[int] = Deferred()

    def connectionMade(self) -> None:
        self._next()

    def _next(self) -> None:
        if self.sent == len(self.msgs):
            self.done.callback(self.sent)
            self.transport.loseConnection()
            return
        self.transport.write(frame(self.msgs[self.sent]))
        self.sent += 1

    def stringReceived(self, data: bytes) -> None:
        try:
            reply = pb.Msg.FromString(data)
        except Exception:  # noqa: BLE001 - anything unreadable is the server's fault
            self.fail(SendError("the server's reply is not a Riemann Msg", 2))
            return
        if not reply.ok:
            self.fail(SendError(f"refused: {reply.error or 'no reason given'}", 1))
            return
        self._next()

    def lengthLimitExceeded(self, length: int) -> None:
        self.fail(SendError(f"the server's reply of {length} bytes is too long", 2))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        from OpenSSL.SSL import Error as TLSError

        why = reason.getErrorMessage()
        if reason.check(TLSError):
            self.fail(SendError(f"TLS failed: {why}", 2))
        else:
            self.fail(SendError(f"the connection closed before a reply: {why}", 2))

    def fail(self, error: SendError) -> None:
        if not self.done.called:
            self.done.errback(Failure(error))
        if self.transport is not None and self.transport.connected:
            self.transport.loseConnection()


def msgsOf(events: Sequence[Event]) -> list[bytes]:
    """The serialized Msgs that carry ``events``, `PER_MSG` at most in each."""
    encoded = [encodeEvent(event) for event in events]
    return [msgFromEncoded(encoded[i : i + PER_MSG]) for i in range(0, len(encoded), PER_MSG)]


async def send(
    reactor: Any,
    events: Sequence[Event],
    server: str = DEFAULT_SERVER,
    timeout: float = 10.0,
    tls: Any = None,
) -> int:
    """Send ``events`` to ``server``; the number of Msgs acknowledged, or `SendError`.

    ``tls`` is a client TLS options object (``optionsForClientTLS``) to
    speak TLS with, or None for plain TCP.  ``timeout`` bounds the whole
    exchange, connecting included.
    """
    host, port = parseServer(server)
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    client = _Client(msgsOf(events))
    connecting = connectProtocol(endpoint, client)
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        if connecting.called:
            client.fail(SendError(f"no reply from {server} within {timeout:g}s", 2))
        else:
            connecting.cancel()

    call = reactor.callLater(timeout, expire)
    try:
        try:
            await connecting
        except Exception as e:  # refused, unreachable, a name that does not resolve, TLS...
            if expired:
                raise SendError(f"cannot connect to {server} within {timeout:g}s", 2) from None
            raise SendError(f"cannot connect to {server}: {e}", 2) from None
        return await client.done
    finally:
        if call.active():
            call.cancel()


__all__ = [
    "BadEvent",
    "DEFAULT_SERVER",
    "PER_MSG",
    "SendError",
    "eventFromArguments",
    "eventsFromJson",
    "msgsOf",
    "parseServer",
    "send",
]
