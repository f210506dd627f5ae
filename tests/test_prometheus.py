"""A real Prometheus server scrapes duct's /metrics, with the bearer token."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from localservers import freePort
from test_e2e import spawn
from test_web import Agent
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from duct import testing

DEADLINE = 60.0  # seconds Prometheus may take to start and scrape


def prometheusConfig(path: Path, target: str, token: str) -> Path:
    config = path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: duct
    authorization: {{credentials: {token}}}
    static_configs: [{{targets: ["{target}"]}}]
  - job_name: wrong-token
    authorization: {{credentials: not-{token}}}
    static_configs: [{{targets: ["{target}"]}}]
"""
    )
    return config


class Prometheus:
    """Queries a Prometheus server's HTTP API."""

    def __init__(self, reactor: Any, port: int) -> None:
        self.reactor = reactor
        self.url = f"http://127.0.0.1:{port}/api/v1/query"
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def query(self, expression: str) -> list[dict[str, Any]] | None:
        """The result vector of ``expression``, or None while the server does not answer."""
        try:
            response = await treq.get(self.url, params={"query": expression}, pool=self.pool)
            body = await response.json()
        except Exception:  # not listening yet, or starting up
            return None
        if body.get("status") != "success":
            return None
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def waitFor(self, expression: str, expected: float) -> None:
        """Poll until ``expression`` has one sample equal to ``expected`` (bounded)."""
        last: list[Any] = [None]

        async def matches() -> bool:
            last[0] = answer = await self.query(expression)
            return bool(answer and len(answer) == 1 and float(answer[0]["value"][1]) == expected)

        try:
            await testing.waitFor(self.reactor, matches, expression, DEADLINE, interval=0.25)
        except AssertionError:
            wanted = f"{expression}: wanted {expected}"
            raise AssertionError(f"{wanted}, last answer {last[0]}") from None


@pytest_twisted.ensureDeferred
async def test_prometheus_scrapes_duct_metrics(reactor: Any, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is required (apt-get install prometheus)"
    outputs = [
        {"output": "duct.testing.RecordingOutput", "name": "out", "maxsize": 2,
         "overflow": "drop_newest"},
    ]  # fmt: skip
    agent = Agent(
        reactor,
        {
            "web": {"listen": "tcp:0:interface=127.0.0.1", "token": "tok3n"},
            "sources": [{"source": "test_web.Ticking", "service": "tick", "interval": 1.0}],
            "outputs": outputs,
        },
    )
    out = agent.service.outputs["out"]
    out.failing = True
    agent.start()
    for _ in range(5):  # polls at 0..5: two events kept, four dropped
        agent.clock.advance(1)
    assert out.buffer.drops["overflow"] == 4

    port = freePort()
    target = agent.url.removeprefix("http://")
    argv = [
        binary,
        f"--config.file={prometheusConfig(tmp_path, target, 'tok3n')}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    proto, transport = spawn(reactor, argv)
    prometheus = Prometheus(reactor, port)
    try:
        dropped = 'duct_output_events_dropped_total{output="out",reason="overflow"}'
        await prometheus.waitFor(dropped, 4)
        await prometheus.waitFor('up{job="duct"}', 1)
        await prometheus.waitFor('duct_output_buffer_events{output="out"}', 2)
        await prometheus.waitFor('duct_source_polls_total{source="tick"}', 6)
        # A scrape without the right token is refused: Prometheus sees the target down.
        await prometheus.waitFor('up{job="wrong-token"}', 0)
        # Later scrapes see the counters move on.
        for _ in range(3):
            agent.clock.advance(1)
        await prometheus.waitFor(dropped, 7)
        await prometheus.waitFor('duct_source_polls_total{source="tick"}', 9)
    except AssertionError as e:
        log = proto.output.decode(errors="replace")[-3000:]
        raise AssertionError(f"{e}\nprometheus said:\n{log}") from None
    finally:
        if not proto.ended.called:
            transport.signalProcess("TERM")
        waited = 0.0
        while not proto.ended.called and waited < 20:
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1
        if not proto.ended.called:
            transport.signalProcess("KILL")
            await proto.ended
        await prometheus.pool.closeCachedConnections()
        await agent.stop()
