"""duct.sources.munin.MuninNode: on a recorded munin-node exchange, and against a real one."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest_twisted
from localservers import freePort
from muninserver import MuninServer
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport

from duct.sources.munin import MuninNode, MuninProtocol
from duct.testing import SourceHarness, recordingService, waitFor

RECORDED = Path(__file__).parent / "data" / "munin-node.txt"


def recorded() -> tuple[bytes, dict[bytes, bytes]]:
    """The greeting, and the reply to each command, as munin-node 2.0 sent them."""
    greeting, *exchanges = RECORDED.read_bytes().split(b">> ")
    replies = {}
    for exchange in exchanges:
        command, _, reply = exchange.partition(b"\n")
        replies[command] = reply
    return greeting, replies


class ReplayTransport(StringTransport):
    """Answers each command line written to it with the recorded reply, at once."""

    def __init__(self, protocol: MuninProtocol, replies: dict[bytes, bytes], served: int) -> None:
        super().__init__()
        self.protocol, self.replies, self.served = protocol, replies, served
        self.commands: list[bytes] = []

    def write(self, data: bytes) -> None:
        for line in data.splitlines():
            self.commands.append(line)
            reply = self.replies.get(line)
            if reply is not None:
                self.protocol.dataReceived(reply.replace(b"1000", str(self.served).encode()))

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))


def replaying(harness: SourceHarness, served: list[int]) -> list[ReplayTransport]:
    greeting, replies = recorded()
    transports: list[ReplayTransport] = []

    def connect(host: str, port: int, timeout: float) -> Deferred[MuninProtocol]:
        protocol = MuninProtocol()
        transport = ReplayTransport(protocol, replies, served[len(transports)])
        transports.append(transport)
        protocol.makeConnection(transport)
        protocol.dataReceived(greeting)
        return succeed(protocol)

    harness.source.connect = connect  # type: ignore[method-assign]
    return transports


def test_every_plugin_becomes_events_and_derive_fields_become_rates() -> None:
    config = {"service": "munin", "interval": 10, "host": "node", "port": 4949}
    harness = SourceHarness(MuninNode, config, pipeline=True)
    transports = replaying(harness, [1000, 1500])
    harness.start()
    load = harness.latest("munin.system.load.load")
    assert (load.metric, load.description, load.state) == (0.25, "5 minute load average", "ok")
    assert harness.latest("munin.state").metric == 1
    assert [e.service for e in harness.events if "served" in e.service] == []  # no rate yet
    harness.advance(10)
    served = harness.latest("munin.webserver.requests.served")
    assert (served.metric, served.description) == (50.0, "requests.served")  # 500 in 10 s
    assert transports[0].commands == [b"cap multigraph", b"list", b"config load", b"fetch load",
                                      b"config requests", b"fetch requests"]  # fmt: skip
    assert all(t.disconnecting for t in transports)  # each poll closes its connection
    assert harness.errors == []


def test_a_node_that_does_not_answer_is_critical_once_the_timeout_passes() -> None:
    harness = SourceHarness(MuninNode, {"service": "munin", "interval": 60, "timeout": 5})

    def connect(host: str, port: int, timeout: float) -> Deferred[MuninProtocol]:
        protocol = MuninProtocol()
        protocol.makeConnection(StringTransport())  # silent: never a reply
        return succeed(protocol)

    harness.source.connect = connect  # type: ignore[method-assign]
    harness.start()
    assert harness.events == []
    harness.advance(5)
    [state] = harness.events
    assert (state.service, state.state, state.metric) == ("munin.state", "critical", 0)
    assert state.description == "munin-node localhost:4949: no answer in 5s"
    assert harness.errors == [] and not harness.source.running


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_critical(reactor: Any) -> None:
    from duct.testing import FakeDuct

    port = freePort()
    harness = SourceHarness(MuninNode, {"service": "munin", "host": "127.0.0.1", "port": port},
                            duct=FakeDuct(reactor=reactor))  # fmt: skip
    [state] = await harness.poll()
    assert (state.service, state.state) == ("munin.state", "critical")
    assert state.description == f"munin-node 127.0.0.1:{port}: connection refused"


@pytest_twisted.ensureDeferred
async def test_duct_reads_every_plugin_of_a_real_munin_node(
    reactor: Any, munin_node: MuninServer
) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.munin.MuninNode", "service": "munin",
                     "interval": 0.5, "host": "127.0.0.1", "port": munin_node.port}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def series(name: str) -> list[Any]:
        return [e for e in output.written if e.service == f"munin.{name}"]

    munin_node.setServed(1000)
    service.startService()
    try:
        await waitFor(reactor, lambda: series("system.load.load"), "a first poll", timeout=30)
        munin_node.setServed(3000)
        rate = "webserver.requests.served"
        await waitFor(reactor, lambda: [e for e in series(rate) if e.metric], "a rate", 30)
    finally:
        await service.stopService()
    load = series("system.load.load")[-1]
    assert (load.metric, load.description, load.state) == (0.25, "5 minute load average", "ok")
    # The counter grew by 2000 between two polls: the rates times their intervals add up to it.
    polls = series("state")  # one a poll, just after the fetch of requests
    spans = [b.time - a.time for a, b in pairwise(polls)]
    grew = sum(r.metric * span for r, span in zip(series(rate), spans, strict=True))
    assert round(grew) == 2000, grew
    assert {e.state for e in series("state")} == {"ok"}
    assert service.sources[0].errors == 0, munin_node.log()
