"""duct.sources.unbound.Stats: on recorded unbound-control output, and against a real unbound."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest_twisted
from unboundserver import UNBOUND_CONTROL, UnboundServer

from duct.lib.commands import CommandOutput
from duct.lib.process import ProcessTimeout
from duct.sources.unbound import Stats, counts
from duct.testing import FakeDuct, SourceHarness, recordingService, waitFor

RECORDED = (Path(__file__).parent / "data" / "unbound-stats.txt").read_text()
"""``unbound-control stats_noreset`` of unbound 1.17 after one query."""

REFUSED = "[1796145330] unbound-control[19566:0] error: connect: Connection refused for /run/x.sock"


def test_every_statistic_with_counters_as_rates() -> None:
    config = {"service": "unbound", "interval": 10, "config": "/etc/unbound/unbound.conf"}
    harness = SourceHarness(Stats, config, pipeline=True)
    later = RECORDED.replace("total.num.queries=1\n", "total.num.queries=51\n")
    asked = harness.answerCommands(CommandOutput(0, RECORDED, ""), CommandOutput(0, later, ""))
    harness.start()
    rrset = harness.latest("unbound.mem.cache.rrset")
    assert (rrset.metric, rrset.description, rrset.state) == (66072, "mem.cache.rrset", "ok")
    assert harness.latest("unbound.state").metric == 1
    harness.advance(10)
    assert harness.latest("unbound.total.num.queries").metric == 5.0  # 50 more in 10 s
    assert harness.latest("unbound.num.query.type.A").metric == 0.0
    assert asked == [["/usr/sbin/unbound-control", "-c", "/etc/unbound/unbound.conf",
                      "stats_noreset"]] * 2  # fmt: skip
    assert harness.errors == []


def test_which_keys_are_counters() -> None:
    assert counts("total.num.queries") and counts("thread0.num.cachehits")
    assert counts("num.answer.rcode.NXDOMAIN") and counts("unwanted.replies")
    assert counts("total.requestlist.exceeded") and counts(
        "histogram.000000.000000.to.000000.000001"
    )
    assert not counts("mem.cache.rrset") and not counts("total.requestlist.avg")
    assert not counts("time.up") and not counts("total.recursion.time.avg")


def test_a_failing_or_slow_unbound_control_is_critical() -> None:
    harness = SourceHarness(
        Stats, {"service": "unbound", "interval": 10, "server": "127.0.0.1@8953"}
    )
    harness.answerCommands(CommandOutput(1, "", REFUSED),
              ProcessTimeout("/usr/sbin/unbound-control timed out after 10s"))  # fmt: skip
    harness.start()
    harness.advance(10)
    refused, slow = harness.events
    assert (refused.service, refused.state, refused.metric) == ("unbound.state", "critical", 0)
    assert refused.description.endswith("Connection refused for /run/x.sock")
    assert (slow.state, slow.description) == (
        "critical",
        "unbound-control: /usr/sbin/unbound-control timed out after 10s",
    )
    assert harness.errors == []


@pytest_twisted.ensureDeferred
async def test_an_unbound_that_is_not_running_is_critical(reactor: Any, tmp_path: Path) -> None:
    conf = tmp_path / "unbound.conf"
    conf.write_text(f'remote-control:\n    control-enable: yes\n    control-use-cert: no\n'
                    f'    control-interface: "{tmp_path}/control.sock"\n')  # fmt: skip
    config = {"service": "unbound", "executable": UNBOUND_CONTROL, "config": str(conf)}
    harness = SourceHarness(Stats, config, duct=FakeDuct(reactor=reactor))
    [state] = await harness.poll()
    assert (state.service, state.state) == ("unbound.state", "critical")
    assert f"{tmp_path}/control.sock" in state.description


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_unbound(reactor: Any, unbound: UnboundServer) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.unbound.Stats", "service": "unbound",
                     "interval": 0.5, "executable": UNBOUND_CONTROL, "config": unbound.conf}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def series(name: str) -> list[Any]:
        return [e for e in output.written if e.service == f"unbound.{name}"]

    service.startService()
    try:
        await waitFor(reactor, lambda: series("total.num.queries"), "a first rate", timeout=30)
        for _ in range(20):
            assert unbound.query()[3] & 0x0F == 0  # NOERROR
        queries = "total.num.queries"
        await waitFor(reactor, lambda: sum(e.metric for e in series(queries)) > 0, "more", 30)
    finally:
        await service.stopService()
    # Each rate times its interval is what the counter grew by: the 20 queries.
    rates = series(queries)
    grew = sum(b.metric * (b.time - a.time) for a, b in pairwise(rates))
    assert round(grew) == 20, grew
    assert series("time.up")[-1].metric > 0
    assert {e.state for e in series("state")} == {"ok"}
    assert service.sources[0].errors == 0, unbound.log()
