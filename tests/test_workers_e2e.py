"""``workers: N`` end to end: a real twistd parent, its worker processes, a Riemann sink.

The parent binds the relay's port and its workers share it; each worker
relays to the sink through outputs of its own.  Clients and the sink run
in this process on the real reactor, and every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest_twisted
from agents import (
    Agent,
    Agents,
    Client,
    Sink,
    closeClient,
    connectClient,
    freePort,
    getJSON,
    makeMsg,
    waitFor,
)
from test_riemann_source import selfSigned
from twisted.internet import ssl
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.protocol import Protocol

from duct.testing import pause

EVENTS_PER_MSG = 10


def workersConfig(tmp: Path, listen: int, sink: int, web: int, buffer: str) -> Path:
    config = tmp / "duct.yml"
    config.write_text(
        f"""
workers: 2
state_dir: {tmp / "state"}
shutdown_timeout: 10
web: {{listen: "tcp:{web}:interface=127.0.0.1"}}
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: sink
    server: 127.0.0.1
    port: {sink}
    batch_size: 100
    reconnect_initial: 0.1
    reconnect_max: 1.0
    buffer: {buffer}
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listen}:interface=127.0.0.1"
"""
    )
    return config


async def startWorkers(reactor: Any, agents: Agents) -> Agent:
    agent = agents.start()
    await waitFor(
        reactor,
        lambda: (
            (
                "worker 1 (pid" in agent.log
                and "worker 2 (pid" in agent.log
                and agent.log.count("serving; its statistics") >= 2
            )
            or not agent.running
        ),
        "both workers to serve",
    )
    assert agent.running, agent.log
    return agent


async def relay(reactor: Any, listen: int, prefix: str, clients: int, msgs: int) -> list[Client]:
    """``clients`` clients, each sending ``msgs`` Msgs; returns once every Msg is acked."""
    sent = [Client(f"{prefix}{i}", msgs, window=4, batch=EVENTS_PER_MSG) for i in range(clients)]
    for client in sent:
        await connectClient(reactor, listen, client)
    await waitFor(reactor, lambda: all(c.done.called for c in sent), f"acks for {prefix}")
    for client in sent:
        await closeClient(reactor, client)
    return sent


@pytest_twisted.ensureDeferred
async def test_two_workers_relay_every_event_and_stats_add_up(reactor: Any, tmp_path: Path) -> None:
    listen, sinkPort, web = freePort(), freePort(), freePort()
    config = workersConfig(tmp_path, listen, sinkPort, web, "{type: memory}")
    sink = Sink(reactor, sinkPort)
    sink.start()
    agents = Agents(reactor, config)
    try:
        agent = await startWorkers(reactor, agents)
        clients = await relay(reactor, listen, "w", 8, 40)
        expected = set().union(*(c.services(c.msgs) for c in clients))
        await waitFor(reactor, lambda: expected <= set(sink.counts), "every event at the sink")

        def settled(stats: dict[str, Any]) -> bool:
            return stats["outputs"].get("sink", {}).get("events_sent", 0) >= len(expected)

        stats = await getJSON(reactor, web, "/stats")
        for _ in range(100):
            if settled(stats):
                break
            await pause(reactor, 0.05)
            stats = await getJSON(reactor, web, "/stats")
        workers = stats["workers"]
        assert set(workers) == {"1", "2"}
        assert all(w["state"] == "running" and w["restarts"] == 0 for w in workers.values())
        snaps = [w["stats"] for w in workers.values()]
        for key in ("emitted", "messages", "connections"):
            each = [s["sources"]["relay"][key] for s in snaps]
            assert stats["sources"]["relay"][key] == sum(each)
        assert stats["sources"]["relay"]["emitted"] == len(expected)
        each = [s["totals"]["outputs"]["events_sent"] for s in snaps]
        assert stats["totals"]["outputs"]["events_sent"] == sum(each) == len(expected)
        assert stats["process"]["processes"] == 3  # the parent and two workers

        metrics = await metricsText(reactor, web)
        assert 'worker="1"' in metrics and 'worker="2"' in metrics and 'worker="parent"' in metrics

        # Four clients at once: the parent hands two to each worker, and hears them close.
        idle = [
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", listen), Protocol())
            for _ in range(4)
        ]

        async def spread() -> list[int]:
            workers = (await getJSON(reactor, web, "/stats"))["workers"]
            return sorted(w["connections"] for w in workers.values())

        await waitFor(reactor, lambda: _equals(spread(), [2, 2]), "two connections per worker")
        for protocol in idle:
            protocol.transport.loseConnection()  # type: ignore[union-attr]
        await waitFor(reactor, lambda: _equals(spread(), [0, 0]), "the closes told to the parent")

        agent.transport.signalProcess("HUP")  # type: ignore[union-attr]
        await waitFor(
            reactor,
            lambda: agent.log.count("SIGHUP: reopening files") >= 3,
            "the parent and both workers to reload",
        )
        clients = await relay(reactor, listen, "reloaded", 4, 10)  # still relaying
        expected |= set().union(*(c.services(c.msgs) for c in clients))
        await waitFor(reactor, lambda: expected <= set(sink.counts), "the events after reload")

        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert agent.log.count("duct stopped; 0 events undelivered") >= 2
        assert "Traceback" not in agent.log
    finally:
        await agents.cleanup()
        await sink.stop()


async def postJSON(reactor: Any, port: int, path: str, body: bytes) -> int:
    from treq.client import HTTPClient
    from twisted.web.client import Agent as WebAgent
    from twisted.web.client import HTTPConnectionPool

    client = HTTPClient(WebAgent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    url = f"http://127.0.0.1:{port}{path}"
    headers = {"Content-Type": "application/json"}
    response = await client.post(url, data=body, headers=headers, timeout=10)
    await response.content()
    return int(response.code)


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def metricsText(reactor: Any, port: int) -> str:
    from treq.client import HTTPClient
    from twisted.web.client import Agent as WebAgent
    from twisted.web.client import HTTPConnectionPool

    client = HTTPClient(WebAgent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.code == 200
    return str((await response.content()).decode())


@pytest_twisted.ensureDeferred
async def test_a_killed_worker_is_restarted_and_no_acked_event_is_lost(
    reactor: Any, tmp_path: Path
) -> None:
    """SIGKILL one worker mid-stream: it is restarted, acks go on, every acked event arrives.

    The buffers are on disk with ``sync: always``: what the killed worker
    acked is in its own directory, which its replacement replays.
    """
    listen, sinkPort, web = freePort(), freePort(), freePort()
    buffer = "{type: disk, sync: always}"
    config = workersConfig(tmp_path, listen, sinkPort, web, buffer)
    sink = Sink(reactor, sinkPort)
    sink.start()
    agents = Agents(reactor, config)
    clients: list[Client] = []
    try:
        agent = await startWorkers(reactor, agents)
        stats = await getJSON(reactor, web, "/stats")
        victim = stats["workers"]["1"]["pid"]
        # Clients that keep sending, on connections spread over both workers.
        streams = [Client(f"s{i}", 100_000, window=4, batch=EVENTS_PER_MSG) for i in range(6)]
        for client in streams:
            await connectClient(reactor, listen, client)
        clients += streams
        await waitFor(reactor, lambda: all(c.acked >= 5 for c in streams), "acks before the kill")
        os.kill(victim, signal.SIGKILL)

        async def restarted() -> bool:
            info = (await getJSON(reactor, web, "/stats"))["workers"]["1"]
            return info["restarts"] == 1 and info["state"] == "running" and info["pid"] != victim

        for _ in range(600):
            if await restarted():
                break
            await pause(reactor, 0.05)
        else:
            raise AssertionError(f"worker 1 was not restarted:\n{agent.log}")
        assert "worker 1 (pid" in agent.log and "died" in agent.log
        # The clients of the surviving worker kept their connections, and their acks go on.
        survivors = [c for c in streams if c.open]
        assert survivors, "every client lost its connection"
        before = {c: c.acked for c in survivors}
        await waitFor(reactor, lambda: all(c.acked > before[c] + 5 for c in survivors), "more acks")
        # New clients are served, by either worker.
        clients += await relay(reactor, listen, "after", 6, 20)
        for client in streams:
            if client.open:
                await closeClient(reactor, client)

        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        acked = set().union(*(c.services(c.acked) for c in clients))
        missing = acked - set(sink.counts)
        assert not missing, f"{len(missing)} acked events never reached the sink"
        assert "Traceback" not in agent.log
    finally:
        await agents.cleanup()
        await sink.stop()


def listenersConfig(tmp: Path, ports: dict[str, int], key: str, cert: str) -> Path:
    """Listeners of every shared kind, in the workers, and one kept in the parent."""
    config = tmp / "duct.yml"
    config.write_text(
        f"""
