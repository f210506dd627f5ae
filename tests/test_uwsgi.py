"""duct.sources.python.uwsgi.Emperor: against a real uWSGI Emperor, and servers that misbehave."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from localservers import freePort
from silentserver import listenSilently
from twisted.internet.protocol import Factory, Protocol
from uwsgiserver import EmperorServer

from duct.sources.python.uwsgi import Emperor, StatsError, vassalsOf
from duct.testing import FakeDuct, SourceHarness, recordingService, waitFor


def emperor(reactor: Any, port: int, timeout: float = 10) -> SourceHarness:
    config = {"service": "uwsgi", "host": "127.0.0.1", "port": port, "timeout": timeout}
    return SourceHarness(Emperor, config, duct=FakeDuct(reactor=reactor))


class Writes(Protocol):
    """Writes ``self.factory.reply`` and closes, as the stats server does."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.factory.reply)  # type: ignore[attr-defined]
        transport.loseConnection()


def answering(reactor: Any, reply: bytes) -> Any:
    factory = Factory.forProtocol(Writes)
    factory.reply = reply  # type: ignore[attr-defined]
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


def byService(events: list) -> dict[str, Any]:
    return {e.service: e for e in events}


@pytest_twisted.ensureDeferred
async def test_the_vassals_of_a_real_emperor(reactor: Any, uwsgi_emperor: EmperorServer) -> None:
    events = byService(await emperor(reactor, uwsgi_emperor.statsPort).poll())
    assert events["uwsgi.state"].state == "ok"
    assert events["uwsgi.state"].metric == 1
    assert events["uwsgi.app.ini.accepting"].metric == 1
    assert events["uwsgi.app.ini.respawns"].metric == 0
    totals = [events[f"uwsgi.total.{name}"].metric for name in ("active", "accepting", "respawns")]
    assert totals == [1, 1, 0]
    assert {e.state for e in events.values()} == {"ok"}


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_emperor_on_its_timer(
    reactor: Any, uwsgi_emperor: EmperorServer
) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.python.uwsgi.Emperor", "service": "emperor",
                     "interval": 0.2, "host": "127.0.0.1", "port": uwsgi_emperor.statsPort}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def states() -> list[Any]:
        return [e for e in output.written if e.service == "emperor.state"]

    service.startService()
    try:
        await waitFor(reactor, lambda: len(states()) >= 2, "two polls", timeout=30)
    finally:
        await service.stopService()
    assert {e.state for e in states()} == {"ok"}
    assert service.sources[0].errors == 0, uwsgi_emperor.log()


@pytest_twisted.ensureDeferred
async def test_a_closed_port_is_critical(reactor: Any) -> None:
    port = freePort()
    [state] = await emperor(reactor, port).poll()
    assert (state.service, state.state, state.metric) == ("uwsgi.state", "critical", 0)
    assert f"127.0.0.1:{port}" in state.description
    assert "refused" in state.description.lower()


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"<html>not stats</html>", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"vassals": "none"}', "no list of vassals"),
        (b"[1, 2]", "no list of vassals"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_stats_that_are_not_an_emperors_are_critical(
    reactor: Any, reply: bytes, says: str
) -> None:
    port = answering(reactor, reply)
    try:
        [state] = await emperor(reactor, port.getHost().port).poll()
    finally:
        await port.stopListening()
    assert (state.service, state.state) == ("uwsgi.state", "critical")
    assert says in state.description


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_answers_is_critical_after_the_timeout(reactor: Any) -> None:
    port = listenSilently(reactor)
    try:
        [state] = await emperor(reactor, port.getHost().port, timeout=0.3).poll()
    finally:
        await port.stopListening()
    assert (state.service, state.state) == ("uwsgi.state", "critical")
    assert state.description.endswith(": stats: no answer in 0.3s")


def test_an_emperor_without_vassals_and_odd_fields() -> None:
    assert vassalsOf(b'{"vassals": []}') == []
    with pytest.raises(StatsError):
        vassalsOf(b'{"vassals": [1]}')
    harness = SourceHarness(Emperor, {"service": "uwsgi"})
    assert harness.source.config["port"] == 6001
    assert harness.source.config["host"] == "localhost"
