"""``/stats``: the statistics snapshot as JSON (see `duct.stats`).

The parent of workers answers with every process's statistics combined
(`duct.workers.stats`), once it has fetched the workers' own.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from duct.stats import snapshot
from duct.web.responses import LeafResource, jsonBody, jsonError

log = Logger()


class StatsResource(LeafResource):
    """Answers GET with `duct.stats.snapshot` of the running service."""

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> Any:
        if getattr(self.service, "workers", None) is None:
            return jsonBody(request, snapshot(self.service))
        from duct.workers.stats import gatherStats

        d = Deferred.fromCoroutine(gatherStats(self.service))
        d.addCallback(lambda value: finish(request, jsonBody(request, value)))
        d.addErrback(failed, request)
        return NOT_DONE_YET


def failed(failure: Failure, request: Request) -> None:
    """Answer 500 when the statistics of the workers could not be gathered."""
    log.failure("statistics of the workers could not be gathered", failure)
    finish(request, jsonError(request, 500, "statistics could not be gathered"))


def finish(request: Request, body: bytes) -> None:
    """Write ``body`` and end ``request``, unless the client has gone."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.write(body)
    request.finish()
