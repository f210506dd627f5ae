"""`StubHTTP`: a plugin's ``self.http`` answered by a `twisted.web` resource, in memory.

Public through `duct.testing`.  The plugin's real `duct.lib.http.Client`
runs (headers, authentication, status and JSON handling); only its treq
client is swapped for a `treq.testing.StubTreq`, which speaks HTTP to the
resource over `twisted.test.iosim` transports instead of a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from treq.testing import StubTreq
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest

__all__ = ["RecordedRequest", "StubHTTP"]

Answer = Union[bytes, str, tuple[int, Union[bytes, str]], IResource, Callable[[Any], Any]]
"""What a route answers: a body, ``(status, body)``, a resource, or a function of the request."""


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the stub's resource received it."""

    method: str
    path: str
    """The path, with its query string if any."""
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


def _record(request: IRequest) -> RecordedRequest:
    content = request.content
    body = content.read() if content is not None else b""
    if content is not None:
        content.seek(0)
    return RecordedRequest(
        request.method.decode("ascii"),
        request.uri.decode("ascii"),
        request.requestHeaders.copy(),
        body,
    )


def _body(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


class _Routes(Resource):
    """Answers each path from a mutable mapping; 404 for a path it lacks."""

    isLeaf = True

    def __init__(self, routes: dict[str, Answer], requests: list[RecordedRequest]) -> None:
        super().__init__()
        self.routes = routes
        self.requests = requests

    def render(self, request: Any) -> Any:
        self.requests.append(_record(request))
        path = request.path.decode("ascii")
        answer = self.routes.get(path)
        if answer is None:
            request.setResponseCode(404)
            return f"StubHTTP: no route for {path}".encode()
        if callable(answer) and not IResource.providedBy(answer):
            answer = answer(request)
        if IResource.providedBy(answer):
            return getChildForRequest(answer, request).render(request)
        if isinstance(answer, tuple):
            code, body = answer
            request.setResponseCode(code)
            return _body(body)
        return _body(answer)  # type: ignore[arg-type]


class _Recording(Resource):
    """Records each request, then lets ``inner`` find and render its resource."""

    isLeaf = True

    def __init__(self, inner: IResource, requests: list[RecordedRequest]) -> None:
        super().__init__()
        self.inner = inner
        self.requests = requests

    def render(self, request: Any) -> Any:
        self.requests.append(_record(request))
        return getChildForRequest(self.inner, request).render(request)


class StubHTTP:
    """Answers a plugin's HTTP requests from ``routes``, with no network.

    :param routes: a `twisted.web` resource, or a dict of path (without
        the query) to what it answers: bytes or str (status 200),
        ``(status, body)``, a `Resource`, or a function of the request that
        returns one of those.  The dict stays live: change an answer
        between polls with ``stub.routes[path] = ...``.

    ``requests`` lists every `RecordedRequest`, in order.  A resource that
    answers later (``NOT_DONE_YET``) is delivered by `flush`.
    """

    def __init__(self, routes: Mapping[str, Answer] | IResource) -> None:
        self.requests: list[RecordedRequest] = []
        self.routes: dict[str, Answer] = {}
        if IResource.providedBy(routes):
            resource: Resource = _Recording(routes, self.requests)  # type: ignore[arg-type]
        else:
            self.routes.update(routes)
            resource = _Routes(self.routes, self.requests)
        self.treq = StubTreq(resource)
        """The `treq.testing.StubTreq` that serves ``routes``; usable as treq itself."""

    def install(self, client: Any) -> None:
        """Have ``client`` (a `duct.lib.http.Client`, such as ``source.http``) ask this stub."""
        client.treq = self.treq

    def flush(self) -> None:
        """Deliver whatever the resources have written since the last flush."""
        self.treq.flush()
