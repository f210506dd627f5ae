"""What an ingest request's body holds: events in pieces, checked a bounded step at a time.

A body is JSON (one event object, an array of them, or JSON lines; see
`duct.lib.eventjson`) or a Riemann protobuf ``Msg``, optionally gzipped.
`readBody` turns it into pieces of at most `PIECE_EVENTS` events, letting
the reactor run between steps, so that a body of 16 MiB never holds it for
more than a few milliseconds at a time.  Whatever is wrong with a body is
an `Answer`: the status, the counter of the refusal and the message.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from duct.event import Event
from duct.lib.eventjson import BadEvent, decodeText, eventFromJson, jsonValues
from duct.protocol.riemann import EncodedEvents
from duct.sources.riemann_large import PIECE_EVENTS, Refused, scan

__all__ = ["PROTOBUF_TYPES", "Answer", "readBody"]

PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/octet-stream"})
"""Content types read as a Riemann Msg; any other is read as JSON."""

INFLATE_STEP = 1024 * 1024
"""Bytes a gzipped body is inflated to per step."""

Turn = Callable[[], Awaitable[None]]


class Answer(Exception):
    """A request refused: ``code``, the ``reason`` it is counted under, a ``message``."""

    def __init__(
        self, code: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.headers = headers or {}


async def inflate(body: bytes, limit: int, turn: Turn) -> bytes:
    """A gzipped ``body`` inflated in steps; 413 once it passes ``limit`` bytes."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while True:
            chunk = inflater.decompress(data, INFLATE_STEP)
            size += len(chunk)
            if size > limit:
                raise Answer(413, "too_large", f"the body inflates to more than {limit} bytes")
            out.append(chunk)
            data = inflater.unconsumed_tail
            if not data:
                break
            await turn()
        out.append(inflater.flush())
    except zlib.error as e:
        raise Answer(400, "bad_request", f"body: not gzip: {e}") from None
    if not inflater.eof:
        raise Answer(400, "bad_request", "body: the gzip stream is cut short")
    return b"".join(out)


async def jsonEvents(
    body: bytes, maxEvents: int, hostname: str | None, now: float, turn: Turn
) -> list[list[Event]]:
    """The events of a JSON body, in pieces; 400 naming the event and field at fault."""
    pieces: list[list[Event]] = []
    piece: list[Event] = []
    count = 0
    try:
        for value in jsonValues(decodeText(body)):
            piece.append(eventFromJson(value, count, hostname, now))
            count += 1
            if count > maxEvents:
                raise Answer(
                    413,
                    "too_many_events",
                    f"more than {maxEvents} events in one request (max_events)",
                )
            if len(piece) == PIECE_EVENTS:
                pieces.append(piece)
                piece = []
                await turn()
    except BadEvent as e:
        raise Answer(400, "bad_request", str(e)) from None
    if piece:
        pieces.append(piece)
    return pieces


async def riemannEvents(body: bytes, maxEvents: int, turn: Turn) -> list[EncodedEvents]:
    """The events of a Riemann Msg, checked in steps, as pieces of its own bytes."""
    pieces: list[EncodedEvents] = []
    view = memoryview(body)
    try:
        for found in scan(body, maxEvents):
            if found is not None:
                start, stop, count = found
                pieces.append(EncodedEvents.fromPayload(bytes(view[start:stop]), count))
            await turn()
    except Refused as e:
        if e.stat == "tooMany":
            raise Answer(413, "too_many_events", e.reason) from None
        if e.stat == "queries":
            raise Answer(400, "bad_request", "queries are not supported here") from None
        raise Answer(400, "bad_request", f"body: {e.reason}") from None
    return pieces


async def readBody(
    request: Any,
    maxBody: int,
    maxEvents: int,
    hostname: str | None,
    now: float,
    turn: Turn,
) -> list[Any]:
    """The events of ``request``'s body, in pieces (lists of `Event`, or `EncodedEvents`)."""
    content = request.content
    body: bytes = content.read() if content is not None else b""
    encoding = (request.getHeader(b"content-encoding") or b"identity").strip().lower()
    if encoding == b"gzip":
        body = await inflate(body, maxBody, turn)
    elif encoding != b"identity":
        raise Answer(
            415, "unsupported", f"Content-Encoding {encoding.decode('latin-1')} is not supported"
        )
    kind = (request.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if kind.decode("latin-1") in PROTOBUF_TYPES:
        return await riemannEvents(body, maxEvents, turn)
    return await jsonEvents(body, maxEvents, hostname, now, turn)
