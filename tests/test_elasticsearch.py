"""ElasticSearch: documents, and _bulk answers from a twisted.web resource shaped as ES's.

No Elasticsearch runs here; `fakeapis.BulkAPI` answers as Elasticsearch's
``_bulk`` documentation shows: ``errors``, and per item a ``status`` and an
``error``, or an overall 429.
"""

from __future__ import annotations

import hashlib
import json
import time
from base64 import urlsafe_b64encode
from typing import Any

import pytest
import pytest_twisted
from fakeapis import BulkAPI, Served

from duct import testing
from duct.objects import Event
from duct.outputs.elasticsearch import ElasticSearch, ElasticSearchLog, bulkOutcome, document
from duct.testing import FakeDuct, configure

T0 = 1700000000.5  # 2023-11-14T22:13:20.5Z


def event(service: str, metric: Any, when: float = T0, **kw: Any) -> Event:
    return Event("ok", service, "text", metric, 60, hostname="web1", evtime=when, **kw)


def test_the_document_keeps_duct_fields_and_a_timestamp() -> None:
    doc = document(event("cpu", 3, tags=["a"], attributes={"dc": "east"}))
    assert doc == {
        "hostname": "web1",
        "state": "ok",
        "service": "cpu",
        "metric": 3.0,
        "tags": ["a"],
        "time": T0,
        "type": "metric",
        "description": "text",
        "@timestamp": "2023-11-14T22:13:20.500000Z",
        "attributes": {"dc": "east"},
    }
    assert document(event("cpu", float("nan")))["metric"] is None


def test_items_go_to_the_index_of_their_day_with_a_stable_id() -> None:
    output = ElasticSearch(configure(ElasticSearch, {"index": "duct-%Y.%m.%d"}), FakeDuct())
    action, source = output.encodeItem(event("cpu", 1)).decode().splitlines()
    meta = json.loads(action)["index"]
    assert meta["_index"] == "duct-2023.11.14" and json.loads(source)["service"] == "cpu"
    assert output.encodeItem(event("cpu", 1)) == output.encodeItem(event("cpu", 1))
    assert output.encodeItem(event("cpu", 1)) != output.encodeItem(event("cpu", 2))
    assert ElasticSearchLog is ElasticSearch


def test_an_item_is_its_action_and_document_with_the_id_a_hash_of_both() -> None:
    output = ElasticSearch(configure(ElasticSearch, {"index": "duct-%Y.%m.%d-%H"}), FakeDuct())
    day = 86400
    for when in (T0, T0 + 1, T0 + day, T0 - 0.0000001, 1700006399.9999996):
        item = output.encodeItem(event("cpu", 1, when))
        action, source, end = item.split(b"\n")
        index = time.strftime("duct-%Y.%m.%d-%H", time.gmtime(when))
        digest = hashlib.blake2b(index.encode() + b"\n" + source, digest_size=15).digest()
        expected = {"index": {"_index": index, "_id": urlsafe_b64encode(digest).decode()}}
        assert action == json.dumps(expected, separators=(",", ":")).encode() and end == b""
        assert source == json.dumps(document(event("cpu", 1, when)), separators=(",", ":")).encode()
    assert (
        json.loads(output.encodeItem(event("cpu", 1, 1700006399.9999996)).split(b"\n")[1])[
            "@timestamp"
        ]
        == "2023-11-15T00:00:00.000000Z"
    )
    with pytest.raises(ValueError):
        output.encodeItem(event("cpu", 1, float("nan")))


def test_bulk_outcome_sorts_refusals_from_retries() -> None:
    answer = {
        "errors": True,
        "items": [
            {"index": {"status": 201}},
            {
                "index": {
                    "status": 400,
                    "error": {"type": "mapper_parsing_exception", "reason": "x"},
                }
            },
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
            {"create": {"status": 503, "error": {"type": "unavailable_shards_exception"}}},
        ],
    }
    assert bulkOutcome(answer) == ([1], [2, 3], "mapper_parsing_exception: x")


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ValueError, match="index"):
        configure(ElasticSearch, {"index": "Duct-%Y"})
    with pytest.raises(ValueError, match="url"):
        configure(ElasticSearch, {"url": "ftp://es"})
    with pytest.raises(ValueError, match="index"):
        configure(ElasticSearch, {"index": 5})


def output(reactor: Any, url: str, **config: Any) -> ElasticSearch:
    config = {
        "url": url,
        "interval": 0.01,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "timeout": 5,
        **config,
    }
    return ElasticSearch(configure(ElasticSearch, config), FakeDuct(clock=reactor, reactor=reactor))


def events(count: int) -> list[Event]:
    return [event(f"s{i}", float(i), T0 + i) for i in range(count)]


def indexed(api: BulkAPI) -> list[float]:
    return sorted(doc["metric"] for doc in api.docs.values())


@pytest_twisted.ensureDeferred
async def test_documents_indexed_in_bulk(reactor: Any) -> None:
    api = BulkAPI()
    served = Served(reactor, api)
    out = output(reactor, served.url, batch_size=50)
    try:
        out.eventsReceived(events(120))
        await testing.waitFor(reactor, lambda: out.sent == 120, "the documents sent")
        assert indexed(api) == [float(i) for i in range(120)] and api.requests == 3
    finally:
        await served.stop()


@pytest_twisted.ensureDeferred
async def test_a_refused_document_is_counted_and_the_rest_acked(reactor: Any) -> None:
    api = BulkAPI(refuse=lambda doc: doc["metric"] in (4.0, 9.0))
    served = Served(reactor, api)
    out = output(reactor, served.url, batch_size=20)
    try:
        out.eventsReceived(events(20))
        await testing.waitFor(reactor, lambda: out.sent == 18, "the accepted documents")
        assert out.eventsRejected == 2 and out.buffer.drops["rejected"] == 2
        assert indexed(api) == [float(i) for i in range(20) if i not in (4, 9)]
        assert api.requests == 2 and out.failures == 0
    finally:
        await served.stop()


@pytest_twisted.ensureDeferred
async def test_429_is_retried_overall_and_per_item(reactor: Any) -> None:
    api = BulkAPI()
    api.throttleRequests = 2
    api.throttleItems = 3
    served = Served(reactor, api)
    out = output(reactor, served.url, batch_size=10)
    try:
        out.eventsReceived(events(10))
        await testing.waitFor(reactor, lambda: out.sent == 10, "the documents sent")
        assert indexed(api) == [float(i) for i in range(10)]
        assert out.eventsRejected == 0 and out.failures == 3
    finally:
        await served.stop()


@pytest_twisted.ensureDeferred
async def test_nothing_lost_when_elasticsearch_goes_away(reactor: Any) -> None:
    api = BulkAPI()
    served = Served(reactor, api)
    out = output(reactor, served.url, batch_size=25)
    try:
        out.eventsReceived(events(100)[:50])
        await testing.waitFor(reactor, lambda: out.sent == 50, "the first documents")
        await served.stop()
        out.eventsReceived(events(100)[50:])
        await testing.waitFor(reactor, lambda: out.failures > 0, "a failed write")
        served.start()
        await testing.waitFor(reactor, lambda: out.sent == 100, "the rest", 20)
        assert indexed(api) == [float(i) for i in range(100)]
    finally:
        if served.port is not None:
            await served.stop()
