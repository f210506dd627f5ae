"""Send metrics to OpenTSDB's HTTP API (``/api/put``), or to anything that speaks it."""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from twisted.internet.defer import Deferred

from duct.lib.http import HTTPResponse
from duct.objects import Event
from duct.options import Option
from duct.output import Refused
from duct.outputs.httpbatch import HTTPBatchOutput, StatusError

__all__ = ["OpenTSDB", "encodePoint", "failedIndices"]

_UNSAFE = re.compile(r"[^\w\-./]+")
"""OpenTSDB's names and tag values hold letters, digits, ``-``, ``_``, ``.`` and ``/``."""


class Uncarried(ValueError):
    """An event OpenTSDB cannot store."""


@functools.lru_cache(maxsize=4096)
def _clean(text: str) -> str:
    # Kept for the names and values seen last: the same few come with every event.
    return _UNSAFE.sub("_", text).strip("_")


def encodePoint(event: Event) -> dict[str, Any]:
    """An event as an ``/api/put`` data point; `Uncarried` when it cannot be one.

    The metric is the service with every character OpenTSDB refuses made
    ``_`` (a space, as duct always did); the timestamp is in milliseconds;
    the tags are ``host``, ``state`` and the event's attributes.
    """
    metric: Any = event.metric
    if isinstance(metric, bool):
        metric = int(metric)
    if not isinstance(metric, (int, float)):
        raise Uncarried(f"{event.service!r} has no numeric metric ({metric!r})")
    if isinstance(metric, float) and not math.isfinite(metric):
        raise Uncarried(f"metric {metric!r} is not finite")
    name = _clean(event.service or "")
    if not name:
        raise Uncarried(f"service {event.service!r} makes no metric name")
    tags = {"host": _clean(event.hostname or "")}
    if event.state:
        tags["state"] = _clean(event.state)
    for key, value in (event.attributes or {}).items():
        tags[_clean(str(key))] = _clean(str(value))
    if "" in tags or not all(tags.values()):
        tags = {key: value for key, value in tags.items() if key and value}
    if not tags:
        raise Uncarried("the event has no host and no tag")
    return {"metric": name, "timestamp": int(event.time * 1000), "value": metric, "tags": tags}


def _key(point: Any) -> tuple[Any, ...] | None:
    if not isinstance(point, dict):
        return None
    tags = point.get("tags")
    tagItems = (
        tuple(sorted((str(k), str(v)) for k, v in tags.items())) if isinstance(tags, dict) else ()
    )
    try:
        timestamp = int(point.get("timestamp"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return (point.get("metric"), timestamp, tagItems)


def failedIndices(points: list[dict[str, Any]], answer: Any) -> tuple[list[int], str]:
    """The indices of ``points`` that a ``details`` answer lists as failed, and the first error.

    OpenTSDB's answer names each failed point by its content
    (``{"errors": [{"datapoint": {...}, "error": "..."}], "failed": n}``);
    each is matched to the first point not yet matched with the same
    metric, timestamp and tags.
    """
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if not isinstance(errors, list):
        return [], ""
    where: dict[tuple[Any, ...], list[int]] = {}
    for index, point in enumerate(points):
        key = _key(point)
        if key is not None:
            where.setdefault(key, []).append(index)
    failed: list[int] = []
    first = ""
    for error in errors:
        if not isinstance(error, dict):
            continue
        first = first or str(error.get("error") or "")
        key = _key(error.get("datapoint"))
        indices = where.get(key) if key is not None else None
        if indices:
            failed.append(indices.pop(0))
    return sorted(failed), first


class OpenTSDB(HTTPBatchOutput):
    """Send metrics to OpenTSDB's HTTP API, ``POST /api/put?details``.

    Each event is a data point: ``metric`` is the service (characters
    OpenTSDB refuses become ``_``), ``timestamp`` the event's time in
    milliseconds, ``value`` its metric, and ``tags`` hold ``host``,
    ``state`` and the event's attributes.  The description, the ttl and
    the tags of an event (a list of words, where OpenTSDB's tags are
    pairs) are not carried; an event with no metric, or a NaN or infinite
    one, cannot be, and is dropped and counted as ``rejected``.

    A batch is delivered when the answer is a 2xx.  OpenTSDB's ``details``
    answer (a 400 when some points failed) names the points it refused:
    those are dropped and counted as ``rejected``, and the others are
    sent again (OpenTSDB stores a point at the same time and tags once).
    A refusal that names no point, such as a 400 without details or a 413
    for a body too large, splits the batch until the refused points stand
    alone.  Any other status (401, 403, 404, 5xx) or no answer is retried
    with backoff, without end.  A server that accepts the body but drops
    some points silently (VictoriaMetrics does, answering 204) leaves
    only the local refusals counted.
    """

    putPath = "/api/put?details"
    """Where the points go; ``details`` asks for the points that failed."""

    options: tuple[Option, ...] = (
        Option("url", "string", "http://localhost:4242", "the API's base URL"),
        Option("batch_size", "integer", 500, "most points in one request", minimum=1),
    )

    def encodePoint(self, event: Event) -> dict[str, Any]:
        return encodePoint(event)

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        points = self.encodeEach(events, self.encodePoint)
        return self.sendPoints(points)

    def sendPoints(self, points: list[dict[str, Any]]) -> Deferred[None]:
        body = json.dumps(points, separators=(",", ":"), allow_nan=False).encode()
        d = self.post(self.putPath, body, "application/json")
        return d.addCallback(self._answered, points)

    def _answered(self, response: HTTPResponse, points: list[dict[str, Any]]) -> None:
        code = response.code
        answer: Any = None
        try:
            answer = json.loads(response.body) if response.body else None
        except ValueError:
            pass
        if self.config["debug"] and code >= 300:
            self.log.info(
                "output {output}: {url} answered {code}: {body}",
                output=self.name,
                url=response.url,
                code=code,
                body=response.text()[:2000],
            )
        if 200 <= code < 300 and not (isinstance(answer, dict) and answer.get("failed")):
            return
        if code < 300 or code == 400:
            failed, error = failedIndices(points, answer)
            if failed:
                raise Refused(error or "refused", response.url, failed)
            if code == 400:
                raise Refused(error or response.text()[:200], response.url)
            return  # 2xx and the failed points named none of ours
        if code == 413:
            raise Refused("request too large", response.url)
        raise StatusError(response)
