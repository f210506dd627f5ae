"""The agent as a tree of services: what starts first, what stops last, what fails the start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from duct.children import OutputsService, SourcesService
from duct.configuration import ConfigurationError
from duct.lib.ssh import SSHPool
from duct.objects import Source
from duct.pluginhost import PluginsService
from duct.service import DuctService
from duct.testing import RecordingOutput
from duct.web.server import WebServer

HERE = __name__
TCP = "duct.sources.riemann.RiemannTCP"
UDP = "duct.sources.riemann.RiemannUDP"
LOCAL = "tcp:0:interface=127.0.0.1"


class Hanging(Source):
    """Its first poll never finishes until the test says so."""

    options = ()
    pending: list[Deferred[Any]] = []

    def get(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        Hanging.pending.append(d)
        return d


class Starting(RecordingOutput):
    """Counts its starts (``createClient``)."""

    starts = 0

    def createClient(self) -> None:
        Starting.starts += 1


def recording(name: str = "out") -> dict[str, Any]:
    return {"output": f"{HERE}.Starting", "name": name, "flush_interval": 0}


def test_children_are_web_plugins_outputs_housekeeping_ssh_sources_in_that_order() -> None:
    reactor = MemoryReactorClock()
    service = DuctService({"web": {"listen": LOCAL}, "outputs": [recording()]}, reactor=reactor)
    kinds = [type(child) for child in service]
    assert kinds == [
        WebServer, PluginsService, OutputsService, TimerService, SSHPool, SourcesService,
    ]  # fmt: skip
    assert all(child.parent is service for child in service)


def test_listeners_bind_during_the_start_and_pollers_wait_for_their_stagger() -> None:
    reactor = MemoryReactorClock()
    config = {
        "stagger": 5,
        "outputs": [recording()],
        "sources": [
            {"service": "poll", "source": f"{HERE}.Hanging", "interval": 60},
            {"service": "riemann", "source": TCP, "listen": "tcp:5999:interface=127.0.0.1"},
        ],
    }
    service = DuctService(config, reactor=reactor)
    service.startService()
    # Bound before startService returned, not from a later call.
    assert [(port, iface) for port, _, _, iface in reactor.tcpServers] == [(5999, "127.0.0.1")]
    poller, listener = service.sources
    assert poller.polls == 0 and listener.port is not None and listener.down is None
    reactor.advance(0)
    assert poller.polls == 1  # the first at index 0: no stagger


def test_privileged_start_binds_once() -> None:
    reactor = MemoryReactorClock()
    config = {"web": {"listen": "tcp:5998"}, "sources": [{"service": "r", "source": TCP}]}
    service = DuctService(config, reactor=reactor)
    service.privilegedStartService()  # what twistd does before dropping privileges
    service.startService()
    assert sorted(port for port, *_ in reactor.tcpServers) == [5555, 5998]


def test_the_stop_goes_inside_out_each_layer_once_the_inner_one_is_done() -> None:
    clock = Clock()
    reactor = MemoryReactorClock()
    Hanging.pending = []
    config = {
        "stagger": 0,
        "shutdown_timeout": 10,
        "web": {"listen": LOCAL},
        "outputs": [recording()],
        "sources": [{"service": "hung", "source": f"{HERE}.Hanging", "interval": 60}],
    }
    service = DuctService(config, reactor=reactor, clock=clock)
    service.startService()
    clock.advance(0)
    web, plugins, outputs, _, _, sources = list(service)
    stopped: list[None] = []
    service.stopService().addCallback(stopped.append)
    # The source's poll is in flight: the outputs and the web server wait for it.
    assert not sources.running and outputs.running and web.running
    output = service.outputs["out"]
    assert isinstance(output, RecordingOutput)
    Hanging.pending[0].callback([service.sources[0].createEvent("ok", None, 7.0)])
    clock.advance(0)
    assert [e.metric for e in output.written] == [7.0]  # the last poll was delivered
    assert stopped == [None] and not outputs.running and not plugins.running and not web.running


@pytest_twisted.ensureDeferred
async def test_a_listener_port_in_use_fails_the_start_naming_source_and_address(
    reactor: Any,
) -> None:
    taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
    clock = Clock()
    config = {
        "stagger": 0,
        "web": {"listen": LOCAL},
        "outputs": [recording()],
        "sources": [
            {"service": "poll", "source": f"{HERE}.Hanging", "interval": 60},
            {"service": "riemann", "source": TCP, "listen": busy},
        ],
    }
    service = DuctService(config, reactor=reactor, clock=clock)
    Starting.starts = 0
    try:
        with pytest.raises(ConfigurationError) as raised:
            service.startService()
    finally:
        await taken.stopListening()
    text = str(raised.value)
    assert text.startswith(
        f"<config>: sources[1] (service: riemann): listen: cannot listen on {busy}: "
    )
    assert "in use" in text
    clock.advance(5)
    assert service.sources[0].polls == 0  # nothing else started
    assert service.web is not None and service.web.port is None  # its port was released
    assert Starting.starts == 0  # no output was started


@pytest_twisted.ensureDeferred
async def test_a_udp_port_in_use_fails_the_start_too(reactor: Any) -> None:
    from twisted.internet.protocol import DatagramProtocol

    taken = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    number = taken.getHost().port
    config = {"sources": [{"service": "u", "source": UDP, "port": number}]}
    service = DuctService(config, reactor=reactor, clock=Clock())
    try:
        with pytest.raises(ConfigurationError) as raised:
            service.startService()
    finally:
        await taken.stopListening()
    assert f"port: cannot listen on udp:{number}:interface=127.0.0.1: " in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_twistd_exits_1_when_a_riemann_port_is_in_use(reactor: Any, tmp_path: Path) -> None:
    from test_e2e import BIN, spawn

    taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
    config = tmp_path / "duct.yml"
    config.write_text(
        "outputs:\n  - output: duct.outputs.null.Null\n"
        f'sources:\n  - {{service: relay, source: {TCP}, listen: "{busy}"}}\n'
    )
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "--config", str(config)]
    try:
        proto, _ = spawn(reactor, argv)
        code = await proto.ended
    finally:
        await taken.stopListening()
    output = proto.output.decode()
    assert code == 1, output
    assert f"{config}: sources[0] (service: relay): listen: cannot listen on {busy}: " in output
    assert "in use" in output and "Traceback" not in output
