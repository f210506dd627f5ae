"""A small Redis client: RESP2 over one Twisted TCP connection.

Only what the Redis sources need: send a command, get its reply.  Replies
come back in order, so each command waits on the Deferred at the head of
a queue.  Simple strings and bulk strings are bytes, integers int, arrays
lists, a nil None; an error reply fails the command with `RedisError`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure


class RedisError(Exception):
    """An error reply (``-ERR ...``) from the server."""


class RESPProtocolError(Exception):
    """Bytes that are not RESP."""


def encodeCommand(*args: str | bytes | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    """More bytes are needed."""


def parseReply(data: bytes, start: int = 0) -> tuple[Any, int]:
    """Parse one reply at ``data[start:]``; return it and where the next begins.

    Raises `_Incomplete` when the reply is not all there yet; an error reply
    is returned as a `RedisError` instance, not raised.
    """
    end = data.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete()
    kind, line, after = data[start : start + 1], data[start + 1 : end], end + 2
    if kind == b"+":
        return line, after
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return int(line), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(data) < after + size + 2:
            raise _Incomplete()
        return data[after : after + size], after + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parseReply(data, after)
            items.append(item)
        return items, after
    raise RESPProtocolError(f"not a RESP reply: {data[start : start + 40]!r}")


class RESPClient(Protocol):
    """Sends commands and fires each one's Deferred with its reply, in order."""

    def __init__(self) -> None:
        self._buffer = b""
        self._waiting: deque[Deferred[Any]] = deque()

    def command(self, *args: str | bytes | int) -> Deferred[Any]:
        """Send one command; the Deferred fires with its reply."""
        d: Deferred[Any] = Deferred()
        self._waiting.append(d)
        transport: Any = self.transport
        transport.write(encodeCommand(*args))
        return d

    def close(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        offset = 0
        try:
            while offset < len(self._buffer) and self._waiting:
                reply, offset = parseReply(self._buffer, offset)
                d = self._waiting.popleft()
                if isinstance(reply, RedisError):
                    d.errback(reply)
                else:
                    d.callback(reply)
        except _Incomplete:
            pass
        except (RESPProtocolError, ValueError) as e:
            self._failAll(Failure(RESPProtocolError(str(e))))
            transport: Any = self.transport
            transport.abortConnection()
            return
        self._buffer = self._buffer[offset:]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._failAll(reason)

    def _failAll(self, reason: Failure) -> None:
        while self._waiting:
            self._waiting.popleft().errback(reason)


def parseInfo(text: str) -> dict[str, str]:
    """The ``field:value`` lines of an ``INFO`` reply, sections ignored."""
    fields = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value
    return fields
