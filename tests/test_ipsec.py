"""duct.sources.linux.ipsec.StrongSwan: against a real charon, and on its recorded status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from strongswanserver import Charon

from duct.lib.commands import CommandOutput
from duct.lib.process import ProcessTimeout
from duct.sources.linux.ipsec import StrongSwan, tunnels
from duct.testing import FakeDuct, SourceHarness

RECORDED = (Path(__file__).parent / "data" / "ipsec-statusall.txt").read_text()
"""``ipsec statusall`` of strongSwan 5.9.8 (`strongswanserver`): both ends of ``office``
up, and ``nowhere`` connecting to an address that never answers."""


def test_connections_and_whether_an_sa_is_established() -> None:
    assert tunnels(RECORDED) == {
        "office": ("127.0.0.1...127.0.0.2", True),
        "branch": ("127.0.0.2...127.0.0.1", True),
        "nowhere": ("127.0.0.1...192.0.2.99", False),
    }


def test_events_and_a_failing_or_slow_ipsec() -> None:
    harness = SourceHarness(StrongSwan, {"service": "ipsec", "interval": 10})
    asked = harness.answerCommands(CommandOutput(3, RECORDED, ""),
                      CommandOutput(1, "", "sudo: a password is required\n"),
                      ProcessTimeout("sudo timed out after 10s"))  # fmt: skip
    harness.start()
    events = {e.service: e for e in harness.events}
    assert (events["ipsec.office"].state, events["ipsec.office"].metric) == ("ok", 1)
    assert events["ipsec.office"].description == "IPSec tunnel office up"
    nowhere = events["ipsec.nowhere"]
    assert (nowhere.state, nowhere.metric) == ("critical", 0)
    assert nowhere.description == "IPSec tunnel nowhere down (127.0.0.1...192.0.2.99)"
    assert events["ipsec.state"].state == "ok"
    harness.advance(10)
    harness.advance(10)
    refused, slow = harness.events[-2:]
    assert (refused.service, refused.state) == ("ipsec.state", "critical")
    assert refused.description == "ipsec statusall: sudo: a password is required"
    assert slow.description == "ipsec statusall: sudo timed out after 10s"
    assert asked == [["sudo", "-n", "ipsec", "statusall"]] * 3
    assert harness.errors == []


@pytest_twisted.ensureDeferred
async def test_a_real_charon_with_a_tunnel_up(reactor: Any, charon: Charon) -> None:
    config = {"service": "ipsec", "executable": str(charon.ipsec), "sudo": False}
    harness = SourceHarness(StrongSwan, config, duct=FakeDuct(reactor=reactor))
    events = {e.service: e for e in await harness.poll()}
    assert events["ipsec.state"].state == "ok", events["ipsec.state"].description
    assert (events["ipsec.office"].state, events["ipsec.branch"].state) == ("ok", "ok"), (
        charon.log())  # fmt: skip
    assert (events["ipsec.nowhere"].state, events["ipsec.nowhere"].metric) == ("critical", 0)
    assert set(events) == {"ipsec.state", "ipsec.office", "ipsec.branch", "ipsec.nowhere"}


@pytest_twisted.ensureDeferred
async def test_a_charon_that_does_not_answer_is_critical(
    reactor: Any, charon: Charon, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "strongswan.conf"
    elsewhere.write_text(f"charon {{\n plugins {{\n  stroke {{\n"
                         f"   socket = unix://{tmp_path}/gone.ctl\n  }}\n }}\n}}\n")  # fmt: skip
    ipsec = tmp_path / "ipsec"
    ipsec.write_text(f'#!/bin/sh\nSTRONGSWAN_CONF={elsewhere} exec /usr/sbin/ipsec "$@"\n')
    ipsec.chmod(0o755)
    config = {"service": "ipsec", "executable": str(ipsec), "sudo": False}
    harness = SourceHarness(StrongSwan, config, duct=FakeDuct(reactor=reactor))
    [state] = await harness.poll()
    assert (state.service, state.state, state.metric) == ("ipsec.state", "critical", 0)
    assert "gone.ctl" in state.description, state.description
    missing = {"service": "ipsec", "executable": str(tmp_path / "no-ipsec"), "sudo": False}
    harness = SourceHarness(StrongSwan, missing, duct=FakeDuct(reactor=reactor))
    [state] = await harness.poll()
    assert state.state == "critical" and "no-ipsec" in state.description
