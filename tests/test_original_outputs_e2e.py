"""A config in the original duct's words, with Elasticsearch, OpenTSDB and Prometheus outputs.

It passes ``duct check``, and a real agent under twistd routes each
source's events to its output by name: Elasticsearch's ``_bulk`` (played
by `fakeapis.BulkAPI`, as no Elasticsearch runs here), Debian's
victoria-metrics for OpenTSDB's ``/api/put``, and the Prometheus output's
own scrape endpoint.
"""

from __future__ import annotations

import subprocess
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest_twisted
from agents import BIN, Agents, waitFor
from fakeapis import BulkAPI, Served
from localservers import freePort
from vmserver import VictoriaMetrics


def originalConfig(path: Path, elastic: str, tsdb: str, scrape: int) -> Path:
    config = path / "duct.yml"
    config.write_text(
        textwrap.dedent(
            f"""\
            ttl: 60.0
            interval: 1.0
            outputs:
                - output: duct.outputs.elasticsearch.ElasticSearch
                  name: es
                  url: {elastic}/
                  index: duct-%Y.%m.%d
                  interval: 0.2
                - output: duct.outputs.opentsdb.OpenTSDB
                  name: tsdb
                  url: {tsdb}
                  interval: 0.2
                - output: duct.outputs.prometheus.Prometheus
                  name: prom
                  port: {scrape}
                  metric_path: metrics
                  prefix: duct_
            sources:
                - service: load
                  source: duct.sources.linux.basic.LoadAverage
                  route: es
                - service: mem
                  source: duct.sources.linux.basic.Memory
                  route: tsdb
                - service: disk
                  source: duct.sources.linux.basic.DiskFree
                  route: prom
            """
        )
    )
    return config


@pytest_twisted.ensureDeferred
async def test_original_outputs_check_and_run_with_routes(
    reactor: Any, tmp_path: Path, victoria: VictoriaMetrics
) -> None:
    api = BulkAPI()
    elastic = Served(reactor, api)
    scrape = freePort()
    config = originalConfig(tmp_path, elastic.url, victoria.url, scrape)

    checked = subprocess.run(
        [str(BIN / "duct"), "check", "-c", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    agents = Agents(reactor, config)
    agent = agents.start()
    try:
        await waitFor(reactor, lambda: bool(api.docs) or not agent.running, "documents in _bulk")
        assert agent.running, agent.log
        services = {doc["service"] for doc in api.docs.values()}
        assert services and all(s.startswith("load") for s in services), services

        def stored() -> bool:
            return bool(victoria.export('{__name__=~"mem.*"}'))

        await waitFor(reactor, stored, "mem points in victoria-metrics")
        assert not victoria.export('{__name__=~"load.*"}')  # routed to es alone

        body = ""

        def scrapedDisk() -> bool:
            nonlocal body
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{scrape}/metrics", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                return False
            return "duct_disk" in body

        await waitFor(reactor, scrapedDisk, "disk gauges on the scrape endpoint")
        assert "duct_load" not in body and "duct_mem" not in body
        await agents.terminate(agent)
        assert agent.code == 0, agent.log
    finally:
        await agents.cleanup()
        await elastic.stop()
