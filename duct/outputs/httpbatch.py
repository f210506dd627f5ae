"""The base of the outputs that POST batches to an HTTP API (OpenTSDB, Bosun, Elasticsearch)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred

from duct.lib.http import HTTP_CLIENT_OPTIONS, HTTPResponse
from duct.lib.tokenbucket import TokenBucket
from duct.objects import Output
from duct.options import Option
from duct.outputs.httppost import KeptConnections, post

__all__ = ["HTTPBatchOutput", "StatusError"]


class StatusError(Exception):
    """The API answered with a status that says nothing of the batch (401, 404, 5xx...)."""

    def __init__(self, response: HTTPResponse) -> None:
        excerpt = response.text()[:200]
        super().__init__(f"{response.url} returned {response.code}: {excerpt}")
        self.code = response.code


class HTTPBatchOutput(KeptConnections, Output):
    """POSTs each batch to ``url`` plus a path, with the HTTP and TLS options.

    ``interval`` and ``maxrate`` keep the meaning of duct's own outputs of
    these names: ``interval`` is the longest a partial batch waits (it
    replaces ``flush_interval``), and ``maxrate`` the most events sent a
    second (by default, no limit).
    """

    options: tuple[Option, ...] = (
        Option("interval", "number", None, "seconds a partial batch may wait (flush_interval)"),
        Option("maxrate", "number", None, "most events sent a second (default: no limit)", above=0),
        *HTTP_CLIENT_OPTIONS,
    )

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        url = config.get("url")
        if isinstance(url, str):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                yield "url", f"expected an http:// or https:// URL, got {url!r}"
        interval = config.get("interval")
        if interval is not None and interval < 0:
            yield "interval", f"must be at least 0, got {interval!r}"

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        config = self.config
        self.url: str = config["url"].rstrip("/")
        if config["interval"] is not None:
            self.flushInterval = float(config["interval"])
        maxrate = config["maxrate"]
        if maxrate:
            self.bucket = TokenBucket(
                self.clock, maxrate, max(1, min(self.batchSize, int(maxrate)))
            )

    def post(self, path: str, body: bytes, contentType: str) -> Deferred[HTTPResponse]:
        """POST ``body`` to the API's ``path``; the response, whatever its status."""
        return post(self.http, self.url + path, body, {"Content-Type": contentType})
