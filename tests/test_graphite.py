"""Graphite: paths and wire formats, the written-means rule on a Clock, real carbon-cache."""

from __future__ import annotations

import pickle
import struct
import time
from typing import Any

import pytest
import pytest_twisted
from carbonserver import Carbon
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from duct import testing
from duct.objects import Event
from duct.outputs.graphite import Graphite
from duct.outputs.graphite_format import (
    PATHS_CACHED,
    PathTemplate,
    Point,
    pickleMessages,
    plaintextLine,
)
from duct.testing import FakeDuct, configure

T0 = 1_700_000_000.75


def event(service: str = "cpu", metric: Any = 1.5, host: str = "web1.example.com", **kw: Any):
    return Event(kw.pop("state", "ok"), service, None, metric, 60, hostname=host, **kw)


# -- paths and formats ------------------------------------------------------------------


def test_default_path_is_prefix_host_service_sanitised() -> None:
    paths = PathTemplate("{prefix}.{host}.{service}", "duct.prod")
    assert (
        paths.path(event("network eth0/rx bytes"))
        == "duct.prod.web1_example_com.network_eth0_rx_bytes"
    )
    assert paths.path(event("disk.sda.reads")) == "duct.prod.web1_example_com.disk.sda.reads"


def test_no_prefix_leaves_no_empty_node() -> None:
    assert PathTemplate("{prefix}.{service}").path(event("load..1")) == "load.1"


def test_template_fields() -> None:
    paths = PathTemplate("servers.{short}.{state}.{service}.{fqdn}")
    assert paths.path(event("cpu", state="warning")) == "servers.web1.warning.cpu.web1.example.com"


def test_paths_already_clean_and_paths_to_sanitise_agree() -> None:
    """A clean path is taken as it is; anything else goes through sanitising, node by node."""
    paths = PathTemplate("{prefix}.{host}.{service}")
    assert paths.path(event("disk.sda.reads", host="web1")) == "web1.disk.sda.reads"
    assert paths.path(event("_disk_..sda ._reads_", host="_web1_")) == "web1.disk.sda.reads"
    assert paths.path(event("a_b.c-d", host="h")) == "h.a_b.c-d"
    assert paths.path(event("é.x", host="h")) == "h.x"


def test_prefix_written_into_the_template_keeps_the_template_meaning() -> None:
    assert PathTemplate("..{prefix}..{service}").path(event("cpu")) == "cpu"
    assert PathTemplate("{prefix}.{service}", " a..b ").path(event("cpu")) == "a.b.cpu"
    assert PathTemplate("{prefix!s}.{service}", "p").path(event("cpu")) == "p.cpu"
    assert PathTemplate("{{x}}.{prefix}{service}", "p").path(event("cpu")) == "x.pcpu"
    assert PathTemplate("{prefix}_{short}.{service}", "p").path(event("cpu")) == "p_web1.cpu"
    assert PathTemplate("{service:>{state}}").path(event("cpu", state="5")) == "cpu"


def test_paths_kept_for_reuse_follow_every_field_and_stay_bounded() -> None:
    paths = PathTemplate("{short}.{state}.{service}")
    for _ in range(2):
        assert paths.path(event("cpu", state="ok")) == "web1.ok.cpu"
        assert paths.path(event("cpu", state="warning")) == "web1.warning.cpu"
        assert paths.path(event("cpu", host="db1.example", state="ok")) == "db1.ok.cpu"
        with pytest.raises(ValueError):
            paths.path(event("x" * 300))
    for i in range(PATHS_CACHED + 10):
        assert paths.path(event(f"s{i}")) == f"web1.ok.s{i}"
    assert paths._cachedPath.cache_info().currsize == PATHS_CACHED


def test_points_carbon_cannot_carry_are_refused() -> None:
    paths = PathTemplate("{host}.{service}")
    for bad in (None, float("nan"), float("inf"), "12"):
        with pytest.raises(ValueError):
            paths.point(event(metric=bad))
    with pytest.raises(ValueError):
        paths.point(event(service="x" * 300))
    assert paths.point(event(metric=True, evtime=T0)) == Point("web1_example_com.cpu", 1, int(T0))


def test_plaintext_and_pickle_bytes() -> None:
    point = Point("a.b", 2.5, 1700000000)
    assert plaintextLine(point) == b"a.b 2.5 1700000000\n"
    [message] = pickleMessages([point, Point("c", 3, 1700000001)])
    (length,) = struct.unpack("!L", message[:4])
    assert length == len(message) - 4
    assert pickle.loads(message[4:]) == [("a.b", (1700000000, 2.5)), ("c", (1700000001, 3))]


