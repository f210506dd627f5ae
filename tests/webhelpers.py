"""In-process requests to duct's web resources, and a store that answers at once."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from duct.graphs import GraphMap
from duct.objects import Event
from duct.outputs.store_db import StoreDatabase

T0 = 1_800_000_000.0


class DirectStore:
    """A real SQLite store whose queries run at once, on the caller's thread."""

    def __init__(self, path: Path) -> None:
        self.clock = Clock()
        self.clock.advance(T0 + 100)
        self.badRequests = 0
        self.db = StoreDatabase(str(path))

    def write(self, events: list[Event]) -> None:
        self.db.write(events)

    def graphs(self) -> GraphMap:
        return GraphMap()

    def query(self, work: Any) -> Deferred[Any]:
        return maybeDeferred(work, self.db)


def point(service: str, metric: float, when: float, host: str = "web1") -> Event:
    return Event("ok", service, "text", metric, 60.0, hostname=host, evtime=when)


def strictJson(body: bytes) -> Any:
    """``body`` parsed as JSON that has no NaN or infinity."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in the body")

    return json.loads(body, parse_constant=refuse)


class Request(DummyRequest):
    """A DummyRequest that keeps a producer as a transport would, without pumping it."""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer


def render(
    resource: Resource,
    args: dict[bytes, list[bytes]],
    headers: dict[bytes, bytes] | None = None,
    method: bytes = b"GET",
) -> tuple[int, bytes, bool]:
    """Render ``resource`` in-process: (status, body, whether it went on streaming).

    A stream that starts is ended as a client that leaves would end it.
    """
    request = Request([b""])
    request.method = method
    request.args = args
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    result = resource.render(request)
    streaming = result is NOT_DONE_YET and not request.finished
    if streaming:
        request.processingFailed(Failure(ConnectionDone()))
    body = result if isinstance(result, bytes) else b"".join(request.written)
    return request.responseCode or 200, body, streaming


def isFiniteOrNone(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isfinite(value))
