"""POST batches of events to a URL: a JSON array, JSON lines or a Riemann Msg."""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from duct.lib.http import HTTP_CLIENT_OPTIONS, HTTPError
from duct.lib.json import eventArray, eventJson, eventLines
from duct.lib.retryafter import retryAfter
from duct.options import REQUIRED, Option
from duct.output import Refused
from duct.outputs.riemann_bytes import RiemannBytesOutput
from duct.protocol.riemann import msgFromEncoded, pb
from duct.stats import Stat, counter

__all__ = ["FORMATS", "HTTP", "Unavailable"]

FORMATS = ("json", "jsonl", "riemann")

CONTENT_TYPES = {
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "riemann": "application/x-protobuf",
}

REFUSES_EVERYONE = frozenset({401, 403, 404, 407})
"""Statuses that say the destination refuses any batch (credentials, a wrong URL):
retried without end, so that ``/health`` shows the output stalled."""


class Unavailable(Exception):
    """The destination is busy or failing (429 or 5xx); ``retryAfter`` is when to come
    back, in seconds, or None for the writer's own backoff."""

    def __init__(self, message: str, retryAfter: float | None = None) -> None:
        super().__init__(message)
        self.retryAfter = retryAfter


def firstLine(text: str) -> str:
    """The first non-empty line of a response body, for the log ("" for none)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


class HTTP(RiemannBytesOutput):
    """POST each batch of events to ``url``.

    The body is a JSON array of events (``format: json``), one JSON object
    per line (``jsonl``), each with the fields of `Event.asDict` (host,
    service, state, metric, ttl, tags, attributes, description, time,
    type; NaN and infinities as null), or one Riemann protobuf ``Msg``
    (``riemann``, ``Content-Type: application/x-protobuf``).  With
    ``gzip`` it is compressed (``Content-Encoding: gzip``).  ``token``
    sends ``Authorization: Bearer``; ``user`` and ``password``, basic
    authentication; ``headers``, anything else.

    What the answer means:

    - 2xx: the batch is delivered and leaves the buffer.
    - 429 and 5xx: the destination is busy or failing; the batch is sent
      again after the ``Retry-After`` the server gave (seconds or an HTTP
      date, at most ``retry_after_max``), else after the usual backoff
      (``retry_initial`` doubling up to ``retry_max``).
    - 401, 403, 404, 407 and 3xx: the destination would refuse any batch
      (credentials, a wrong URL); the batch is retried without end, and
      ``/health`` shows the output stalled after ``stall_after``.
    - Any other 4xx (400, 413, 422, ...): the destination refuses what the
      batch holds.  The batch is split in halves until the events it
      refuses stand alone; those are dropped, counted as ``rejected`` and
      logged with the first line of the response body, and every other
      event is delivered.
    - No answer within ``timeout``, or a dropped connection: retried.

    With ``format: riemann`` events are queued as their Riemann bytes, and
    events relayed from a Riemann listener pass through unparsed.
    """

    options = (
        Option("url", "string", REQUIRED, "where each batch is POSTed (http:// or https://)"),
        Option(
            "format",
            "string",
            "json",
            "body: a JSON array, JSON lines, or a Riemann protobuf Msg",
            choices=FORMATS,
        ),
        Option("gzip", "boolean", False, "compress each body (Content-Encoding: gzip)"),
        Option("token", "string", None, "bearer token sent as Authorization: Bearer"),
        Option(
            "retry_after_max",
            "number",
            300.0,
            "longest Retry-After honoured, in seconds (a longer one waits this long)",
            minimum=0,
        ),
        *HTTP_CLIENT_OPTIONS,
    )

    stats: tuple[Stat, ...] = (
        counter("responses", "responses", "http_responses", "responses by status", "status"),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        # Decided before the buffer is built: it holds Riemann bytes for format riemann.
        self.acceptsEncoded = config.get("format") == "riemann"
        super().__init__(config, duct)
        config = self.config
        self.url: str = config["url"]
        self.format: str = config["format"]
        self.gzip: bool = config["gzip"]
        self.retryAfterMax = float(config["retry_after_max"])
        self.headers: dict[str, str] = {"Content-Type": CONTENT_TYPES[self.format]}
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        if config["token"]:
            self.headers["Authorization"] = f"Bearer {config['token']}"
        self.responses: dict[int, int] = {}
        """Responses received, by status code."""
        self._pool: Any = None

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        url = config.get("url")
        if isinstance(url, str):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(("url", f"expected an http:// or https:// URL, got {url!r}"))
        if config.get("token") and config.get("user") is not None:
            problems.append(("token", "give token or user and password, not both"))
        if config.get("password") is not None and config.get("user") is None:
            problems.append(("password", "password needs user"))
        for name, value in (config.get("headers") or {}).items():
            if not isinstance(name, str) or not isinstance(value, (str, int, float)):
                problems.append(("headers", f"expected text names and values, got {name!r}"))
            elif name.lower() == "authorization" and (
                config.get("token") or config.get("user") is not None
            ):
                problems.append(("headers", "Authorization is already set by token or user"))
        return problems

    def describeItem(self, item: Any) -> str:
        if isinstance(item, bytes):
            try:
                event = pb.Event.FromString(item)
                return f"{event.host} {event.service}"
            except Exception:  # noqa: BLE001 - describe what can be described
                pass
        return super().describeItem(item)

    # -- lifecycle -------------------------------------------------------------------

    def createClient(self) -> None:
        """Keep connections open between batches, up to one per batch in flight."""
        self._pool = self.http.keepConnections(self.maxInFlight)

    def closeClient(self) -> Any:
        pool, self._pool = self._pool, None
        if pool is not None:
            return pool.closeCachedConnections()
        return None

    # -- writing -------------------------------------------------------------------

    def encode(self, events: list[Any]) -> bytes:
        """The request body for a batch."""
        if self.format == "riemann":
            body = msgFromEncoded(events)
        else:
            json = self.format == "json"
            try:  # the whole batch at once, the common case
                text = eventArray(events) if json else eventLines(events)
            except Exception:  # some event cannot be encoded: find which
                lines = self.encodeEach(events, eventJson)
                text = "[" + ",".join(lines) + "]" if json else "\n".join([*lines, ""])
            body = text.encode("utf-8")
        if self.gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        return body

    def writeBatch(self, events: list[Any]) -> Deferred[None]:
        body = self.encode(events)
        d = self.http.request("POST", self.url, headers=self.headers, data=body)
        return d.addCallbacks(self._answered, self._notAnswered)

    def _count(self, code: int) -> None:
        self.responses[code] = self.responses.get(code, 0) + 1

    def _answered(self, response: Any) -> None:
        self._count(response.code)

    def _notAnswered(self, failure: Failure) -> Failure:
        error = failure.value
        if not isinstance(error, HTTPError):
            return failure  # a timeout, a refused or dropped connection: retried
        code = error.code
        self._count(code)
        line = firstLine(error.body)
        said = f"{self.url} answered {code}" + (f": {line}" if line else "")
        if code == 429 or code >= 500:
            header = error.headers.getRawHeaders("retry-after") if error.headers else None
            wait = retryAfter(header[0], self.clock.seconds()) if header else None
            if wait is not None:
                wait = max(self.retryInitial, min(wait, self.retryAfterMax))
            raise Unavailable(said, wait)
        if code in REFUSES_EVERYONE or code < 400:
            return failure  # an ordinary error: retried without end
        raise Refused(f"HTTP {code}" + (f": {line}" if line else ""), self.url)
