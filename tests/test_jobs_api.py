"""/api/jobs on a running agent: submit, follow (resuming), show, cancel; and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.web.client import HTTPConnectionPool

from duct.service import DuctService
from duct.testing import waitFor

LOCAL = "tcp:0:interface=127.0.0.1"


class Lines(protocol.Protocol):
    """Collects JSON lines; drops the connection once ``stopAt`` has been seen."""

    def __init__(self, stopAt: int | None = None) -> None:
        self.items: list[dict[str, Any]] = []
        self.buffer = b""
        self.stopAt = stopAt
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.items.append(json.loads(line))
                if self.stopAt is not None and self.items[-1].get("seq") == self.stopAt:
                    transport: Any = self.transport
                    transport.stopProducing()  # the connection drops mid-stream

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)


class Agent:
    def __init__(self, reactor: Any, config: dict[str, Any], token: str | None = None) -> None:
        web = {"listen": LOCAL, **({"token": token} if token else {})}
        settings = {"stagger": 0, "shutdown_timeout": 1, "web": web, **config}
        self.service = DuctService(settings, reactor=reactor)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.web.port.getHost().port}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return treq.request(method, self.url + path, headers=headers, pool=self.pool, **kwargs)

    async def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await self.request(method, path, **kwargs)
        return response.code, json.loads(await response.content())

    async def follow(self, path: str, stopAt: int | None = None, **kwargs: Any) -> list[Any]:
        response = await self.request("GET", path, unbuffered=True, **kwargs)
        lines = Lines(stopAt)
        response.deliverBody(lines)
        await lines.done
        return lines.items

    async def stop(self) -> None:
        await self.service.stopService()
        await self.pool.closeCachedConnections()


def gated(gate: Path) -> str:
    return f"echo 1; echo 2; echo 3; while [ ! -e {gate} ]; do sleep 0.02; done; echo 4; echo 5"


@pytest_twisted.ensureDeferred
async def test_the_stream_resumes_without_gaps_or_repeats(reactor: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    config = {"jobs": {"allow": [{"name": "gated", "command": gated(gate), "shell": True}]}}
    agent = Agent(reactor, config, token="s3cret")
    agent.service.startService()
    try:
        code, body = await agent.json("POST", "/api/jobs", data=b'{"check": "gated"}')
        assert code == 201, body
        jobId = body["id"]
        first = await agent.follow(f"/api/jobs/{jobId}/stream", stopAt=3)
        assert [item["seq"] for item in first] == [1, 2, 3]
        gate.touch()
        rest = await agent.follow(f"/api/jobs/{jobId}/stream", headers={"Last-Event-ID": "3"})
        assert [(i["seq"], i["line"]) for i in rest[:-1]] == [(4, "4"), (5, "5")]
        result = rest[-1]["result"]
        assert result["state"] == "finished" and result["result"]["outcome"] == "ok"
        again = await agent.follow(f"/api/jobs/{jobId}/stream?since=4")
        assert [i.get("seq") for i in again] == [5, None]
        code, shown = await agent.json("GET", f"/api/jobs/{jobId}")
        assert shown["state"] == "finished" and shown["result"]["code"] == 0
        assert shown["start_time"] >= shown["submit_time"] and shown["end_time"]
        response = await treq.post(agent.url + "/api/jobs", data=b'{"check": "gated"}',
                                   pool=agent.pool)  # fmt: skip
        assert response.code == 401
        await response.content()
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_a_check_on_demand_and_a_cancel(reactor: Any, tmp_path: Path) -> None:
    never = tmp_path / "never"
    sources = [
        {"source": "duct.sources.command.Command", "service": "hang", "interval": 3600,
         "command": gated(never), "shell": True, "start_delay": 3600},
        {"source": "duct.sources.command.Command", "service": "echo", "interval": 3600,
         "command": "echo 'ECHO OK | x=1s;2;3'", "shell": True, "start_delay": 3600},
    ]  # fmt: skip
    agent = Agent(reactor, {"sources": sources})
    agent.service.startService()
    try:
        code, body = await agent.json("POST", "/api/jobs", data=b'{"check": "echo"}')
        assert code == 201
        sse = await agent.request("GET", f"/api/jobs/{body['id']}/stream",
                                  headers={"Accept": "text/event-stream"})  # fmt: skip
        text = (await sse.content()).decode()
        assert text.startswith("id: 1\nevent: line\ndata: ")
        assert "event: result" in text and '"outcome":"ok"' in text
        code, shown = await agent.json("GET", f"/api/jobs/{body['id']}")
        services = {e["service"] for e in shown["result"]["events"]}
        assert services == {"echo", "echo.x"}

        code, body = await agent.json("POST", "/api/jobs", data=b'{"check": "hang"}')
        jobId = body["id"]
        await waitFor(reactor, lambda: agent.service.jobs.get(jobId).last >= 3, "output")
        code, cancelled = await agent.json("DELETE", f"/api/jobs/{jobId}")
        assert code == 200 and cancelled["cancelled"] is True
        code, shown = await agent.json("GET", f"/api/jobs/{jobId}")
        assert shown["state"] == "cancelled" and shown["result"]["outcome"] == "cancelled"
        code, missing = await agent.json("POST", "/api/jobs", data=b'{"check": "rm -rf /"}')
        assert code == 404
        code, stats = await agent.json("GET", "/stats")
        assert stats["queues"]["default"]["cancelled"] == 1
        assert stats["queues"]["default"]["done"] == 1
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_the_cli_runs_follows_shows_and_cancels(reactor: Any, tmp_path: Path) -> None:
    import os
    import sys

    from twisted.internet.utils import getProcessOutputAndValue

    allow = [
        {"name": "hello", "command": "echo one; echo two >&2; exit 1", "shell": True},
        {"name": "hang", "command": gated(tmp_path / "never"), "shell": True},
    ]
    agent = Agent(reactor, {"jobs": {"allow": allow}}, token="tok")
    agent.service.startService()

    async def duct(*args: str) -> tuple[str, str, int]:
        argv = ["-m", "duct.cli", "job", *args, "--url", agent.url, "--token", "tok"]
        out, err, code = await getProcessOutputAndValue(sys.executable, argv, env=os.environ)
        return out.decode(), err.decode(), code

    try:
        out, err, code = await duct("run", "hello", "--follow")
        assert out == "one\n" and "two\n" in err and code == 1
        assert "finished (failed)" in err
        jobId, _, code = await duct("run", "hang")
        jobId = jobId.strip()
        await waitFor(reactor, lambda: agent.service.jobs.get(jobId).last >= 3, "output")
        out, _, code = await duct("cancel", jobId)
        assert code == 0 and "cancelled" in out
        out, _, code = await duct("show", jobId)
        assert json.loads(out)["state"] == "cancelled"
        _, err, code = await duct("run", "nothing")
        assert code == 1 and "404" in err
    finally:
        await agent.stop()
