"""Send metrics to Bosun: OpenTSDB's ``/api/put``, with metric metadata first."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed

from duct.lib.http import HTTPResponse
from duct.objects import Event
from duct.options import Option
from duct.outputs.httpbatch import StatusError
from duct.outputs.opentsdb import OpenTSDB

__all__ = ["Bosun"]


class Bosun(OpenTSDB):
    """Send metrics to Bosun's HTTP API, as `duct.outputs.opentsdb.OpenTSDB` does to OpenTSDB.

    Before the first point of a metric, its metadata goes to
    ``/api/metadata/put`` (``{"Metric": name, "Name": "rate", "Value":
    "gauge"}``), once per metric while duct runs; a failed metadata
    request is retried with the batch.  Points go to ``/api/put``, which
    names no failed point: a 400 splits the batch until the points at
    fault stand alone, and those are dropped and counted as ``rejected``.
    What a point carries, and what it cannot, is as for OpenTSDB.
    """

    putPath = "/api/put"

    options: tuple[Option, ...] = (
        Option("url", "string", "http://localhost:4242", "Bosun's base URL"),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.described: set[str] = set()
        """Metrics whose metadata Bosun has."""

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        points = self.encodeEach(events, self.encodePoint)
        new = sorted({point["metric"] for point in points} - self.described)
        d = self.putMetadata(new) if new else succeed(None)
        return d.addCallback(lambda _: self.sendPoints(points))

    def putMetadata(self, metrics: list[str]) -> Deferred[None]:
        body = [{"Metric": metric, "Name": "rate", "Value": "gauge"} for metric in metrics]

        def answered(response: HTTPResponse) -> None:
            if not 200 <= response.code < 300:
                raise StatusError(response)
            self.described.update(metrics)

        d = self.post("/api/metadata/put", json.dumps(body).encode(), "application/json")
        return d.addCallback(answered)
