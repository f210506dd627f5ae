"""The bearer token: ``web: {token: ...}``.

With a token set, every route but ``/health`` requires the header
``Authorization: Bearer <token>``, or the query parameter
``access_token=<token>`` (RFC 6750, section 2.3) where a header cannot be
sent: a browser opening the dashboard, or its ``EventSource`` on /events.
A request without it, or with another token, is answered 401 with a JSON
error.  Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac

from twisted.web.server import Request

from duct.web.responses import JSONError

OPEN_ROUTES = frozenset({"health"})
"""Path segments answered without the token: a load balancer's health check."""


def authorized(request: Request, token: str | None) -> bool:
    """Whether ``request`` carries ``token`` (always true when there is none)."""
    if token is None:
        return True
    expected = token.encode("utf-8")
    header = request.getHeader(b"authorization")
    if header is None:
        values = (request.args or {}).get(b"access_token") or [b""]
        return hmac.compare_digest(values[0], expected)
    scheme, _, value = header.strip().partition(b" ")
    # compare_digest takes time independent of where the values differ.
    matches = hmac.compare_digest(value.strip(), expected)
    return scheme.lower() == b"bearer" and matches


def presented(request: Request) -> bool:
    """Whether ``request`` offered a token at all (header or query)."""
    args = request.args or {}
    return request.getHeader(b"authorization") is not None or b"access_token" in args


class Unauthorized(JSONError):
    """401 with ``WWW-Authenticate: Bearer``, as RFC 6750 asks."""

    def __init__(self, presented: bool) -> None:
        why = "wrong bearer token" if presented else "this route requires a bearer token"
        super().__init__(401, why)

    def render(self, request: Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="duct"')
        return super().render(request)
