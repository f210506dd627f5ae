"""A hostile file given to a running twistd agent on SIGHUP: it keeps serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from agents import Agents, freePort, waitFor
from test_config_hostile import aliasBomb
from twisted.internet.defer import Deferred
from twisted.web.client import Agent as WebClient


def health(reactor: Any, port: int) -> Deferred[Any]:
    """Fires with True once GET /health answers 200, False if it cannot be reached yet."""
    url = f"http://127.0.0.1:{port}/health".encode()
    d = WebClient(reactor).request(b"GET", url)
    return d.addCallbacks(lambda response: response.code == 200, lambda _: False)


@pytest_twisted.ensureDeferred
async def test_an_alias_bomb_on_sighup_is_refused_and_the_agent_keeps_answering(
    reactor: Any, tmp_path: Path
) -> None:
    port = freePort()
    config = tmp_path / "duct.yml"
    config.write_text(
        f"hostname: test.example\nstagger: 0\nstate_dir: {tmp_path}\n"
        f'web: {{listen: "tcp:{port}:interface=127.0.0.1"}}\n'
    )
    agents = Agents(reactor, config)
    try:
        agent = agents.start()
        await waitFor(reactor, lambda: health(reactor, port), "/health at start")

        config.write_text(aliasBomb())
        agent.transport.signalProcess("HUP")  # type: ignore[union-attr]
        await waitFor(
            reactor, lambda: "keeping the running configuration" in agent.log, "the refusal"
        )
        assert "values once aliases are expanded (the limit)" in agent.log
        assert str(config) in agent.log
        assert await health(reactor, port)
        assert agent.running

        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert "Traceback" not in agent.log
    finally:
        await agents.cleanup()
