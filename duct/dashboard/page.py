"""The dashboard page and its files, served from the package's ``assets`` folder.

Only the files named in `ASSETS` are served, each with its content type,
and every response carries a Content-Security-Policy that lets the page
load and connect to its own origin only.
"""

from __future__ import annotations

from importlib import resources

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request

ASSETS = {
    "dashboard.js": b"text/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
}
PAGE = "index.html"

SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}


def readAsset(name: str) -> bytes:
    """The bytes of one file shipped in ``duct/dashboard/assets``."""
    return resources.files("duct.dashboard").joinpath("assets").joinpath(name).read_bytes()


def _secure(request: Request, contentType: bytes) -> None:
    request.setHeader(b"content-type", contentType)
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


class DashboardPage(Resource):
    """The dashboard's HTML page."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.body = readAsset(PAGE)

    def render_GET(self, request: Request) -> bytes:
        _secure(request, b"text/html; charset=utf-8")
        return self.body


class Assets(Resource):
    """The dashboard's script and style sheet; anything else is 404."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.files = {name: (readAsset(name), kind) for name, kind in ASSETS.items()}

    def render_GET(self, request: Request) -> bytes:
        path = request.postpath or []
        name = path[0].decode("utf-8", "replace") if len(path) == 1 else ""
        found = self.files.get(name)
        if found is None:
            request.setResponseCode(http.NOT_FOUND)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        body, kind = found
        _secure(request, kind)
        return body
