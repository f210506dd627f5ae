"""The web server over real HTTP: every route, its status codes, the token, plugin routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent
from twisted.web.client import HTTPConnectionPool
from twisted.web.static import Data

from duct.configuration import ConfigurationError
from duct.objects import Event, Source
from duct.options import Option
from duct.service import DuctService
from duct.testing import RecordingOutput

HERE = __name__
LOCAL = "tcp:0:interface=127.0.0.1"


class Ticking(Source):
    options = ()

    def get(self) -> Event:
        return self.createEvent("ok", None, float(self.polls))


class ApiSource(Ticking):
    """Serves ``/<segment>`` (JSON) and ``/<segment>/thing``."""

    options = (Option("segment", "string", "api", "path segment to claim"),)

    def webRoutes(self) -> dict[str, Any]:
        api = Data(b'{"api": true}', "application/json")
        api.putChild(b"thing", Data(b"a thing", "text/plain"))
        return {self.config["segment"]: api}


class Dashboard(RecordingOutput):
    def webRoutes(self) -> dict[str, Any]:
        home = Data(b"<h1>dashboard</h1>", "text/html")
        home.putChild(b"app.js", Data(b"draw();", "text/javascript"))
        return {"": home}


class Switched(RecordingOutput):
    """An output with a connection the test switches by hand."""

    connected: bool | None = False


def ticking(service: str, **config: Any) -> dict[str, Any]:
    return {"source": f"{HERE}.Ticking", "service": service, "interval": 1.0, **config}


class Agent:
    """A DuctService on the real reactor, its sources and outputs on a Clock."""

    def __init__(self, reactor: Any, config: dict[str, Any]) -> None:
        self.reactor = reactor
        self.clock = Clock()
        settings = {"stagger": 0, "shutdown_timeout": 1, "hostname": "web.example", **config}
        settings.setdefault("web", {"listen": LOCAL})
        self.service = DuctService(settings, reactor=reactor, clock=self.clock)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def start(self) -> None:
        self.service.startService()
        self.clock.advance(0)

    @property
    def url(self) -> str:
        assert self.service.web is not None and self.service.web.port is not None
        return f"http://127.0.0.1:{self.service.web.port.getHost().port}"

    async def get(self, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        method = kwargs.pop("method", "GET")
        return await treq.request(
            method, self.url + path, headers=headers, pool=self.pool, **kwargs
        )

    async def stop(self) -> None:
        d = self.service.stopService()
        for _ in range(500):
            if d.called:
                break
            self.clock.advance(0.5)
            await deferLater(self.reactor, 0.01, lambda: None)
        await d
        await self.pool.closeCachedConnections()


@pytest_twisted.async_yield_fixture
async def agents(reactor: Any) -> AsyncIterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        if agent.service.running:
            await agent.stop()


def contentType(response: Any) -> str:
    return response.headers.getRawHeaders(b"content-type")[0].decode()


async def json(response: Any) -> Any:
    assert contentType(response) == "application/json; charset=utf-8"
    return await response.json()


# -- the built-in routes ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stats_metrics_health_and_the_index(reactor: Any, agents: list[Agent]) -> None:
    outputs = [
        {"output": "duct.testing.RecordingOutput", "name": "out", "maxsize": 2,
         "overflow": "drop_newest"},
    ]  # fmt: skip
    agent = Agent(reactor, {"sources": [ticking("a")], "outputs": outputs})
    agents.append(agent)
    out = agent.service.outputs["out"]
    out.failing = True
    agent.start()
    agent.clock.advance(1)
    agent.clock.advance(1)
    agent.clock.advance(1)  # polls at 0, 1, 2, 3: two kept, two dropped
    source = agent.service.sources[0]
    assert source.polls == 4 and out.buffer.drops["overflow"] == 2

    response = await agent.get("/stats")
    assert response.code == 200
    stats = await json(response)
    assert stats["sources"]["a"]["polls"] == source.polls
    assert stats["outputs"]["out"]["dropped"] == {"overflow": 2}
    assert stats["outputs"]["out"]["failures"] == out.failures
    assert stats["totals"]["outputs"]["dropped"] == {"overflow": 2}
    assert stats["hostname"] == "web.example"
    assert (await agent.get("/stats/")).code == 200

    response = await agent.get("/metrics")
    assert response.code == 200
    assert contentType(response) == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    dropped = families["duct_output_events_dropped"]
    assert dropped.type == "counter"
    assert [(s.name, s.labels, s.value) for s in dropped.samples] == [
        ("duct_output_events_dropped_total", {"output": "out", "reason": "overflow"}, 2.0)
    ]
    polls = families["duct_source_polls"]
    assert polls.type == "counter" and polls.samples[0].value == 4.0
    assert polls.samples[0].labels == {"source": "a"}
    assert families["duct_output_buffer_events"].type == "gauge"
    assert families["duct_output_buffer_events"].samples[0].value == 2.0
    assert families["duct_process_resident_memory_bytes"].samples[0].value > 0
    assert families["duct_process_cpu_seconds"].type == "counter"

    response = await agent.get("/health")
    assert response.code == 200
    assert (await json(response))["status"] == "ok"

    response = await agent.get("/")
    assert response.code == 200
    index = await json(response)
    assert index["routes"] == ["/", "/events", "/health", "/metrics", "/stats"]
    assert index["name"] == "duct" and index["hostname"] == "web.example"

    for path in ("/nowhere", "/stats/more", "/health/x"):
        response = await agent.get(path)
        assert response.code == 404, path
        assert "no such resource" in (await json(response))["error"]
    response = await agent.get("/stats", method="POST")
    assert response.code == 405
    assert response.headers.getRawHeaders(b"allow") == [b"GET, HEAD"]
    assert "POST" in (await json(response))["error"]
    response = await agent.get("/health", method="HEAD")
    assert response.code == 200 and await response.content() == b""


@pytest_twisted.ensureDeferred
async def test_health_turns_503_when_a_disconnected_output_backs_up(
    reactor: Any, agents: list[Agent]
) -> None:
    outputs = [
        {"output": f"{HERE}.Switched", "name": "sw", "maxsize": 10, "flush_interval": 60},
        {"output": "duct.testing.RecordingOutput", "name": "file", "maxsize": 1},
    ]
    agent = Agent(reactor, {"outputs": outputs})
    agents.append(agent)
    agent.start()
    switched, plain = agent.service.outputs["sw"], agent.service.outputs["file"]
    plain.failing = True
    plain.eventsReceived([Event("ok", "x", None, 1.0, 60.0)])  # full, but has no connection
    switched.eventsReceived([Event("ok", str(i), None, 1.0, 60.0) for i in range(7)])

    response = await agent.get("/health")  # disconnected, but 70% full
    body = await json(response)
    assert response.code == 200, body
    assert body["outputs"]["sw"]["connected"] is False
    assert body["outputs"]["file"]["connected"] is None

    switched.eventsReceived([Event("ok", "8", None, 1.0, 60.0)])  # 80%: the high-water mark
    response = await agent.get("/health")
    body = await json(response)
    assert response.code == 503
    assert body["status"] == "unhealthy"
    assert body["reasons"] == [
        f"output sw: not connected, and its buffer is 80% full (8 of 10 events, "
        f"{switched.buffer.nbytes} of {switched.buffer.max_bytes} bytes)"
    ]

    switched.connected = True  # connected: a backlog alone is not unhealthy
    assert (await agent.get("/health")).code == 200


@pytest_twisted.ensureDeferred
async def test_health_names_a_listener_that_is_not_listening(
    reactor: Any, agents: list[Agent]
) -> None:
    sources = [
        {"service": "relay", "source": "duct.sources.riemann.RiemannTCP", "listen": LOCAL},
        {"service": "dgram", "source": "duct.sources.riemann.RiemannUDP", "port": 0},
    ]
    agent = Agent(reactor, {"sources": sources})
    agents.append(agent)
    agent.start()
    relay, dgram = agent.service.sources

    response = await agent.get("/health")
    body = await json(response)
    assert response.code == 200, body
    assert body["listeners"] == [
        {"source": "relay", "address": LOCAL, "listening": True},
        {"source": "dgram", "address": "udp:0:interface=127.0.0.1", "listening": True},
    ]

    await relay.stopTimer()  # its port is closed: it receives nothing now
    response = await agent.get("/health")
    body = await json(response)
    assert response.code == 503
    assert body["reasons"] == [f"source relay: not listening on {LOCAL}"]
    assert body["listeners"][0] == {
        "source": "relay",
        "address": LOCAL,
        "listening": False,
        "down": f"not listening on {LOCAL}",
    }
    assert body["listeners"][1]["listening"] is True


@pytest_twisted.ensureDeferred
async def test_health_counts_bytes_too_and_a_real_riemann_output_that_cannot_connect(
    reactor: Any, agents: list[Agent]
) -> None:
    closed = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    port = closed.getHost().port
    await closed.stopListening()  # nothing listens there now
    outputs = [
        {"output": "duct.outputs.riemann.RiemannTCP", "name": "riemann", "server": "127.0.0.1",
         "port": port, "max_bytes": 1000},
    ]  # fmt: skip
    agent = Agent(reactor, {"outputs": outputs})
    agents.append(agent)
    agent.start()
    riemann = agent.service.outputs["riemann"]
    riemann.eventsReceived([Event("ok", "x" * 200, None, 1.0, 60.0) for _ in range(4)])
    assert riemann.connected is False and riemann.buffer.nbytes >= 800
    response = await agent.get("/health")
    body = await json(response)
    assert response.code == 503
    assert body["reasons"][0].startswith("output riemann: not connected")
    stats = await json(await agent.get("/stats"))
    assert stats["outputs"]["riemann"]["connected"] is False


# -- the token ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_token_guards_every_route_but_health(reactor: Any, agents: list[Agent]) -> None:
    config = {
        "web": {"listen": LOCAL, "token": "s3cret"},
        "sources": [{"source": f"{HERE}.ApiSource", "service": "api"}],
    }
    agent = Agent(reactor, config)
    agents.append(agent)
    agent.start()
    for path in ("/stats", "/metrics", "/", "/api", "/api/thing", "/nowhere"):
        response = await agent.get(path)
        assert response.code == 401, path
        assert response.headers.getRawHeaders(b"www-authenticate") == [b'Bearer realm="duct"']
        assert (await json(response)) == {"error": "this route requires a bearer token"}
        response = await agent.get(path, token="s3cre")
        assert response.code == 401, path
        assert (await json(response)) == {"error": "wrong bearer token"}
    for header in ("Basic s3cret", "s3cret", "Bearer", "Bearer s3cret2"):
        response = await agent.get("/stats", headers={"Authorization": header})
        assert response.code == 401, header
    assert (await agent.get("/stats", token="s3cret")).code == 200
    response = await agent.get("/stats", headers={"Authorization": "bearer  s3cret "})
    assert response.code == 200
    assert (await agent.get("/metrics", token="s3cret")).code == 200
    assert (await agent.get("/api/thing", token="s3cret")).code == 200
    assert (await agent.get("/nowhere", token="s3cret")).code == 404
    assert (await agent.get("/health")).code == 200
    # Where no header can be sent (a browser's page load, EventSource), the query.
    assert (await agent.get("/stats?access_token=s3cret")).code == 200
    response = await agent.get("/stats?access_token=s3cre")
    assert response.code == 401
    assert (await json(response)) == {"error": "wrong bearer token"}
    # A header, when sent, is what counts.
    response = await agent.get("/stats?access_token=s3cret", headers={"Authorization": "Bearer x"})
    assert response.code == 401


@pytest_twisted.ensureDeferred
async def test_a_reload_applies_a_new_token_and_new_plugin_routes(
    reactor: Any, agents: list[Agent]
) -> None:
    config: dict[str, Any] = {"web": {"listen": LOCAL, "token": "old"}, "stagger": 0}
    agent = Agent(reactor, config)
    agents.append(agent)
    agent.start()
    assert (await agent.get("/api", token="old")).code == 404
    listening = agent.url
    new = {
        **config,
        "hostname": "web.example",
        "shutdown_timeout": 1,
        "web": {"listen": LOCAL, "token": "new"},
        "sources": [{"source": f"{HERE}.ApiSource", "service": "api"}],
    }
    await agent.service.reload(new)
    assert agent.url == listening
    assert (await agent.get("/stats", token="old")).code == 401
    assert (await agent.get("/stats", token="new")).code == 200
    assert (await agent.get("/api", token="new")).code == 200


@pytest_twisted.ensureDeferred
async def test_a_reload_that_brings_a_clashing_route_logs_it_and_keeps_the_first(
    reactor: Any, agents: list[Agent], observe_errors: Any
) -> None:
    first = {"source": f"{HERE}.ApiSource", "service": "one"}
    agent = Agent(reactor, {"sources": [first]})
    agents.append(agent)
    agent.start()
    clash = {"source": f"{HERE}.ApiSource", "service": "two", "segment": "stats"}
    new = {"stagger": 0, "web": {"listen": LOCAL}, "sources": [first, clash]}
    new.update(hostname="web.example", shutdown_timeout=1)
    await agent.service.reload(new)
    (error,) = observe_errors.take()
    assert "sources[1] (service: two): web route /stats is duct's own" in formatEvent(error)
    assert (await agent.get("/api")).code == 200
    assert "sources" in await json(await agent.get("/stats"))


# -- routes from plugins ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_plugins_mount_routes_and_may_serve_the_root(
    reactor: Any, agents: list[Agent]
) -> None:
    config = {
        "sources": [{"source": f"{HERE}.ApiSource", "service": "api"}],
        "outputs": [{"output": f"{HERE}.Dashboard", "name": "store"}],
    }
    agent = Agent(reactor, config)
    agents.append(agent)
    agent.start()
    response = await agent.get("/")
    assert response.code == 200 and await response.text() == "<h1>dashboard</h1>"
    response = await agent.get("/api")
    assert response.code == 200 and await response.json() == {"api": True}
    response = await agent.get("/api/thing")
    assert response.code == 200 and await response.text() == "a thing"
    # What no route claims goes to the plugin serving "/": its own files, its own 404.
    response = await agent.get("/app.js")
    assert response.code == 200 and await response.text() == "draw();"
    assert (await agent.get("/missing.js")).code == 404
    assert "sources" in await json(await agent.get("/stats"))


@pytest_twisted.ensureDeferred
async def test_without_a_root_route_the_index_lists_plugin_routes(
    reactor: Any, agents: list[Agent]
) -> None:
    config = {"sources": [{"source": f"{HERE}.ApiSource", "service": "api", "segment": "v1"}]}
    agent = Agent(reactor, config)
    agents.append(agent)
    agent.start()
    index = await json(await agent.get("/"))
    assert index["routes"] == ["/", "/events", "/health", "/metrics", "/stats", "/v1"]


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        (("api", "api"), "web route /api is already served by sources[0] (service: one)"),
        (("stats",), "web route /stats is duct's own"),
        (("events",), "web route /events is duct's own"),
        (("a/b",), "web route 'a/b' is not a single path segment"),
    ],
)
def test_clashing_plugin_routes_are_configuration_errors(
    segments: tuple[str, ...], message: str
) -> None:
    names = ["one", "two"]
    sources = [
        {"source": f"{HERE}.ApiSource", "service": names[i], "segment": segment}
        for i, segment in enumerate(segments)
    ]
    config = {"web": {"listen": LOCAL}, "sources": sources}
    with pytest.raises(ConfigurationError) as raised:
        DuctService(config, reactor=MemoryReactorClock())
    (problem,) = raised.value.problems
    label = f"sources[{len(segments) - 1}] (service: {names[len(segments) - 1]})"
    assert str(problem).startswith(f"<config>: {label}: {message}")


# -- starting and stopping --------------------------------------------------------------


def test_no_web_key_opens_no_port_and_the_default_listens_on_localhost_8901() -> None:
    reactor = MemoryReactorClock()
    service = DuctService({"sources": [ticking("a")]}, reactor=reactor)
    service.startService()
    assert service.web is None and reactor.tcpServers == []

    reactor = MemoryReactorClock()
    service = DuctService({"web": {}}, reactor=reactor)
    service.startService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (8901, "127.0.0.1")
    ]


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_stops_the_start_naming_the_address(reactor: Any) -> None:
    taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    port = taken.getHost().port
    clock = Clock()
    try:
        config = {
            "web": {"listen": f"tcp:{port}:interface=127.0.0.1"},
            "stagger": 0,
            "sources": [ticking("a")],
        }
        service = DuctService(config, reactor=reactor, clock=clock)
        with pytest.raises(ConfigurationError) as raised:
            service.startService()
        text = str(raised.value)
        assert text.startswith(f"<config>: web: listen: cannot listen on tcp:{port}:")
        assert f"127.0.0.1:{port}" in text and "in use" in text
        clock.advance(5)
        assert service.sources[0].polls == 0  # nothing else started
    finally:
        await taken.stopListening()


@pytest_twisted.ensureDeferred
async def test_twistd_with_the_web_port_in_use_exits_with_a_clear_message(
    reactor: Any, tmp_path: Any
) -> None:
    from test_e2e import BIN, spawn

    taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    port = taken.getHost().port
    config = tmp_path / "duct.yml"
    config.write_text(f'web: {{listen: "tcp:{port}:interface=127.0.0.1"}}\n')
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "--config", str(config)]
    try:
        proto, _ = spawn(reactor, argv)
        code = await proto.ended
    finally:
        await taken.stopListening()
    output = proto.output.decode()
    assert code == 1, output
    assert f"{config}: web: listen: cannot listen on tcp:{port}:interface=127.0.0.1" in output
    assert "Traceback" not in output


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_closes_the_port(reactor: Any, agents: list[Agent]) -> None:
    agent = Agent(reactor, {})
    agent.start()
    assert (await agent.get("/health")).code == 200
    url = agent.url
    await agent.stop()
    with pytest.raises(ConnectionRefusedError):
        await treq.get(url + "/health", persistent=False)


@pytest_twisted.ensureDeferred
async def test_the_site_streams_events_behind_the_token(reactor: Any, agents: list[Agent]) -> None:
    """/events is mounted on the agent's own site, and is guarded like /stats."""
    from twisted.internet.protocol import Protocol

    config = {
        "web": {"listen": LOCAL, "token": "s3cret"},
        "sources": [ticking("tick")],
        "outputs": [{"output": "duct.testing.RecordingOutput", "name": "rec"}],
    }
    agent = Agent(reactor, config)
    agents.append(agent)
    agent.start()  # the first poll: event 1
    assert (await agent.get("/events?format=jsonl&recent=1")).code == 401

    class Lines(Protocol):
        def __init__(self) -> None:
            self.text = ""

        def dataReceived(self, data: bytes) -> None:
            self.text += data.decode()

    response = await agent.get("/events?format=jsonl&recent=1&access_token=s3cret")
    assert response.code == 200
    lines = Lines()
    response.deliverBody(lines)
    agent.clock.advance(1)  # the second poll: event 2, streamed live
    deadline = reactor.seconds() + 10
    while lines.text.count('"seq"') < 2 and reactor.seconds() < deadline:
        await deferLater(reactor, 0.02, lambda: None)
    lines.transport.stopProducing()  # type: ignore[union-attr]
    events = [line for line in lines.text.splitlines() if '"seq"' in line]
    assert ['"seq":1' in events[0], '"seq":2' in events[1]] == [True, True], lines.text
    assert all('"service":"tick"' in line for line in events)
    stats = await json(await agent.get("/stats", token="s3cret"))
    assert stats["events"]["ring"]["last"] == 2 and stats["events"]["streams"] >= 1
