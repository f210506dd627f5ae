"""HTTP APIs played by `twisted.web` resources, answering as the real servers document.

No Elasticsearch, OpenTSDB, Bosun or Riak server runs here: `BulkAPI` answers
``POST /_bulk`` with the shapes of Elasticsearch's documentation
(``{"errors": true, "items": [{"index": {"status": 400, "error": {...}}}]}``,
an overall 429), and `PutAPI` answers ``POST /api/put`` (and
``/api/metadata/put``) with OpenTSDB's ``details`` answer.  `StatsAPI`
answers GETs with recorded JSON by path: Riak's ``/stats``,
Elasticsearch's ``/_cluster/stats`` and ``/_nodes/stats``.  `Served`
listens on a free port of 127.0.0.1 and can stop and listen again there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web import resource, server


class BulkAPI(resource.Resource):
    """Elasticsearch's ``_bulk``: keeps documents by index and id, refuses or throttles some.

    ``refuse(doc)`` true answers that item 400 (a mapping error);
    ``throttleItems`` answers the next so many items 429 once each;
    ``throttleRequests`` answers the next so many requests 429 overall.
    """

    isLeaf = True

    def __init__(self, refuse: Callable[[dict[str, Any]], bool] = lambda doc: False) -> None:
        super().__init__()
        self.refuse = refuse
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests = 0
        self.throttleItems = 0
        self.throttleRequests = 0

    def render_POST(self, request: Any) -> bytes:
        self.requests += 1
        request.setHeader(b"content-type", b"application/json")
        if request.path != b"/_bulk":
            request.setResponseCode(404)
            return b'{"error":"no handler","status":404}'
        if self.throttleRequests:
            self.throttleRequests -= 1
            request.setResponseCode(429)
            error = {"type": "es_rejected_execution_exception", "reason": "rejected execution"}
            return json.dumps({"error": {**error, "root_cause": [error]}, "status": 429}).encode()
        lines = [line for line in request.content.read().split(b"\n") if line]
        items = []
        for action, source in zip(lines[::2], lines[1::2], strict=True):
            meta = json.loads(action)["index"]
            doc = json.loads(source)
            key = (meta["_index"], meta["_id"])
            if self.throttleItems:
                self.throttleItems -= 1
                error = {"type": "es_rejected_execution_exception", "reason": "queue full"}
                items.append({"index": {"_index": key[0], "status": 429, "error": error}})
            elif self.refuse(doc):
                error = {
                    "type": "document_parsing_exception",
                    "reason": "[1:20] failed to parse field [metric] of type [float]",
                }
                items.append(
                    {"index": {"_index": key[0], "_id": key[1], "status": 400, "error": error}}
                )
            else:
                created = key not in self.docs
                self.docs[key] = doc
                result = "created" if created else "updated"
                status = 201 if created else 200
                items.append(
                    {"index": {"_index": key[0], "_id": key[1], "result": result, "status": status}}
                )
        errors = any(next(iter(item.values()))["status"] >= 300 for item in items)
        return json.dumps({"took": 3, "errors": errors, "items": items}).encode()


class PutAPI(resource.Resource):
    """OpenTSDB's ``/api/put?details`` and Bosun's ``/api/metadata/put``.

    ``refuse(point)`` true fails that point: a 400 with OpenTSDB's
    details (``errors``, ``failed``, ``success``), the others stored.
    With ``details`` false (Bosun), a refused point fails the request with a
    400 that names none.
    """

    isLeaf = True

    def __init__(
        self, refuse: Callable[[dict[str, Any]], bool] = lambda p: False, details: bool = True
    ):
        super().__init__()
        self.refuse = refuse
        self.details = details
        self.points: list[dict[str, Any]] = []
        self.metadata: list[dict[str, Any]] = []
        self.requests: list[bytes] = []

    def render_POST(self, request: Any) -> bytes:
        self.requests.append(request.uri)
        body = json.loads(request.content.read())
        if request.path == b"/api/metadata/put":
            self.metadata.extend(body)
            request.setResponseCode(204)
            return b""
        if request.path != b"/api/put":
            request.setResponseCode(404)
            return b""
        points = body if isinstance(body, list) else [body]
        bad = [p for p in points if self.refuse(p)]
        if bad and not self.details:
            request.setResponseCode(400)
            return b'{"error":{"code":400,"message":"Unable to parse value to a number"}}'
        self.points.extend(p for p in points if not self.refuse(p))
        if not bad:
            if b"details" not in request.args:
                request.setResponseCode(204)
                return b""
            return json.dumps({"failed": 0, "success": len(points)}).encode()
        request.setResponseCode(400)
        errors = [
            {"datapoint": {**p, "value": str(p["value"])}, "error": "Unable to parse value"}
            for p in bad
        ]
        answer = {"errors": errors, "failed": len(bad), "success": len(points) - len(bad)}
        return json.dumps(answer).encode()


class StatsAPI(resource.Resource):
    """GET answers by path: recorded JSON, shaped as the server's documentation shows it.

    With ``credentials`` (``b"user:password"``), a request without them
    gets a 401 as Elasticsearch's security answers it.  ``silent`` makes
    requests wait for ever; ``status`` answers every request with it.
    The ``User-Agent`` of each request is kept in ``agents``.
    """

    isLeaf = True

    def __init__(self, answers: dict[str, Any], credentials: bytes | None = None) -> None:
        super().__init__()
        self.answers = answers
        self.credentials = credentials
        self.silent = False
        self.status: int | None = None
        self.agents: list[bytes | None] = []
        self.waiting: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.agents.append(request.getHeader(b"user-agent"))
        if self.silent:
            self.waiting.append(request)
            return server.NOT_DONE_YET
        request.setHeader(b"content-type", b"application/json")
        if self.credentials is not None:
            given = (request.getUser() or b"") + b":" + (request.getPassword() or b"")
            if given != self.credentials:
                request.setResponseCode(401)
                request.setHeader(b"www-authenticate", b'Basic realm="security"')
                error = {"type": "security_exception", "reason": "unable to authenticate user"}
                return json.dumps(
                    {"error": {**error, "root_cause": [error]}, "status": 401}
                ).encode()
        path = request.path.decode()
        if self.status is not None or path not in self.answers:
            request.setResponseCode(self.status or 404)
            return b'{"error":"not found","status":404}'
        return json.dumps(self.answers[path]).encode()


class Served:
    """A resource served on a free port of 127.0.0.1, which can stop and come back."""

    def __init__(self, reactor: Any, root: resource.Resource) -> None:
        self.reactor = reactor
        self.site = server.Site(root)
        self.site.noisy = False
        self.port: Any = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.number: int = self.port.getHost().port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.number}"

    def stop(self) -> Any:
        port, self.port = self.port, None
        return port.stopListening()

    def start(self) -> None:
        self.port = self.reactor.listenTCP(self.number, self.site, interface="127.0.0.1")
