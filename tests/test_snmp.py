"""duct.sources.snmp.SNMP: on a recorded IF-MIB walk, and against a real snmpd (v2c and v3)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest_twisted
from localservers import freePort
from snmpserver import AUTH_KEY, COMMUNITY, PRIV_KEY, USER, SNMPAgent
from twisted.internet.defer import Deferred, fail, succeed

from duct.lib.snmpclient import SNMPError, Table
from duct.sources.snmp import SNMP
from duct.testing import FakeDuct, SourceHarness, recordingService, waitFor

RECORDED: Table = json.loads((Path(__file__).parent / "data" / "snmpd-ifmib.json").read_text())
"""What net-snmp 5.9's snmpd answered over v3 for the IF-MIB columns duct walks."""

HC_IN, IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6", "1.3.6.1.2.1.2.2.1.10"


def walking(harness: SourceHarness, *answers: Table | Exception | None) -> list[list[str]]:
    """Make the source's walks answer ``answers`` in turn (None: never)."""
    asked: list[list[str]] = []

    def walk(columns: list[str]) -> Deferred[Table]:
        asked.append(columns)
        answer = answers[len(asked) - 1]
        if answer is None:
            return Deferred()
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)

    harness.source.walk = walk  # type: ignore[method-assign]
    return asked


def test_interface_counters_become_rates_and_32_bit_ones_may_wrap() -> None:
    config = {"service": "snmp", "interval": 10, "ip": "router", "community": "c"}
    harness = SourceHarness(SNMP, config, pipeline=True)
    first = copy.deepcopy(RECORDED)
    first[IN_OCTETS]["1"] = ["Counter32", 2**32 - 1000]
    later = copy.deepcopy(RECORDED)
    later[IN_OCTETS]["1"] = ["Counter32", 9000]  # wrapped: 10000 more
    later[HC_IN]["4"] = ["Counter64", RECORDED[HC_IN]["4"][1] + 50000]
    walking(harness, first, later)
    harness.start()
    status = harness.latest("snmp.ifb0.ifOperStatus")
    assert (status.metric, status.description) == (2, "SNMP interface ifb0 ifOperStatus=down")
    assert harness.latest("snmp.eth0.ifOperStatus").metric == 1
    assert harness.latest("snmp.state").state == "ok"
    assert not [e for e in harness.events if e.service == "snmp.eth0.ifHCInOctets"]  # no rate yet
    harness.advance(10)
    assert harness.latest("snmp.eth0.ifHCInOctets").metric == 5000.0
    assert harness.latest("snmp.lo.ifInOctets").metric == 1000.0
    assert harness.latest("snmp.eth0.ifInErrors").metric == 0.0
    assert harness.errors == []


def test_an_agent_that_refuses_or_does_not_answer_is_critical() -> None:
    config = {"service": "snmp", "interval": 30, "timeout": 2, "retries": 1, "port": 1161}
    harness = SourceHarness(SNMP, config)
    walking(harness, SNMPError("Wrong SNMP PDU digest"), None)
    harness.start()
    [refused] = harness.events
    assert (refused.service, refused.state, refused.metric) == ("snmp.state", "critical", 0)
    assert refused.description == "SNMP agent 127.0.0.1:1161: Wrong SNMP PDU digest"
    harness.advance(30)
    assert harness.source.running
    harness.advance(2 * 2 * 16 + 1)  # every column's tries, then the walk is given up
    silent = harness.events[-1]
    assert (silent.state, silent.description) == (
        "critical", "SNMP agent 127.0.0.1:1161: no answer in 65s")  # fmt: skip
    assert harness.errors == [] and not harness.source.running


def v3(snmpd: SNMPAgent, **changes: Any) -> dict[str, Any]:
    return {"service": "snmp", "port": snmpd.port, "user": USER, "auth_key": AUTH_KEY,
            "priv_key": PRIV_KEY, "timeout": 1, "retries": 0, **changes}  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_v3_with_sha_and_aes_reads_the_interfaces(reactor: Any, snmpd: SNMPAgent) -> None:
    harness = SourceHarness(SNMP, v3(snmpd), duct=FakeDuct(reactor=reactor))
    try:
        events = await harness.poll()
    finally:
        await harness.stop()
    services = {e.service: e for e in events}
    assert services["snmp.state"].state == "ok", services["snmp.state"].description
    assert services["snmp.lo.ifOperStatus"].metric == 1
    assert services["snmp.lo.ifHCInOctets"].metric > 0
    assert services["snmp.lo.ifInOctets"].aggregation is not None


@pytest_twisted.ensureDeferred
async def test_wrong_v3_keys_an_unknown_user_and_no_agent_are_critical(
    reactor: Any, snmpd: SNMPAgent
) -> None:
    nobody = freePort(2)  # SOCK_DGRAM: nothing listens there
    cases = [
        (v3(snmpd, auth_key="not-the-passphrase"), "Wrong SNMP PDU digest"),
        (v3(snmpd, user="stranger"), "Unknown USM user"),
        (
            {
                "service": "snmp",
                "port": nobody,
                "community": COMMUNITY,
                "timeout": 0.3,
                "retries": 0,
            },
            "No SNMP response received before timeout",
        ),  # fmt: skip
    ]
    for config, why in cases:
        harness = SourceHarness(SNMP, config, duct=FakeDuct(reactor=reactor))
        try:
            [state] = await harness.poll()
        finally:
            await harness.stop()
        assert (state.service, state.state) == ("snmp.state", "critical")
        assert why in state.description, state.description


@pytest_twisted.ensureDeferred
async def test_duct_polls_a_real_snmpd_over_v2c(reactor: Any, snmpd: SNMPAgent) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.snmp.SNMP", "service": "snmp", "interval": 0.5,
                     "port": snmpd.port, "community": COMMUNITY}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def series(name: str) -> list[Any]:
        return [e for e in output.written if e.service == f"snmp.{name}"]

    service.startService()
    try:
        # The walks themselves cross the loopback interface: its octets grow.
        await waitFor(reactor, lambda: [e for e in series("lo.ifHCInOctets") if e.metric > 0],
                      "a rate of loopback traffic", timeout=30)  # fmt: skip
    finally:
        await service.stopService()
    assert series("lo.ifOperStatus")[-1].metric == 1
    assert {e.state for e in series("state")} == {"ok"}
    assert service.sources[0].errors == 0, snmpd.log()
