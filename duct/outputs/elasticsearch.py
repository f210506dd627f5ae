"""Index events in Elasticsearch with the ``_bulk`` API."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from base64 import urlsafe_b64encode
from collections.abc import Iterator, Mapping
from typing import Any

from twisted.internet.defer import Deferred

from duct.lib.http import HTTPResponse
from duct.objects import Event
from duct.options import Option
from duct.output import Refused
from duct.outputs.httpbatch import HTTPBatchOutput, StatusError

__all__ = ["ElasticSearch", "ElasticSearchLog", "Retry", "bulkOutcome", "document"]


_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
"""Compact JSON that refuses NaN, built once (`json.dumps` builds an encoder per call)."""


@functools.lru_cache(maxsize=256)
def _utc(pattern: str, second: int) -> str:
    """``pattern`` (a strftime pattern) of a whole second in UTC.

    The events of a batch fall in a few seconds, so the same few are asked
    for again and again; the cache stays small.
    """
    return time.strftime(pattern, time.gmtime(second))


@functools.lru_cache(maxsize=256)
def _action(pattern: str, second: int) -> tuple[str, bytes]:
    """The index of an event of that second, and its action line up to the ``_id``'s value."""
    index = _utc(pattern, second)
    return index, f'{{"index":{{"_index":{_encode(index)},"_id":"'.encode()


class Retry(Exception):
    """Elasticsearch asked for some items to be sent again later (429, or a 5xx per item)."""


def document(event: Event) -> dict[str, Any]:
    """An event as the document duct has always indexed: its fields and ``@timestamp``."""
    metric: Any = event.metric
    if isinstance(metric, (int, float)) and not isinstance(metric, bool):
        metric = float(metric) if math.isfinite(metric) else None
    doc: dict[str, Any] = {
        "hostname": event.hostname,
        "state": event.state,
        "service": event.service,
        "metric": metric,
        "tags": list(event.tags),
        "time": event.time,
        "type": event.type,
        "description": event.description,
        "@timestamp": _isoformat(event.time),
    }
    if event.attributes:
        doc["attributes"] = dict(event.attributes)
    return doc


def _isoformat(seconds: float) -> str:
    whole = math.floor(seconds)
    micros = int(round((seconds - whole) * 1e6))
    if micros >= 1_000_000:
        whole, micros = whole + 1, 0
    return _utc("%Y-%m-%dT%H:%M:%S", whole) + f".{micros:06d}Z"


def bulkOutcome(answer: Any) -> tuple[list[int], list[int], str]:
    """From a ``_bulk`` answer: the items refused, the items to send again, the first error.

    Each of ``answer["items"]`` holds one action's result, in the order
    sent, with its ``status`` and, when it failed, an ``error``.  A 429
    or a 5xx asks for the item again; any other status from 400 is a
    refusal of the item itself.
    """
    refused: list[int] = []
    again: list[int] = []
    first = ""
    items = answer.get("items") if isinstance(answer, dict) else None
    for index, item in enumerate(items if isinstance(items, list) else ()):
        result = next(iter(item.values()), None) if isinstance(item, dict) and item else None
        if not isinstance(result, dict):
            continue
        status = result.get("status")
        if not isinstance(status, int) or status < 300:
            continue
        (again if status == 429 or status >= 500 else refused).append(index)
        if not first:
            error = result.get("error")
            if isinstance(error, dict):
                first = f"{error.get('type', 'error')}: {error.get('reason', '')}"
            else:
                first = str(error or status)
    return refused, again, first


class ElasticSearch(HTTPBatchOutput):
    """Index events in Elasticsearch, each a document, with ``POST /_bulk``.

    The document holds the event's ``hostname``, ``state``, ``service``,
    ``metric`` (a float), ``tags``, ``time``, ``type``, ``description``,
    ``attributes`` and an ``@timestamp``; the ttl is left out.  It goes
    to the index `index` names, a `time.strftime` pattern of the event's
    time in UTC (``duct-%Y.%m.%d``: one index a day), with an ``_id``
    that is a hash of the index and the document: sending a batch again
    overwrites those documents rather than adding copies, and two events
    identical in every field are one document.  No ``_type`` is sent
    (Elasticsearch 7 and later have none).  A NaN or infinite metric is
    indexed as null.

    A batch is delivered when every item of the answer has a 2xx status.
    Items answered 400 to 499 but 429 (a mapping conflict, an invalid
    index name) are refused: they are dropped and counted as
    ``rejected``, and the rest of the batch is sent again.  Items
    answered 429 or 5xx, an overall 429 or 5xx, any other status, or no
    answer have the whole batch sent again, with backoff.  An overall
    400 or 413 splits the batch until what is refused stands alone.
    """

    options: tuple[Option, ...] = (
        Option("url", "string", "http://localhost:9200", "Elasticsearch's URL"),
        Option("index", "string", "duct-%Y.%m.%d", "index name, a strftime pattern of event time"),
    )

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        yield from super().optionProblems(config)
        index = config.get("index")
        if isinstance(index, str):
            name = time.strftime(index, time.gmtime(0))
            if not name or name != name.lower() or any(c in name for c in ' "*\\<|,>/?#:'):
                yield "index", f"{index!r} makes no Elasticsearch index name ({name!r})"

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.index: str = self.config["index"]

    def encodeItem(self, event: Event) -> bytes:
        """An event as its two NDJSON lines, the action and the document."""
        index, action = _action(self.index, math.floor(event.time))
        source = _encode(document(event)).encode()
        digest = hashlib.blake2b(index.encode() + b"\n" + source, digest_size=15).digest()
        return b"".join((action, urlsafe_b64encode(digest), b'"}}\n', source, b"\n"))

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        body = b"".join(self.encodeEach(events, self.encodeItem))
        d = self.post("/_bulk", body, "application/x-ndjson")
        return d.addCallback(self._answered, len(events))

    def _answered(self, response: HTTPResponse, count: int) -> None:
        code = response.code
        if code in (400, 413):
            raise Refused(f"{code}: {response.text()[:200]}", response.url)
        if not 200 <= code < 300:
            raise StatusError(response)
        try:
            answer = response.json()
        except ValueError as e:
            raise StatusError(response) from e
        if not (isinstance(answer, dict) and answer.get("errors")):
            return
        refused, again, error = bulkOutcome(answer)
        refused = [i for i in refused if i < count]
        if refused:
            raise Refused(error, response.url, refused)
        if again:
            raise Retry(f"{response.url}: {len(again)} of {count} items to send again ({error})")


ElasticSearchLog = ElasticSearch
"""The name older configurations use."""
