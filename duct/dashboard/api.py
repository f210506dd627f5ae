"""The store's query API: ``/api/services`` and ``/api/series``, as JSON.

Queries run on the store's reader thread (`duct.outputs.store.Store.query`);
these resources only parse parameters and write the answer.  A bad
parameter gets 400 with ``{"error": ..., "parameter": ...}``, and is
counted in the store's ``badRequests``.
"""

from __future__ import annotations

import math
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from duct.outputs.store_db import StoreDatabase, StoreError, StoreUnavailable
from duct.web.responses import finishJson, jsonBody, notFound

DEFAULT_POINTS = 300
MAX_POINTS = 2000
"""Most points /api/series returns; a larger ``points`` is lowered to this."""
DEFAULT_RANGE = 3600.0
"""Seconds of history /api/series returns when ``since`` is not given."""


class BadParameter(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class NoSuchSeries(LookupError):
    pass


def writeJson(request: Request, code: int, body: Any) -> None:
    """Finish ``request`` with ``body`` as JSON, unless it is finished already."""
    if request.finished:
        return
    finishJson(request, body, code, compact=True)


def _arg(request: Request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadParameter(name, "is not UTF-8") from None


def _text(request: Request, name: str) -> str:
    value = _arg(request, name)
    if not value:
        raise BadParameter(name, "is required")
    return value


def _time(request: Request, name: str, now: float) -> float | None:
    """Seconds since the epoch, or a negative number: seconds before now."""
    value = _arg(request, name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise BadParameter(name, f"expected seconds since the epoch, got {value!r}") from None
    if not math.isfinite(number):
        raise BadParameter(name, f"expected a finite number, got {value!r}")
    return now + number if number < 0 else number


def _points(request: Request) -> int:
    value = _arg(request, "points")
    if value is None or value == "":
        return DEFAULT_POINTS
    try:
        points = int(value)
    except ValueError:
        raise BadParameter("points", f"expected a whole number, got {value!r}") from None
    if points < 1:
        raise BadParameter("points", f"must be at least 1, got {points}")
    return min(points, MAX_POINTS)


class _Query(Resource):
    """A GET answered from the store on its reader thread."""

    isLeaf = True
    log = Logger()

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store

    def render_GET(self, request: Request) -> Any:
        try:
            d = self.answer(request)
        except BadParameter as e:
            self.store.badRequests += 1
            writeJson(request, http.BAD_REQUEST, {"error": str(e), "parameter": e.parameter})
            return NOT_DONE_YET
        # A client that leaves cancels its answer: nothing is written for it.
        # Asked before the answer is written, which may be at once.
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addCallback(lambda body: writeJson(request, http.OK, body))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def answer(self, request: Request) -> Deferred[Any]:
        raise NotImplementedError

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(CancelledError):  # the client has gone
            return
        if failure.check(NoSuchSeries):
            writeJson(request, http.NOT_FOUND, {"error": failure.getErrorMessage()})
            return
        if failure.check(StoreError, StoreUnavailable):
            writeJson(request, http.SERVICE_UNAVAILABLE, {"error": failure.getErrorMessage()})
            return
        self.log.failure("store query failed", failure)
        writeJson(request, http.INTERNAL_SERVER_ERROR, {"error": "the query failed"})


class ServicesResource(_Query):
    """``GET /api/services``: every host and service with its last state and graph."""

    def answer(self, request: Request) -> Deferred[Any]:
        graphs = self.store.graphs()
        now = self.store.clock.seconds()

        def shape(rows: list[dict[str, Any]]) -> dict[str, Any]:
            for row in rows:
                graph = graphs.graphOf(row["service"])
                row["graph"] = graph.type
                row["group"] = graph.group
            return {"now": now, "graphs": graphs.prefixes, "services": rows}

        d: Deferred[Any] = self.store.query(StoreDatabase.services)
        return d.addCallback(shape)


class SeriesResource(_Query):
    """``GET /api/series?host=&service=&since=&until=&points=``: one series' history.

    ``since`` and ``until`` are seconds since the epoch, or negative for
    seconds before now; by default the last hour.  ``points`` (default
    300, at most 2000) bounds how many points come back: beyond it they
    are averaged into equal time buckets.
    """

    def answer(self, request: Request) -> Deferred[Any]:
        now = self.store.clock.seconds()
        host = _text(request, "host")
        service = _text(request, "service")
        until = _time(request, "until", now)
        until = now if until is None else until
        since = _time(request, "since", now)
        since = until - DEFAULT_RANGE if since is None else since
        if since >= until:
            raise BadParameter("since", f"must be before until ({since} >= {until})")
        points = _points(request)

        def run(db: StoreDatabase) -> list[tuple[float, float]] | None:
            return db.series(host, service, since, until, points)

        def shape(rows: list[tuple[float, float]] | None) -> dict[str, Any]:
            if rows is None:
                raise NoSuchSeries(f"no series for host {host!r} and service {service!r}")
            return {
                "host": host,
                "service": service,
                "since": since,
                "until": until,
                "points": [[t, v] for t, v in rows],
            }

        d: Deferred[Any] = self.store.query(run)
        return d.addCallback(shape)


class ApiResource(Resource):
    """``/api``: the store's queries."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.putChild(b"services", cast(IResource, ServicesResource(store)))
        self.putChild(b"series", cast(IResource, SeriesResource(store)))

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":  # /api/ answers as /api does
            return cast(IResource, self)
        return cast(IResource, notFound(request))

    def render_GET(self, request: Request) -> bytes:
        return jsonBody(request, {"endpoints": ["services", "series"]}, compact=True)
