"""A relay configured in the original duct's words runs under twistd.

The listener takes ``port:`` and the output ``interval:`` (and the
original's ``pressure`` and ``maxrate: 0``), as the original documents
them; a real agent relays what a Riemann client sends to a Riemann sink,
and every event arrives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from agents import Agents, Client, Sink, closeClient, connectClient, freePort, waitFor


def relayConfig(tmp: Path, listen: int, sink: int) -> Path:
    config = tmp / "duct.yml"
    config.write_text(
        f"""\
# The original's relay: no names, no route.
debug: 0
ttl: 60.0
outputs:
    - output: duct.outputs.riemann.RiemannTCP
      server: 127.0.0.1
      port: {sink}
      interval: 0.2
      pressure: 3
      maxrate: 0
sources:
    - service: relay
      source: duct.sources.riemann.RiemannTCP
      port: {listen}
state_dir: {tmp / "state"}
"""
    )
    return config


@pytest_twisted.ensureDeferred
async def test_a_relay_in_the_originals_words_delivers_every_event(
    reactor: Any, tmp_path: Path
) -> None:
    listen, sinkPort = freePort(), freePort()
    config = relayConfig(tmp_path, listen, sinkPort)
    sink = Sink(reactor, sinkPort)
    sink.start()
    agents = Agents(reactor, config)
    client = Client("compat", 20, window=4)
    try:
        agent = await agents.startListening()
        [line] = [line for line in agent.log.splitlines() if "listening on" in line]
        assert "127.0.0.1" in line and str(listen) in line, line  # port: alone is local
        await connectClient(reactor, listen, client)
        await waitFor(reactor, lambda: client.done.called, "acks for every Msg")
        expected = client.services(20)
        await waitFor(reactor, lambda: len(sink.counts) >= len(expected), "every event relayed")
        await closeClient(reactor, client)
        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert set(sink.counts) == expected
        assert "unknown key" not in agent.log and "Traceback" not in agent.log
    finally:
        if client.open:
            client.transport.abortConnection()  # type: ignore[union-attr]
        await agents.cleanup()
        await sink.stop()
