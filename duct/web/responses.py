"""JSON answers, shared by every web resource: results and errors alike.

Every answer duct's web server writes itself, success or error, goes
through `jsonBody`: the status, ``application/json; charset=utf-8``,
``cache-control: no-store`` and a body that is always valid JSON (NaN and
infinities as null, see `duct.lib.json`).  An error is ``{"error":
message}`` on one line, with any details beside it (`jsonError`).
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from duct.lib.json import dumps

CONTENT_TYPE = b"application/json; charset=utf-8"


def jsonBody(request: Request, value: Any, code: int = 200, compact: bool = False) -> bytes:
    """Set ``code`` and the JSON headers on ``request``; return ``value`` encoded.

    Indented with sorted keys for people to read, or ``compact`` for large
    answers that scripts read.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", CONTENT_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return (dumps(value, pretty=not compact) + "\n").encode()


def jsonError(request: Request, code: int, message: str, **details: Any) -> bytes:
    """Set ``code`` and the JSON headers; return ``{"error": message, **details}``.

    Compact, so that a client that prints the answer prints one line.
    """
    return jsonBody(request, {"error": message, **details}, code, compact=True)


def finishJson(request: Request, value: Any, code: int = 200, compact: bool = False) -> None:
    """Write `jsonBody` and finish ``request``: for answers that come later."""
    request.write(jsonBody(request, value, code, compact))
    request.finish()


class JSONError(Resource):
    """Answers every request with ``{"error": message}`` and ``code``."""

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request: Request) -> bytes:
        return jsonError(request, self.code, self.message)


def notFound(request: Request) -> JSONError:
    path = request.path.decode("utf-8", "replace")
    return JSONError(404, f"no such resource: {path}")


class LeafResource(Resource):
    """A resource that answers its own path only (and with a trailing slash).

    A method it has no ``render_<METHOD>`` for is answered 405 in JSON.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            return notFound(request).render(request)
        method = request.method.decode("ascii", "replace")
        handler = getattr(self, f"render_{'GET' if method == 'HEAD' else method}", None)
        if handler is None:
            request.setHeader(b"allow", b"GET, HEAD")
            return jsonError(request, 405, f"method {method} is not allowed here")
        body: bytes = handler(request)
        return body
