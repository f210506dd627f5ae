"""duct.sources.database.elasticsearch.ElasticSearch: against a stand-in with recorded answers.

Elasticsearch is not packaged in Debian; `fakeapis.StatsAPI` serves
``_cluster/stats`` and ``_nodes/stats`` answers shaped as Elasticsearch's
REST API documents them (8.x: two data nodes and a coordinating one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
from fakeapis import Served, StatsAPI

from duct.aggregators import Counter64
from duct.sources.database.elasticsearch import ElasticSearch
from duct.testing import FakeDuct, SourceHarness

DATA = Path(__file__).parent / "data"
ANSWERS = {
    "/_cluster/stats": json.loads((DATA / "es-cluster-stats.json").read_text()),
    "/_nodes/stats": json.loads((DATA / "es-nodes-stats.json").read_text()),
}


async def poll(reactor: Any, **config: Any) -> dict[str, Any]:
    harness = SourceHarness(ElasticSearch, {"service": "es", **config},
                            duct=FakeDuct(reactor=reactor))  # fmt: skip
    events = await harness.poll()
    assert harness.errors == []
    return {e.service: e for e in events}


@pytest_twisted.ensureDeferred
async def test_cluster_figures_and_node_rates(reactor: Any) -> None:
    served = Served(reactor, StatsAPI(ANSWERS, credentials=b"elastic:secret"))
    try:
        events = await poll(reactor, url=served.url + "/", user="elastic", password="secret")
    finally:
        await served.stop()
    status = events["es.cluster.status"]
    assert (status.metric, status.state, status.description) == (1, "warning", "Status yellow")
    figures = {name: events[f"es.{name}"].metric for name in (
        "cluster.nodes", "indices", "shards.total", "shards.primary", "documents.total",
        "documents.size")}  # fmt: skip
    assert figures == {"cluster.nodes": 3, "indices": 12, "shards.total": 40,
                       "shards.primary": 24, "documents.total": 1840263,
                       "documents.size": 2231480422}  # fmt: skip
    assert events["es.documents.rate"].aggregation is Counter64
    assert events["es.nodes.10.0.0.31.search"].metric == 812331
    assert events["es.nodes.10.0.0.32.index"].metric == 3498110
    assert events["es.nodes.10.0.0.32.delete"].aggregation is Counter64
    assert events["es.nodes.10.0.0.31.get"].metric == 22210
    assert not [name for name in events if "10.0.0.40" in name]  # coordinating only: no data
    assert events["es.state"].state == "ok"


@pytest_twisted.ensureDeferred
async def test_wrong_credentials_errors_and_silence_are_critical(reactor: Any) -> None:
    api = StatsAPI(ANSWERS, credentials=b"elastic:secret")
    served = Served(reactor, api)
    try:
        [denied] = (await poll(reactor, url=served.url, user="elastic")).values()
        api.credentials = None
        api.status = 503
        [unavailable] = (await poll(reactor, url=served.url)).values()
        api.status = None
        api.answers = {**ANSWERS, "/_cluster/stats": {"cluster_name": "logs"}}
        [odd] = (await poll(reactor, url=served.url)).values()
        api.silent = True
        [silent] = (await poll(reactor, url=served.url, timeout=0.5)).values()
    finally:
        await served.stop()
    assert (denied.service, denied.state, denied.metric) == ("es.state", "critical", 0)
    assert "401" in denied.description, denied.description
    assert unavailable.state == "critical" and "503" in unavailable.description
    assert odd.description.endswith("no cluster status in _cluster/stats")
    assert silent.state == "critical" and "timed out" in silent.description, silent.description


@pytest_twisted.ensureDeferred
async def test_a_red_cluster_is_critical(reactor: Any) -> None:
    red = {**ANSWERS, "/_cluster/stats": {**ANSWERS["/_cluster/stats"], "status": "red"}}
    served = Served(reactor, StatsAPI(red))
    try:
        events = await poll(reactor, url=served.url)
    finally:
        await served.stop()
    assert (events["es.cluster.status"].state, events["es.cluster.status"].metric) == (
        "critical", 0)  # fmt: skip
    assert events["es.state"].state == "ok"
