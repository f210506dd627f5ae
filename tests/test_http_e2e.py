"""Two real agents: one relays over HTTP into the other's Ingest, which restarts mid-stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
from agents import Agent, Agents, Client, closeClient, connectClient, freePort, waitFor

MSGS = 150  # of 100 events each


def senderConfig(tmp: Path, web: int, tcp: int, target: int) -> str:
    return f"""
hostname: sender.example
stagger: 0
state_dir: {tmp / "sender-state"}
shutdown_timeout: 10
web: {{listen: "tcp:{web}:interface=127.0.0.1"}}
outputs:
  - output: duct.outputs.http.HTTP
    name: http
    url: http://127.0.0.1:{target}/ingest
    token: s3cret
    format: json
    gzip: true
    batch_size: 500
    max_in_flight: 2
    flush_interval: 0.05
    retry_initial: 0.1
    retry_max: 0.5
    timeout: 5
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{tcp}:interface=127.0.0.1"
"""


def receiverConfig(tmp: Path, web: int) -> str:
    return f"""
hostname: receiver.example
stagger: 0
state_dir: {tmp / "receiver-state"}
shutdown_timeout: 10
web: {{listen: "tcp:{web}:interface=127.0.0.1"}}
outputs:
  - output: duct.outputs.file.JSONLines
    name: file
    path: {tmp / "events.jsonl"}
    flush_interval: 0.05
sources:
  - service: ingest
    source: duct.sources.http.Ingest
    token: s3cret
"""


def written(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


async def started(reactor: Any, agents: Agents) -> Agent:
    agent = agents.start()
    await waitFor(
        reactor, lambda: "duct started" in agent.log or not agent.running, "an agent to start"
    )
    assert agent.running, agent.log
    return agent


@pytest_twisted.ensureDeferred
async def test_every_event_arrives_across_a_restart_of_the_receiver(
    reactor: Any, tmp_path: Path
) -> None:
    webSender, webReceiver, tcp = freePort(), freePort(), freePort()
    (tmp_path / "sender.yml").write_text(senderConfig(tmp_path, webSender, tcp, webReceiver))
    (tmp_path / "receiver.yml").write_text(receiverConfig(tmp_path, webReceiver))
    senders = Agents(reactor, tmp_path / "sender.yml")
    receivers = Agents(reactor, tmp_path / "receiver.yml")
    out = tmp_path / "events.jsonl"
    client = Client("http", MSGS, window=4)
    try:
        receiver = await started(reactor, receivers)
        sender = await started(reactor, senders)
        await connectClient(reactor, tcp, client)
        await waitFor(reactor, lambda: len(written(out)) >= 2000, "events at the receiver")

        await receivers.terminate(receiver)  # SIGTERM mid-stream
        assert receiver.code == 0, receiver.log
        before, acked = len(written(out)), client.acked
        await waitFor(reactor, lambda: client.acked >= min(MSGS, acked + 10), "acks meanwhile")
        receiver = await started(reactor, receivers)

        await waitFor(reactor, lambda: client.done.called, "every Msg acked by the sender", 60)
        expected = client.services(MSGS)
        await waitFor(
            reactor,
            lambda: expected <= {e["service"] for e in written(out)},
            "every event at the receiver",
            60,
        )
        lines = written(out)
        assert before < len(expected) <= len(lines)  # it stopped mid-stream
        assert {e["host"] for e in lines} == {"durability.example"}
        assert len(lines) >= len(expected)  # duplicates allowed, none missing
        await closeClient(reactor, client)
        await senders.terminate(sender)
        await receivers.terminate(receiver)
        assert sender.code == 0, sender.log
        assert receiver.code == 0, receiver.log
        assert "Traceback" not in sender.log + receiver.log
    finally:
        await senders.cleanup()
        await receivers.cleanup()
