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
from twisted.internet.task import Clock, LoopingCall

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


def harness(reactor: Any, clock: Any = None, **config: Any) -> tuple[SourceHarness, Any]:
    clock = Clock() if clock is None else clock
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


@pytest_twisted.ensureDeferred
async def test_pmacctd_samples_give_a_breakdown_by_address_and_port(
    reactor: Any, sflow_probe: Any
) -> None:
    """pmacctd's flow samples of UDP and TCP traffic, flushed each interval on the real clock.

    Its counter samples carry no interface counters (pmacct 1.7.7 sends
    them empty), so the rates are tested on built and captured datagrams.
    """
    from sflowprobe import IFINDEX

    h, _ = harness(reactor, reactor, port=sflow_probe.collectorPort, interval=1)
    h.start()
    target = ("127.0.0.1", sflow_probe.trafficPort)
    server = socket.create_server(target)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def traffic() -> None:
        udp.sendto(b"u" * 200, target)
        client = socket.create_connection(target)
        peer, _ = server.accept()
        client.sendall(b"t" * 300)
        peer.close()
        client.close()

    sending = LoopingCall(traffic)
    sending.clock = reactor
    sending.start(0.1)
    prefix, port = f"sflow.{IFINDEX}", sflow_probe.trafficPort
    wanted = {f"{prefix}.ip.127.0.0.1.src", f"{prefix}.ip.127.0.0.1.dst",
              f"{prefix}.port.{port}.dst", f"{prefix}.port.{port}.src"}  # fmt: skip
    try:
        await waitFor(reactor, lambda: wanted <= {e.service for e in h.events},
                      "a breakdown of pmacctd's samples", 30)  # fmt: skip
        got = [e for e in h.events if e.service in wanted]
        assert all(e.metric > 0 and e.hostname == "127.0.0.1" for e in got)
        assert h.source.datagrams > 0 and h.source.malformed == 0
    finally:
        sending.stop()
        server.close()
        udp.close()
        await h.stop()


def test_an_empty_counter_sample_as_pmacctd_sends_it_decodes_to_no_counters() -> None:
    d = decode(datagram(counterSample(), flows("10.0.0.1", "10.0.0.2", 100)))
    assert (d.counters, len(d.flows), d.skipped) == ([], 1, 0)


@pytest_twisted.ensureDeferred
async def test_agents_are_named_by_reverse_dns_cached_and_bounded(reactor: Any) -> None:
    from twisted.names import client, dns, server

    answered: list[str] = []

    class PTR:
        def query(self, query: Any, timeout: Any = None) -> Any:
            from twisted.internet.defer import fail, succeed
            from twisted.names.error import DomainError

            name = query.name.name.decode()
            answered.append(name)
            if name != "1.2.0.192.in-addr.arpa":
                return fail(DomainError(name))
            record = dns.RRHeader(query.name.name, dns.PTR, ttl=60,
                                  payload=dns.Record_PTR(b"switch1.example.net"))  # fmt: skip
            return succeed(([record], [], []))

    factory = server.DNSServerFactory(authorities=[PTR()])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    h, clock = harness(reactor, dnslookup=True, dns_cache=1)
    h.source.names.resolver = client.Resolver(
        servers=[("127.0.0.1", port.getHost().port)], reactor=reactor
    )
    try:
        s = h.source
        for agent in ("192.0.2.1", "192.0.2.1", "192.0.2.9"):
            s.received(datagram(counterSample(ifCounters(1, 0, 0)), agent=agent), agent)
        clock.advance(1)
        for agent in ("192.0.2.1", "192.0.2.9"):
            s.received(datagram(counterSample(ifCounters(1, 10, 10)), agent=agent), agent)
        await waitFor(reactor, lambda: len(h.events) == 4, "the named events", 10)
        assert sorted({e.hostname for e in h.events}) == ["192.0.2.9", "switch1.example.net"]
        assert len(s.names.cache) == 1  # dns_cache: the first name made way for the second
        before = len(answered)
        both = [s.names.lookup("192.0.2.1"), s.names.lookup("192.0.2.1")]
        assert [await d for d in both] == ["switch1.example.net"] * 2
        assert len(answered) == before + 1  # one query for both
        assert s.names.cached("192.0.2.1") == "switch1.example.net"
    finally:
        await port.stopListening()


def test_a_port_in_use_fails_the_start_naming_the_port(reactor: Any) -> None:
    from duct.listening import CannotListen

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        h, _ = harness(reactor, port=taken.getsockname()[1])
        with pytest.raises(CannotListen) as raised:
            h.source.startTimer()
        assert raised.value.key == "port" and h.source.down == "not listening"
    finally:
        taken.close()


def test_every_truncation_and_corruption_either_decodes_or_is_malformed() -> None:
    import random

    built = datagram(flowSample(rawHeader(ethernet(ipv4("10.0.0.1", "10.0.0.2"), vlan=3))),
                     counterSample(ifCounters(2, 1, 1)))  # fmt: skip
    cases = [data[:n] for data in (CAPTURED, built) for n in range(len(data))]
    rng = random.Random(5)
    for _ in range(2000):
        data = bytearray(rng.choice((CAPTURED, built)))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(bytes(data))
    for data in cases:
        try:
            decode(data)
        except Malformed:
            pass
