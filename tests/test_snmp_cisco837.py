"""duct.sources.snmp.SNMPCisco837: an ADSL line's figures from a real snmpd."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from snmpserver import ADSL_LINE_INDEX, COMMUNITY, SNMPAgent

from duct.sources.snmp import SNMPCisco837
from duct.testing import FakeDuct, SourceHarness


async def poll(reactor: Any, snmpd: SNMPAgent, **changes: Any) -> dict[str, Any]:
    config = {"service": "dsl", "port": snmpd.port, "community": COMMUNITY, "timeout": 1,
              "retries": 0, **changes}  # fmt: skip
    harness = SourceHarness(SNMPCisco837, config, duct=FakeDuct(reactor=reactor))
    try:
        events = await harness.poll()
    finally:
        await harness.stop()
    assert harness.errors == []
    return {e.service: e for e in events}


@pytest_twisted.ensureDeferred
async def test_the_adsl_line_rates_power_attenuation_and_margin(
    reactor: Any, snmpd: SNMPAgent
) -> None:
    services = await poll(reactor, snmpd)
    assert services["dsl.state"].state == "ok", services["dsl.state"].description
    assert services["dsl.adsl.state"].state == "ok", services["dsl.adsl.state"].description
    figures = {name: services[f"dsl.adsl.{name}"].metric
               for name in ("rxrate", "txrate", "outpwr", "attn", "margin")}  # fmt: skip
    assert figures == {"rxrate": 8128000, "txrate": 832000, "outpwr": 12.4, "attn": 31.5,
                       "margin": 6.1}  # fmt: skip
    assert services["dsl.adsl.rxrate"].description == "SNMP ADSL sync downstream 8128000"
    assert services["dsl.adsl.attn"].description == "SNMP ADSL attenuation 31.50dB"
    assert services["dsl.lo.ifOperStatus"].metric == 1  # and the interfaces, as SNMP reads them


@pytest_twisted.ensureDeferred
async def test_a_line_the_agent_does_not_have_is_critical(reactor: Any, snmpd: SNMPAgent) -> None:
    services = await poll(reactor, snmpd, adsl_index=ADSL_LINE_INDEX + 1)
    assert services["dsl.state"].state == "ok"
    state = services["dsl.adsl.state"]
    assert (state.state, state.metric) == ("critical", 0)
    assert "no ADSL line 16" in state.description
    assert "dsl.adsl.attn" not in services and services["dsl.adsl.rxrate"].metric == 8128000