workers: 2
state_dir: {tmp / "state"}
shutdown_timeout: 10
web: {{listen: "tcp:{ports["web"]}:interface=127.0.0.1"}}
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: sink
    server: 127.0.0.1
    port: {ports["sink"]}
    batch_size: 100
    reconnect_initial: 0.1
    reconnect_max: 1.0
sources:
  - service: udp
    source: duct.sources.riemann.RiemannUDP
    listen: "udp:{ports["udp"]}:interface=127.0.0.1"
  - service: tls
    source: duct.sources.riemann.RiemannTCP
    listen: "ssl:{ports["tls"]}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
  - service: unix
    source: duct.sources.riemann.RiemannTCP
    listen: "unix:{tmp / "r.sock"}"
  - service: home
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{ports["home"]}:interface=127.0.0.1"
    workers: 0
  - service: ingest
    source: duct.sources.http.Ingest
    listen: "tcp:{ports["ingest"]}:interface=127.0.0.1"
"""
    )
    return config


async def acked(reactor: Any, endpoint: Any, prefix: str, msgs: int = 5) -> Client:
    """A client that sends ``msgs`` Msgs on ``endpoint``; returns once each is acked."""
    client = Client(prefix, msgs, window=2, batch=EVENTS_PER_MSG)
    await connectProtocol(endpoint, client)
    await waitFor(reactor, lambda: client.done.called, f"acks for {prefix}")
    await closeClient(reactor, client)
    return client


@pytest_twisted.ensureDeferred
async def test_udp_tls_and_unix_listeners_in_workers_and_one_kept_in_the_parent(
    reactor: Any, tmp_path: Path
) -> None:
    ports = {name: freePort() for name in ("web", "sink", "udp", "tls", "home", "ingest")}
    key, cert, certPem = selfSigned(tmp_path)
    sock = tmp_path / "r.sock"
    assert len(str(sock)) < 100, "a UNIX socket's path must be short"
    sink = Sink(reactor, ports["sink"])
    sink.start()
    agents = Agents(reactor, listenersConfig(tmp_path, ports, key, cert))
    expected: set[str] = set()
    try:
        agent = await startWorkers(reactor, agents)
        assert "riemann listener home listening on" in agent.log

        # UDP: the parent bound the socket; the workers read its datagrams.
        datagrams = 40
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(datagrams):
                udp.sendto(makeMsg("u", i * 5, 5), ("127.0.0.1", ports["udp"]))
        expected |= {f"u.{i}" for i in range(datagrams * 5)}

        # TLS: the workers wrap the adopted socket in TLS and ack.
        trust = ssl.Certificate.loadPEM(certPem)
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        tls = SSL4ClientEndpoint(reactor, "127.0.0.1", ports["tls"], options)
        for i in range(3):
            expected |= (await acked(reactor, tls, f"t{i}")).services(5)

        # UNIX, and the listener kept in the parent.
        unix = UNIXClientEndpoint(reactor, str(sock))
        expected |= (await acked(reactor, unix, "x")).services(5)
        home = TCP4ClientEndpoint(reactor, "127.0.0.1", ports["home"])
        expected |= (await acked(reactor, home, "h")).services(5)

        # HTTP ingest: its connections are handed to the workers as the Riemann ones are.
        for i in range(4):
            body = json.dumps([{"host": "h", "service": f"i.{i}", "metric": i}]).encode()
            assert await postJSON(reactor, ports["ingest"], "/ingest", body) == 200
        expected |= {f"i.{i}" for i in range(4)}
        await waitFor(reactor, lambda: expected <= set(sink.counts), "every event at the sink")

        stats = await getJSON(reactor, ports["web"], "/stats")
        snaps = [w["stats"] for w in stats["workers"].values()]
        assert stats["sources"]["udp"]["emitted"] == datagrams * 5
        assert sum(s["sources"]["udp"]["emitted"] for s in snaps) == datagrams * 5
        assert stats["sources"]["tls"]["emitted"] == 3 * 5 * EVENTS_PER_MSG
        assert sum(s["sources"]["ingest"]["emitted"] for s in snaps) == 4
        assert all("home" not in s["sources"] for s in snaps)
        assert stats["parent"]["sources"]["home"]["emitted"] == 5 * EVENTS_PER_MSG
        assert set(stats["parent"]["sources"]) == {"home"}

        # A worker that stops on its own (its ports closed in order) is restarted,
        # and every shared socket still serves: the UNIX one keeps its file.
        os.kill(stats["workers"]["1"]["pid"], signal.SIGTERM)
        await waitFor(reactor, lambda: "died" in agent.log, "worker 1 to end")
        await waitFor(
            reactor, lambda: agent.log.count("serving; its statistics") >= 3, "the restart"
        )
        assert sock.exists()
        expected |= (await acked(reactor, unix, "x-after")).services(5)
        expected |= (await acked(reactor, tls, "t-after")).services(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(makeMsg("u-after", 0, 5), ("127.0.0.1", ports["udp"]))
        expected |= {f"u-after.{i}" for i in range(5)}
        await waitFor(reactor, lambda: expected <= set(sink.counts), "the events after restart")

        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert not sock.exists()  # removed by the parent as it stopped, as Twisted does
        assert "Traceback" not in agent.log
    finally:
        await agents.cleanup()
        await sink.stop()
