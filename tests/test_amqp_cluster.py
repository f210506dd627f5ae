"""Faults in a three-node RabbitMQ cluster between an agent and two aggregators.

A real twistd agent relays what a Riemann client sends to the cluster (the
URLs of all three nodes); two aggregator agents consume the queue into
JSON lines files, each through a disk buffer (``sync: always``), so that
an aggregator acks a message only once its events are on disk.  Every
event has a distinct service, so the files show what was lost and what
arrived twice.

The run: the client sends the first half of the events, which wait in the
queue; the node leading the queue is SIGKILLed; the aggregators start and
the client sends the second half; one aggregator is SIGKILLed midway;
the node comes back; the killed aggregator starts again on its disk
buffer.  With a quorum queue every event the client had an ack for is
stored and the queue drains to 0.  With a classic, non-replicated queue
on the killed node the same run loses the first half: the test can see a
loss.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from agents import Agent, Agents, Client, closeClient, connectClient, freePort, waitFor
from rabbitcluster import Cluster, startCluster
from rabbitserver import findRabbitMQ
from twisted.internet.threads import deferToThread

HALF = 50  # Msgs of 100 events in each half of the run
DEADLINE = 90.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if findRabbitMQ() is None:
        pytest.fail("rabbitmq-server is not installed: run scripts/test-deps.sh (as root)")
    started = startCluster()
    try:
        yield started
    finally:
        started.stop()


def queueOptions(queue: str, kind: str) -> str:
    durable = "true" if kind == "quorum" else "false"
    return f"queue: {queue}\n    queue_type: {kind}\n    durable: {durable}"


def edgeConfig(tmp: Path, listen: int, urls: list[str], queue: str, kind: str) -> Path:
    path = tmp / "edge.yml"
    path.write_text(f"""
stagger: 0
state_dir: {tmp / "edge-state"}
web: {{listen: "tcp:{freePort()}:interface=127.0.0.1"}}
outputs:
  - output: duct.outputs.amqp.AMQP
    name: mq
    urls: {json.dumps(urls)}
    {queueOptions(queue, kind)}
    batch_size: 100
    reconnect_initial: 0.1
    reconnect_max: 0.5
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listen}:interface=127.0.0.1"
""")
    return path


def aggregatorConfig(tmp: Path, name: str, urls: list[str], queue: str, kind: str) -> Path:
    path = tmp / f"{name}.yml"
    path.write_text(f"""
stagger: 0
state_dir: {tmp / f"{name}-state"}
web: {{listen: "tcp:{freePort()}:interface=127.0.0.1"}}
outputs:
  - output: duct.outputs.file.JSONLines
    name: file
    path: {tmp / f"{name}.jsonl"}
    flush_interval: 0.05
    buffer: {{type: disk, path: {tmp / f"{name}-buffer"}, sync: always}}
sources:
  - service: consume
    source: duct.sources.amqp.AMQP
    urls: {json.dumps(urls)}
    {queueOptions(queue, kind)}
    prefetch: 10
    reconnect_initial: 0.1
    reconnect_max: 0.5
""")
    return path


def stored(tmp: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in tmp.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line:
                counts[json.loads(line)["service"]] += 1
    return counts


@dataclass
class Outcome:
    acked: int
    stored: int
    missing: int
    duplicates: int
    left: int | None
    """Messages left in the queue at the end (None: the queue is gone)."""
    leader: str


async def faultRun(reactor: Any, cluster: Cluster, tmp: Path, queue: str, kind: str) -> Outcome:
    listen = freePort()
    urls = cluster.urls
    agents = Agents(reactor, edgeConfig(tmp, listen, urls, queue, kind))
    aggregators: list[Agents] = [
        Agents(reactor, aggregatorConfig(tmp, name, urls[n:] + urls[:n], queue, kind))
        for n, name in enumerate(("agg-1", "agg-2"), start=1)
    ]
    acked: set[str] = set()
    try:
        await agents.startListening()
        first = Client("fault", HALF, window=4)
        await connectClient(reactor, listen, first)
        await first.done
        acked |= first.services(first.acked)
        await closeClient(reactor, first)

        # The first half waits in the queue for the aggregators.
        def backlog() -> Any:
            return deferToThread(lambda: (cluster.messages(queue) or 0) >= HALF)

        await waitFor(reactor, backlog, "the first half in the queue", DEADLINE)
        leader = await deferToThread(cluster.leader, queue)
        await deferToThread(cluster.kill, leader)
        consumers: list[Agent] = [group.start() for group in aggregators]
        killed: list[Agent] = []

        def halfway(client: Client) -> None:
            if client.acked == HALF + HALF // 2 and not killed:
                killed.append(consumers[0])
                consumers[0].transport.signalProcess("KILL")  # type: ignore[union-attr]

        # Its Msgs carry the services after the first half's.
        second = Client("fault", 2 * HALF, window=4, onAck=halfway)
        second.sent = second.acked = HALF
        await connectClient(reactor, listen, second)
        await second.done
        later = {f"fault.{i}" for i in range(HALF * 100, second.acked * 100)}
        acked |= later
        await closeClient(reactor, second)
        await waitFor(reactor, lambda: killed and not killed[0].running, "the aggregator to die")
        await deferToThread(cluster.revive, leader)
        aggregators[0].start()

        # A quorum queue must hold on to everything; of a classic one, at least
        # what was sent once it had gone (then what it lost shows).
        expected = acked if kind == "quorum" else later

        def settled() -> Any:
            return deferToThread(
                lambda: expected <= set(stored(tmp)) and cluster.messages(queue) in (0, None)
            )

        await waitFor(reactor, settled, "the acked events stored, an empty queue", DEADLINE)
        counts = stored(tmp)
        left = await deferToThread(cluster.messages, queue)
        return Outcome(
            acked=len(acked),
            stored=len(counts),
            missing=len(acked - set(counts)),
            duplicates=sum(counts.values()) - len(counts),
            left=left,
            leader=leader,
        )
    finally:
        for group in (agents, *aggregators):
            await group.cleanup()


@pytest_twisted.ensureDeferred
async def test_a_quorum_queue_survives_its_leader_and_an_aggregator(
    reactor: Any, cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = await faultRun(reactor, cluster, tmp_path, "duct-fault-quorum", "quorum")
    with capsys.disabled():
        print(f"\nquorum queue: {outcome}")
    assert outcome.acked == 2 * HALF * 100
    assert outcome.missing == 0
    assert outcome.left == 0


@pytest_twisted.ensureDeferred
async def test_a_classic_queue_on_the_killed_node_loses_events(
    reactor: Any, cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = await faultRun(reactor, cluster, tmp_path, "duct-fault-classic", "classic")
    with capsys.disabled():
        print(f"\nclassic queue: {outcome}")
    assert outcome.missing > 0 or outcome.left
