"""``/stats``: the statistics snapshot as JSON (see `duct.stats`)."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from duct.stats import snapshot
from duct.web.responses import LeafResource, jsonBody


class StatsResource(LeafResource):
    """Answers GET with `duct.stats.snapshot` of the running service."""

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    def render_GET(self, request: Request) -> bytes:
        return jsonBody(request, snapshot(self.service))
