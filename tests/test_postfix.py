"""duct.sources.postfix.Postfix: on a recorded spool listing, and against a real postfix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from postfixserver import PostfixServer

from duct.lib.commands import CommandOutput
from duct.lib.process import ProcessTimeout
from duct.sources.postfix import QUEUES, Postfix
from duct.testing import FakeDuct, SourceHarness, recordingService, waitFor

RECORDED = (Path(__file__).parent / "data" / "postfix-find.txt").read_text()
"""What ``find`` listed in postfix 3.7's spool: two deferred messages and one on hold."""


def test_each_queue_length_and_how_fast_it_changes() -> None:
    harness = SourceHarness(Postfix, {"service": "postfix", "interval": 10}, pipeline=True)
    drained = "\n".join(line for line in RECORDED.splitlines() if "/deferred/" not in line)
    asked = harness.answerCommands(CommandOutput(0, RECORDED, ""), CommandOutput(0, drained, ""))
    harness.start()
    deferred = harness.latest("postfix.deferred.value")
    assert (deferred.metric, deferred.description) == (2, "deferred queue length")
    assert harness.latest("postfix.hold.value").metric == 1
    assert harness.latest("postfix.active.value").metric == 0
    assert harness.latest("postfix.state").state == "ok"
    harness.advance(10)
    rate = harness.latest("postfix.deferred.rate")
    assert (rate.metric, rate.description) == (-0.2, "Queue rate")  # two fewer in 10 s
    assert harness.latest("postfix.hold.rate").metric == 0
    spool = "/var/spool/postfix"
    assert asked[0] == ["find", *(f"{spool}/{q}" for q in QUEUES), "-type", "f"]
    assert harness.errors == []


def test_a_spool_that_cannot_be_read_or_a_find_that_hangs_is_critical() -> None:
    harness = SourceHarness(Postfix, {"service": "postfix", "interval": 10, "spool": "/srv/pf"})
    denied = "find: '/srv/pf/active': Permission denied\nfind: '/srv/pf/hold': Permission denied\n"
    harness.answerCommands(CommandOutput(1, "", denied), ProcessTimeout("find timed out after 10s"))
    harness.start()
    harness.advance(10)
    unreadable, slow = harness.events
    assert (unreadable.service, unreadable.state) == ("postfix.state", "critical")
    assert (
        unreadable.description == "postfix spool /srv/pf: find: '/srv/pf/hold': Permission denied"
    )
    assert slow.description == "postfix spool /srv/pf: find timed out after 10s"
    assert harness.errors == []


@pytest_twisted.ensureDeferred
async def test_a_missing_spool_is_critical(reactor: Any, tmp_path: Path) -> None:
    config = {"service": "postfix", "spool": str(tmp_path / "nothing")}
    harness = SourceHarness(Postfix, config, duct=FakeDuct(reactor=reactor))
    [state] = await harness.poll()
    assert (state.service, state.state) == ("postfix.state", "critical")
    assert "No such file or directory" in state.description


@pytest_twisted.ensureDeferred
async def test_duct_counts_the_queues_of_a_real_postfix(
    reactor: Any, postfix: PostfixServer
) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.postfix.Postfix", "service": "postfix",
                     "interval": 0.3, "spool": postfix.spool}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def latest(name: str) -> float | None:
        found = [e.metric for e in output.written if e.service == f"postfix.{name}"]
        return found[-1] if found else None

    service.startService()
    try:
        await waitFor(reactor, lambda: latest("deferred.value") == 0, "an empty queue", 30)
        first, *_ = postfix.send(3)
        await waitFor(reactor, lambda: latest("deferred.value") == 3, "3 deferred", 30)
        postfix.postsuper("-h", first)
        await waitFor(reactor, lambda: (latest("deferred.value"), latest("hold.value")) == (2, 1),
                      "one on hold", 30)  # fmt: skip
        postfix.postsuper("-d", "ALL")
        await waitFor(reactor, lambda: latest("hold.value") == 0, "an empty spool", 30)
    finally:
        await service.stopService()
    rates = [e for e in output.written if e.service == "postfix.deferred.rate"]
    assert any(e.metric > 0 for e in rates) and any(e.metric < 0 for e in rates)
    assert {e.state for e in output.written if e.service == "postfix.state"} == {"ok"}
    assert service.sources[0].errors == 0, postfix.log()
