"""JSON answers, shared by the web resources."""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def jsonBody(request: Request, value: Any, code: int = 200) -> bytes:
    """Set ``code`` and the JSON headers on ``request``; return ``value`` encoded."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return (json.dumps(_finite(value), indent=1, sort_keys=True) + "\n").encode()


class JSONError(Resource):
    """Answers every request with ``{"error": message}`` and ``code``."""

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request: Request) -> bytes:
        return jsonBody(request, {"error": self.message}, self.code)


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
            return jsonBody(request, {"error": f"method {method} is not allowed here"}, 405)
        body: bytes = handler(request)
        return body
