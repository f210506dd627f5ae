"""duct.sources.statsd.StatsD: real UDP and TCP sockets, flushed on a Clock."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from duct.lib.statsd import Malformed, parseLine
from duct.sources.statsd import StatsD
from duct.testing import FakeDuct, SourceHarness, waitFor


def test_lines_parse_with_rates_and_tags_and_bad_ones_are_refused() -> None:
    [s] = parseLine("hits:3|c|@0.5|#env:prod,region:eu")
    assert (s.name, s.value, s.kind, s.rate, s.tags) == (
        "hits", "3", "c", 0.5, (("env", "prod"), ("region", "eu")))  # fmt: skip
    assert len(parseLine("a:1|c:2|c")) == 2
    for bad in ("nocolon", "x:1|q", "x:abc|c", "x:1|c|@5", "x:nan|g", ":1|c", "x:1|c|junk"):
        try:
            parseLine(bad)
        except Malformed:
            continue
        raise AssertionError(bad)


def harness(reactor: Any, **config: Any) -> tuple[SourceHarness, Clock]:
    clock = Clock()
    duct = FakeDuct(clock=clock, reactor=reactor)
    return SourceHarness(StatsD, {"service": "statsd", "interval": 10, "port": 0,
                                  "tcp": True, **config}, duct=duct), clock  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_udp_and_tcp_samples_are_aggregated_and_flushed_each_interval(reactor: Any) -> None:
    h, clock = harness(reactor)
    h.start()
    udpPort, tcpPort = (p.getHost().port for p in h.source.ports)
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for line in (b"hits:5|c\nhits:1|c|@0.1", b"temp:20|g", b"temp:+5|g", b"temp:-2|g",
                     b"rt:10|ms:20|ms:30|ms", b"users:ann|s\nusers:bob|s\nusers:ann|s",
                     b"tagged:1|c|#env:prod", b"garbage", b"x:1|zz"):  # fmt: skip
            udp.sendto(line, ("127.0.0.1", udpPort))
        tcp = socket.create_connection(("127.0.0.1", tcpPort))
        tcp.sendall(b"hits:4|c\nrt:40|ms\n")
        await waitFor(
            reactor, lambda: h.source.samples >= 14 and h.source.malformed >= 2, "the samples", 10
        )
        tcp.close()
        udp.close()
        assert h.source.malformed == 2
        clock.advance(10)
        got = {e.service: e for e in h.events}
        assert got["statsd.hits"].metric == (5 + 10 + 4) / 10  # per second
        assert got["statsd.temp"].metric == 23
        assert got["statsd.rt.count"].metric == 4 and got["statsd.rt.mean"].metric == 25
        assert (got["statsd.rt.min"].metric, got["statsd.rt.max"].metric) == (10, 40)
        assert got["statsd.rt.p90"].metric == 40
        assert got["statsd.users.count"].metric == 2
        assert got["statsd.tagged"].attributes == {"env": "prod"}
        h.events.clear()
        clock.advance(10)
        assert [e.service for e in h.events] == ["statsd.temp"]  # gauges persist
    finally:
        await h.stop()


@pytest_twisted.ensureDeferred
async def test_max_keys_refuses_new_series_and_counts_them(reactor: Any) -> None:
    h, clock = harness(reactor, max_keys=3, tcp=False)
    h.start()
    [port] = (p.getHost().port for p in h.source.ports)
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(b"\n".join(b"k%d:1|c" % n for n in range(10)) + b"\nk0:1|c", ("127.0.0.1", port))
        await waitFor(reactor, lambda: h.source.samples >= 11, "the samples", 10)
        udp.close()
        assert h.source.buckets.refused == 7
        clock.advance(10)
        assert sorted(e.service for e in h.events) == ["statsd.k0", "statsd.k1", "statsd.k2"]
        assert h.latest("statsd.k0").metric == 0.2
    finally:
        await h.stop()
