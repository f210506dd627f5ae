"""duct.protocol.sflow and duct.sources.sflow.sFlow: datagrams built by hand and captured ones."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from sflowdata import (
    CAPTURED,
    counterSample,
    datagram,
    ethernet,
    flowSample,
    framed,
    ifCounters,
    ipv4,
    rawHeader,
    u32,
)
from twisted.internet.task import Clock

from duct.protocol.sflow import Malformed, decode
from duct.sources.sflow import sFlow
from duct.testing import FakeDuct, SourceHarness, waitFor


def test_a_captured_datagram_decodes_to_its_flows_and_counters() -> None:
    d = decode(CAPTURED)
    assert (d.agent, d.sequence) == ("172.30.0.5", 588)
    assert len(d.flows) == 4 and len(d.counters) == 1
    first = d.flows[0]
    assert (first.samplingRate, first.inputIndex, first.frameLength) == (128, 3, 117)
    assert first.packet is not None
    assert (first.packet.src, first.packet.dst, first.packet.protocol) == (
        "41.134.244.137", "172.30.0.79", 17)  # fmt: skip
    assert (first.packet.sport, first.packet.dport, first.packet.length) == (1496, 58347, 99)
    tcp = d.flows[1].packet
    assert tcp is not None and (tcp.protocol, tcp.sport) == (6, 443)
    assert (d.counters[0].index, d.counters[0].speed) == (12, 10_000_000)
    assert d.skipped == 5  # the extended switch records and the ethernet counters


def test_vlan_tagged_and_bare_ipv4_headers_decode() -> None:
    tagged = flowSample(rawHeader(ethernet(ipv4("10.1.1.1", "10.2.2.2", 6, 80, 999), vlan=7)))
    bare = flowSample(rawHeader(ipv4("10.3.3.3", "10.4.4.4"), protocol=11))
    d = decode(datagram(tagged, bare))
    packets = [f.packet for f in d.flows]
    assert [(p.src, p.dst, p.sport, p.dport) for p in packets if p] == [
        ("10.1.1.1", "10.2.2.2", 80, 999), ("10.3.3.3", "10.4.4.4", 1234, 53)]  # fmt: skip


def test_unknown_samples_and_records_are_skipped_by_their_length() -> None:
    unknownSample = framed(4300, 7, b"\xff" * 12)
    unknownRecord = framed(0, 1001, u32(1, 2, 3, 4))
    flow = flowSample(unknownRecord, rawHeader(ethernet(ipv4("10.0.0.9", "10.0.0.8"))))
    counters = counterSample(framed(0, 2, b"\0" * 52), ifCounters(5, 100, 200))
    d = decode(datagram(unknownSample, flow, counters))
    assert d.skipped == 3
    assert d.flows[0].packet is not None and d.flows[0].packet.src == "10.0.0.9"
    assert (d.counters[0].index, d.counters[0].inOctets, d.counters[0].outOctets) == (5, 100, 200)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        datagram(version=4),
        CAPTURED[:-3],
        CAPTURED[:40],
        CAPTURED + b"\0\0\0\0",
        datagram(framed(0, 1, u32(1, 2, 3))),  # a flow sample cut short inside its length
        datagram(counterSample(framed(0, 1, b"\0" * 20))),  # interface counters cut short
        datagram(framed(0, 1, b"")[:4] + u32(10**6)),  # a length past the end
    ],
    ids=[
        "empty",
        "version4",
        "truncated",
        "header-only",
        "trailing",
        "short-flow",
        "short-counters",
        "long-length",
    ],  # fmt: skip
)
def test_a_malformed_datagram_raises_one_error(data: bytes) -> None:
    with pytest.raises(Malformed):
        decode(data)


def harness(reactor: Any, **config: Any) -> tuple[SourceHarness, Clock]:
    clock = Clock()
    duct = FakeDuct(clock=clock, reactor=reactor)
    return SourceHarness(sFlow, {"service": "sflow", "interval": 10, "port": 0,
                                 "dnslookup": False, **config}, duct=duct), clock  # fmt: skip


def flows(src: str, dst: str, length: int, rate: int = 1, input: int = 3) -> bytes:
    header = rawHeader(ethernet(ipv4(src, dst, 6, 40000, 443, length=length)))
    return flowSample(header, rate=rate, input=input)


def test_counter_samples_give_rates_and_flows_a_breakdown_each_interval() -> None:
    h, clock = harness(Clock())
    s = h.source
    s.received(datagram(counterSample(ifCounters(3, 1000, 5000))), "192.0.2.1")
    assert h.events == []  # one sample gives no rate
    clock.advance(5)
    s.received(datagram(counterSample(ifCounters(3, 3000, 5500)),
                        flows("10.0.0.1", "10.0.0.2", 100, rate=10),
                        flows("10.0.0.3", "10.0.0.2", 300, rate=10)), "192.0.2.1")  # fmt: skip
    got = {e.service: e for e in h.events}
    assert got["sflow.3.inOctets"].metric == 400 and got["sflow.3.outOctets"].metric == 100
    assert got["sflow.3.inOctets"].hostname == "10.0.0.1"  # the agent, not the sender
    h.events.clear()
    s.get()
    got = {e.service: e.metric for e in h.events}
    assert got["sflow.3.ip.10.0.0.1.src"] == 100 * 10 / 10
    assert got["sflow.3.ip.10.0.0.3.src"] == 300 * 10 / 10
    assert got["sflow.3.ip.10.0.0.2.dst"] == 400 * 10 / 10
    assert got["sflow.3.port.40000.src"] == got["sflow.3.port.443.dst"] == 400
    h.events.clear()
    s.get()
    assert h.events == []  # the breakdown is per interval


def test_a_counter_that_goes_back_gives_no_rate() -> None:
    h, clock = harness(Clock())
    h.source.received(datagram(counterSample(ifCounters(1, 5000, 5000))), "192.0.2.1")
    clock.advance(5)
    h.source.received(datagram(counterSample(ifCounters(1, 10, 10))), "192.0.2.1")
    clock.advance(5)
    h.source.received(datagram(counterSample(ifCounters(1, 60, 10))), "192.0.2.1")
    assert [(e.service, e.metric) for e in h.events] == [
        ("sflow.1.inOctets", 10), ("sflow.1.outOctets", 0)]  # fmt: skip


def test_state_past_max_keys_is_refused_and_counted() -> None:
    h, clock = harness(Clock(), max_keys=5)
    s = h.source
    s.received(datagram(flows("10.0.0.1", "10.0.0.2", 100)), "192.0.2.1")  # 1 interface + 4
    assert (s.held, s.refused) == (5, 0)
    s.received(datagram(flows("10.0.0.3", "10.0.0.2", 100)), "192.0.2.1")
    s.received(datagram(counterSample(ifCounters(9, 1, 1))), "192.0.2.1")
    assert s.refused == 2
    s.get()
    assert s.held == 0
    s.received(datagram(counterSample(ifCounters(9, 1, 1))), "192.0.2.1")
    assert (s.held, s.refused) == (1, 2)


@pytest_twisted.ensureDeferred
async def test_bad_datagrams_are_counted_and_the_listener_keeps_going(reactor: Any) -> None:
    h, clock = harness(reactor)
    h.start()
    port = h.source.port.getHost().port
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for data in (b"junk", CAPTURED[:100], datagram(version=2), CAPTURED, CAPTURED):
            udp.sendto(data, ("127.0.0.1", port))
        udp.close()
        await waitFor(reactor, lambda: h.source.datagrams >= 2, "the datagrams", 10)
        assert h.source.malformed == 3
        clock.advance(10)
        services = {e.service for e in h.events}
        assert "sflow.3.ip.41.134.244.137.src" in services
        assert "sflow.10.port.61950.src" in services
        assert {e.hostname for e in h.events} == {"172.30.0.5"}
    finally:
        await h.stop()
