"""A twisted.web destination for the HTTP output: it decodes every body and records it.

`HTTPSink` answers each POST from a script of statuses (then 200), or
refuses with 400 any body holding an event whose service is in
``refuse``.  ``events`` holds every event it accepted, decoded from JSON,
JSON lines or a Riemann Msg, gzipped or not.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Site

from duct.protocol.riemann import eventFromProto, pb


def decodeBody(body: bytes, headers: Any) -> tuple[str, list[dict[str, Any]]]:
    """The format of a body and its events, as dicts of `Event.asDict`'s fields."""
    if (headers.getRawHeaders(b"content-encoding") or [b""])[0] == b"gzip":
        body = gzip.decompress(body)
    kind = (headers.getRawHeaders(b"content-type") or [b""])[0].decode()
    if kind == "application/x-protobuf":
        msg = pb.Msg.FromString(body)
        return "riemann", [eventFromProto(e).asDict() for e in msg.events]
    if kind == "application/x-ndjson":
        assert body.endswith(b"\n") or not body
        return "jsonl", [json.loads(line) for line in body.splitlines()]
    assert kind == "application/json", kind
    value = json.loads(body)
    assert isinstance(value, list)
    return "json", value


class HTTPSink(Resource):
    isLeaf = True

    def __init__(self, script: list[Any] | None = None, refuse: set[str] | None = None):
        super().__init__()
        self.script = list(script or [])
        """What to answer, in turn: a status, ``(status, headers)``, or "drop"."""
        self.refuse = refuse or set()
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []

    @property
    def services(self) -> list[str]:
        return [event["service"] for event in self.events]

    def render_POST(self, request: Any) -> bytes:
        body = request.content.read()
        kind, events = decodeBody(body, request.requestHeaders)
        self.requests.append(
            {
                "format": kind,
                "count": len(events),
                "headers": request.requestHeaders,
                "size": len(body),
            }
        )
        answer = self.script.pop(0) if self.script else 200
        if answer == "drop":
            request.transport.abortConnection()
            return b""
        code, headers = answer if isinstance(answer, tuple) else (answer, {})
        for name, value in headers.items():
            request.setHeader(name, value)
        refused = [e["service"] for e in events if e["service"] in self.refuse]
        if refused:
            code = 400
        request.setResponseCode(code)
        if 200 <= code < 300:
            self.events.extend(events)
            return b"ok\n"
        if refused:
            return f"bad event {refused[0]}\nmore detail\n".encode()
        return f"status {code}\n".encode()


def listen(reactor: Any, sink: HTTPSink) -> Any:
    """Serve ``sink`` on 127.0.0.1, on a free port; the port."""
    return reactor.listenTCP(0, Site(sink), interface="127.0.0.1")