def test_pickles_split_to_stay_within_the_limit() -> None:
    points = [Point(f"series.{i:04d}", i, 1700000000) for i in range(500)]
    messages = pickleMessages(points, 2048)
    assert len(messages) > 1 and all(len(m) - 4 <= 2048 for m in messages)
    decoded = [p for m in messages for p in pickle.loads(m[4:])]
    assert decoded == [(p.path, (p.timestamp, p.value)) for p in points]


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ValueError, match="template"):
        configure(Graphite, {"template": "{prefix}.{nodename}.{service}"})
    with pytest.raises(ValueError, match="template"):
        configure(Graphite, {"template": "{host}"})
    with pytest.raises(ValueError, match="protocol"):
        configure(Graphite, {"protocol": "udp"})
    with pytest.raises(ValueError, match="port"):
        configure(Graphite, {"port": "2003"})


# -- on a Clock -----------------------------------------------------------------------


class FakeCarbon:
    """The far end of the connection Graphite made on a MemoryReactorClock."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        host, port, factory = reactor.tcpClients[-1][:3]
        self.transport = StringTransport()
        self.proto = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.proto.makeConnection(self.transport)

    def take(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def drained(self) -> None:
        """The socket took everything: what the transport tells its pull producer."""
        self.transport.producer.resumeProducing()

    def drop(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))


def clocked(**config: Any) -> tuple[Graphite, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    reactor.advance(T0)
    config = {"server": "127.0.0.1", "flush_interval": 0, **config}
    output = Graphite(configure(Graphite, config), FakeDuct(clock=reactor))
    output.createClient()
    return output, reactor


def test_a_batch_counts_once_written_and_the_connection_held() -> None:
    output, reactor = clocked(confirm_after=2.0)
    carbon = FakeCarbon(reactor)
    assert output.connected
    output.eventsReceived([event("cpu", 1, evtime=T0), event("mem", 2.5, evtime=T0)])
    assert carbon.take() == (
        b"web1_example_com.cpu 1 1700000000\nweb1_example_com.mem 2.5 1700000000\n"
    )
    reactor.advance(5)
    assert output.sent == 0  # still in the transport's buffer
    carbon.drained()
    reactor.advance(1.9)
    assert output.sent == 0
    reactor.advance(0.2)
    assert output.sent == 2 and output.buffer.depth == 0


def test_a_connection_lost_before_confirmation_sends_the_batch_again() -> None:
    output, reactor = clocked(confirm_after=1.0, reconnect_initial=0.5)
    first = FakeCarbon(reactor)
    output.eventsReceived([event(str(i), i, evtime=T0) for i in range(3)])
    sent = first.take()
    first.drained()
    reactor.advance(0.5)
    first.drop()
    assert not output.connected and output.buffer.depth == 3
    reactor.advance(1.0)  # the reconnection's backoff
    second = FakeCarbon(reactor)
    assert second.take() == sent
    second.drained()
    reactor.advance(1.0)
    assert output.sent == 3 and output.reconnects == 1


def test_bytes_that_never_leave_drop_the_connection() -> None:
    output, reactor = clocked(write_timeout=5.0)
    carbon = FakeCarbon(reactor)
    output.eventsReceived([event()])
    reactor.advance(5.0)
    assert carbon.transport.disconnecting
    carbon.drop()
    assert output.buffer.depth == 1 and output.sent == 0


def test_events_carbon_cannot_carry_are_counted_and_the_rest_sent() -> None:
    output, reactor = clocked(confirm_after=0)
    carbon = FakeCarbon(reactor)
    events = [event("a", 1, evtime=T0), event("b", None), event("c", float("nan")), event("d", 4)]
    output.eventsReceived(events)
    data = carbon.take()
    assert [line.split()[0] for line in data.splitlines()] == [
        b"web1_example_com.a",
        b"web1_example_com.d",
    ]
    carbon.drained()
    reactor.advance(0)
    assert output.sent == 2 and output.eventsRejected == 2
    assert output.buffer.drops["rejected"] == 2


def test_pickle_protocol_on_port_2004() -> None:
    output, reactor = clocked(protocol="pickle", prefix="duct")
    assert reactor.tcpClients[-1][1] == 2004
    carbon = FakeCarbon(reactor)
    output.eventsReceived([event("cpu", 7, evtime=T0)])
    data = carbon.take()
    assert pickle.loads(data[4:]) == [("duct.web1_example_com.cpu", (int(T0), 7))]


# -- a real carbon-cache --------------------------------------------------------------


def realOutput(reactor: Any, carbon: Carbon, protocol: str, **config: Any) -> Graphite:
    config = {
        "server": "127.0.0.1",
        "port": carbon.port(protocol),
        "protocol": protocol,
        "flush_interval": 0.01,
        "confirm_after": 0.05,
        "reconnect_initial": 0.05,
        "reconnect_max": 0.3,
        **config,
    }
    return Graphite(configure(Graphite, config), FakeDuct(clock=reactor, reactor=reactor))


def series(prefix: str, count: int, start: float, paths: int = 4) -> list[Event]:
    """``count`` events over ``paths`` series, one a second in each, metric = index."""
    return [
        Event("ok", f"s{i % paths}", None, float(i), 60, hostname="h", evtime=start + i // paths)
        for i in range(count)
    ]


def stored(carbon: Carbon, prefix: str, paths: int, since: float) -> dict[str, dict[int, float]]:
    return {f"s{n}": carbon.points(f"{prefix}.h.s{n}", since) for n in range(paths)}


def expected(events: list[Event]) -> dict[str, dict[int, float]]:
    result: dict[str, dict[int, float]] = {}
    for e in events:
        result.setdefault(e.service, {})[int(e.time)] = e.metric
    return result


async def stop(output: Graphite) -> None:
    await output.stop()


@pytest.mark.parametrize("protocol", ["plaintext", "pickle"])
@pytest_twisted.ensureDeferred
async def test_carbon_stores_what_was_sent(reactor: Any, carbon: Carbon, protocol: str) -> None:
    prefix = f"deliver_{protocol}"
    output = realOutput(reactor, carbon, protocol, prefix=prefix, batch_size=100)
    output.createClient()
    start = time.time() - 600
    events = series(prefix, 400, start)
    try:
        output.eventsReceived(events)
        await testing.waitFor(reactor, lambda: output.sent == 400, "the events sent", 20)
        want = expected(events)
        await testing.waitFor(
            reactor, lambda: stored(carbon, prefix, 4, start) == want, "carbon's files", 30
        )
    finally:
        await stop(output)


@pytest_twisted.ensureDeferred
async def test_nothing_lost_when_carbon_restarts(reactor: Any, carbon: Carbon) -> None:
    prefix = "restart"
    output = realOutput(reactor, carbon, "plaintext", prefix=prefix, batch_size=50)
    output.createClient()
    start = time.time() - 3600
    events = series(prefix, 1200, start)
    try:
        await testing.waitFor(reactor, lambda: output.connected, "the connection")
        output.eventsReceived(events[:400])
        await testing.waitFor(reactor, lambda: output.sent == 400, "the first events sent")
        # carbon-cache does not write out its cache when stopped: what it
        # holds then is lost whatever the sender does, so wait for the files.
        first = expected(events[:400])
        await testing.waitFor(
            reactor, lambda: stored(carbon, prefix, 4, start) == first, "the first in files", 30
        )
        carbon.stop()
        await testing.waitFor(reactor, lambda: not output.connected, "the connection lost")
        output.eventsReceived(events[400:])
        assert output.sent == 400 and output.buffer.depth == 800
        carbon.start()
        await testing.waitFor(reactor, lambda: output.sent >= 1200, "the rest sent", 30)
        want = expected(events)
        try:
            await testing.waitFor(
                reactor, lambda: stored(carbon, prefix, 4, start) == want, "carbon's files", 30
            )
        except AssertionError:
            got = stored(carbon, prefix, 4, start)
            missing = {k: sorted(set(want[k]) - set(got[k])) for k in want}
            raise AssertionError(f"missing from carbon: {missing}") from None
        assert output.reconnects >= 1 and output.buffer.depth == 0
    finally:
        if carbon.process is None:
            carbon.start()
        await stop(output)


@pytest_twisted.ensureDeferred
async def test_carbon_gets_the_events_it_can_store(reactor: Any, carbon: Carbon) -> None:
    prefix = "rejects"
    output = realOutput(reactor, carbon, "pickle", prefix=prefix)
    output.createClient()
    start = time.time() - 300
    good = series(prefix, 40, start)
    bad = [
        Event("ok", "s0", None, None, 60, hostname="h", evtime=start),
        Event("ok", "s1", None, float("nan"), 60, hostname="h", evtime=start),
    ]
    try:
        output.eventsReceived(good[:20] + bad + good[20:])
        await testing.waitFor(reactor, lambda: output.sent == 40, "the good events sent")
        assert output.eventsRejected == 2 and output.buffer.drops["rejected"] == 2
        want = expected(good)
        await testing.waitFor(
            reactor, lambda: stored(carbon, prefix, 4, start) == want, "carbon's files", 30
        )
    finally:
        await stop(output)
