"""Request bodies over a route's limit, refused before they are read.

twisted.web reads a whole request body before it looks up the resource.
`LimitedRequest` looks up, as soon as the headers are in, the route its
path's first segment names; a route with a ``maxBody`` (bytes) refuses a
larger body at once by its ``Content-Length`` (413, and the connection
closes), or as soon as a body without one grows past it.  Nothing over the
limit is kept.  The route's ``tooLarge(size)`` is called to count it.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from duct.lib.json import dumps

__all__ = ["LimitedRequest", "routeFor"]


def routeFor(site: Any, path: bytes) -> Any:
    """The route serving the first segment of ``path`` on ``site``, if it has a ``maxBody``."""
    segment = path.split(b"?", 1)[0].lstrip(b"/").split(b"/", 1)[0]
    root = getattr(site, "resource", None)
    find = getattr(root, "routeFor", None)
    if find is not None:
        route = find(segment.decode("utf-8", "replace"))
    else:
        route = getattr(root, "children", {}).get(segment)
    return route if getattr(route, "maxBody", None) is not None else None


class LimitedRequest(Request):
    """A `Request` whose body may not pass its route's ``maxBody``."""

    _limit: int | None = None
    _route: Any = None
    _seen = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        channel: Any = self.channel
        site = getattr(channel, "site", None)
        route = routeFor(site, getattr(channel, "_path", b"") or b"") if site else None
        if route is not None:
            self._route, self._limit = route, int(route.maxBody)
            if length is not None and length > self._limit:
                self._refuse(length)
                return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        if self._limit is not None:
            self._seen += len(data)
            if self._seen > self._limit:
                self._refuse(None)
                return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def _refuse(self, length: int | None) -> None:
        """Answer 413 now, read nothing more, and close the connection."""
        self._refused = True
        self.content = None
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        size = "a body" if length is None else f"a body of {length} bytes"
        message = f"{size} is over this route's limit of {self._limit} bytes"
        counter = getattr(self._route, "tooLarge", None)
        if counter is not None:
            counter(length)
        body = (dumps({"error": message}) + "\n").encode()
        head = (
            "HTTP/1.1 413 Payload Too Large\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        transport: Any = self.channel.transport
        transport.write(head + body)
        transport.loseConnection()
