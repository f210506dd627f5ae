"""duct.sources.riak.RiakStats: against a stand-in answering Riak's recorded ``/stats``.

No Riak server is packaged in Debian; `fakeapis.StatsAPI` serves a
``/stats`` answer shaped as Riak's HTTP API documents it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
from fakeapis import Served, StatsAPI
from localservers import freePort

from duct.sources.riak import RiakStats
from duct.testing import FakeDuct, SourceHarness

STATS = json.loads((Path(__file__).parent / "data" / "riak-stats.json").read_text())


async def poll(reactor: Any, **config: Any) -> dict[str, Any]:
    harness = SourceHarness(
        RiakStats, {"service": "riak", **config}, duct=FakeDuct(reactor=reactor)
    )
    events = await harness.poll()
    assert harness.errors == []
    return {e.service: e for e in events}


@pytest_twisted.ensureDeferred
async def test_gets_and_puts_per_second(reactor: Any) -> None:
    api = StatsAPI({"/stats": STATS})
    served = Served(reactor, api)
    try:
        events = await poll(reactor, url=f"{served.url}/stats")
    finally:
        await served.stop()
    gets, puts = events["riak.gets_per_second"], events["riak.puts_per_second"]
    assert (gets.metric, gets.description) == (1928 / 60, "GETs per second for past minute")
    assert (puts.metric, puts.description) == (972 / 60, "PUTs per second for past minute")
    assert events["riak.state"].state == "ok"
    assert api.agents == [b"Duct Riak stats checker"]


@pytest_twisted.ensureDeferred
async def test_a_node_that_errs_refuses_or_is_silent_is_critical(reactor: Any) -> None:
    api = StatsAPI({"/stats": {"nodename": "riak@10.0.0.21"}})
    served = Served(reactor, api)
    try:
        [wrong] = (await poll(reactor, url=f"{served.url}/stats")).values()
        [missing] = (await poll(reactor, url=f"{served.url}/nothing")).values()
        api.silent = True
        [silent] = (await poll(reactor, url=f"{served.url}/stats", timeout=0.5)).values()
    finally:
        await served.stop()
    assert (wrong.service, wrong.state, wrong.metric) == ("riak.state", "critical", 0)
    assert "no node_gets and node_puts" in wrong.description
    assert missing.state == "critical" and "404" in missing.description
    assert silent.state == "critical" and "timed out" in silent.description, silent.description
    [refused] = (await poll(reactor, url=f"http://127.0.0.1:{freePort()}/stats")).values()
    assert refused.state == "critical" and "refused" in refused.description, refused.description
