"""The dashboard page, with its script and style sheet inlined when it is served.

The files live apart in the package's ``assets`` folder.  They are put
into the page at start-up, so the browser makes one request for the page:
with a token set, the page URL carries it (``?access_token=``) and there is
no second URL that would need it too.  The Content-Security-Policy allows
exactly the inlined script and style (by their SHA-256) and connections to
the page's own origin, and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources

from twisted.web.resource import Resource
from twisted.web.server import Request

from duct.web.responses import notFound

PAGE = "index.html"
SCRIPT = "dashboard.js"
STYLE = "dashboard.css"


def readAsset(name: str) -> str:
    """The text of one file shipped in ``duct/dashboard/assets``."""
    return resources.files("duct.dashboard").joinpath("assets").joinpath(name).read_text("utf-8")


def _digest(text: str) -> str:
    return (
        "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"
    )


def buildPage() -> tuple[bytes, str]:
    """The page with its script and style inlined, and the policy that allows only them."""
    page, script, style = readAsset(PAGE), readAsset(SCRIPT), readAsset(STYLE)
    if "</script" in script.lower() or "</style" in style.lower():
        raise ValueError("an asset would close its own inline element")
    scriptTag, styleTag = (
        f'<script src="{SCRIPT}"></script>',
        f'<link rel="stylesheet" href="{STYLE}">',
    )
    if scriptTag not in page or styleTag not in page:
        raise ValueError(f"{PAGE} does not include {SCRIPT} and {STYLE}")
    script, style = "\n" + script, "\n" + style
    page = page.replace(styleTag, f"<style>{style}</style>").replace(
        scriptTag, f"<script>{script}</script>"
    )
    policy = (
        f"default-src 'none'; script-src {_digest(script)}; style-src {_digest(style)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return page.encode("utf-8"), policy


class DashboardPage(Resource):
    """The dashboard at ``/``; any path below it is 404."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.body, policy = buildPage()
        self.headers = {
            b"content-type": b"text/html; charset=utf-8",
            b"content-security-policy": policy.encode("ascii"),
            b"x-content-type-options": b"nosniff",
            b"referrer-policy": b"no-referrer",
            b"cache-control": b"no-store",
        }

    def render_GET(self, request: Request) -> bytes:
        if request.postpath and request.postpath != [b""]:
            return notFound(request).render(request)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        return self.body
