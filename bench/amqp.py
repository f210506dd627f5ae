"""AMQP benchmark: client -> agent (Riemann listener -> AMQP output) -> RabbitMQ -> aggregator.

Starts a one-node RabbitMQ (Debian's, under tmp), an agent as a real
``twistd`` process whose Riemann TCP listener routes to the AMQP output,
and an aggregator ``twistd`` whose AMQP source consumes the queue into a
JSON lines file.  A client sends N events in Msgs of 100, eight awaiting
their acks at once.  Prints JSON:

- events_per_s: end to end, first send to the last event in the
  aggregator's file;
- agent_cpu_ms_per_1000 and aggregator_cpu_ms_per_1000: each process's
  user+system CPU per 1,000 events;
- bare_pika: pika's blocking client in this process publishing the same
  Msgs (100 events each) with publisher confirms, one at a time, and its
  CPU per 1,000 events.

    .venv/bin/python bench/amqp.py [--events 100000] [--queue-type classic]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from twisted.internet import task
from twisted.internet.defer import Deferred

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from agents import Agents, Client, connectClient, freePort, makeMsg, waitFor  # noqa: E402
from rabbitserver import startRabbitMQ  # noqa: E402

BATCH = 100


def cpuSeconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def configs(tmp: Path, listen: int, url: str, kind: str) -> tuple[Path, Path, Path]:
    out = tmp / "events.jsonl"
    queue = f"queue: bench\n    queue_type: {kind}"
    edge, agg = tmp / "edge.yml", tmp / "agg.yml"
    edge.write_text(f"""
stagger: 0
state_dir: {tmp / "edge"}
outputs:
  - output: duct.outputs.amqp.AMQP
    name: mq
    urls: ["{url}"]
    {queue}
    batch_size: 1000
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listen}:interface=127.0.0.1"
""")
    agg.write_text(f"""
stagger: 0
state_dir: {tmp / "agg"}
outputs:
  - {{output: duct.outputs.file.JSONLines, name: file, path: {out}, batch_size: 1000}}
sources:
  - service: consume
    source: duct.sources.amqp.AMQP
    urls: ["{url}"]
    {queue}
    prefetch: 50
""")
    return edge, agg, out


async def throughDuct(reactor: Any, url: str, events: int, kind: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="duct-bench-amqp-"))
    listen = freePort()
    edgeConfig, aggConfig, out = configs(tmp, listen, url, kind)
    edge, agg = Agents(reactor, edgeConfig), Agents(reactor, aggConfig)
    try:
        agent = await edge.startListening()
        aggregator = agg.start()
        await waitFor(reactor, lambda: "connected to" in aggregator.log, "the aggregator", 60)
        cpu0 = cpuSeconds(agent.pid), cpuSeconds(aggregator.pid)
        t0 = reactor.seconds()
        client = Client("bench", events // BATCH, window=8, batch=BATCH)
        await connectClient(reactor, listen, client)
        await client.done
        await waitFor(reactor, lambda: lines(out) >= events, "every event consumed", 600)
        elapsed = reactor.seconds() - t0
        cpu1 = cpuSeconds(agent.pid), cpuSeconds(aggregator.pid)
    finally:
        await edge.cleanup()
        await agg.cleanup()
    return {
        "events_per_s": round(events / elapsed),
        "agent_cpu_ms_per_1000": round((cpu1[0] - cpu0[0]) * 1e6 / events, 2),
        "aggregator_cpu_ms_per_1000": round((cpu1[1] - cpu0[1]) * 1e6 / events, 2),
    }


def barePika(url: str, events: int, kind: str) -> dict[str, Any]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare("bench-bare", durable=True, arguments={"x-queue-type": kind})
    channel.confirm_delivery()
    body = makeMsg("bare", 0, BATCH)
    properties = pika.BasicProperties(delivery_mode=2)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(events // BATCH):
        channel.basic_publish("", "bench-bare", body, properties, mandatory=True)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    channel.queue_delete("bench-bare")
    connection.close()
    return {
        "events_per_s": round(events / elapsed),
        "cpu_ms_per_1000": round(cpu * 1e6 / events, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--queue-type", choices=("classic", "quorum"), default="quorum")
    args = parser.parse_args()
    server = startRabbitMQ()
    try:
        url = f"amqp://guest:guest@127.0.0.1:{server.env['RABBITMQ_NODE_PORT']}/%2F"
        result: dict[str, Any] = {"events": args.events, "queue_type": args.queue_type}

        async def run(reactor: Any) -> None:
            result["duct"] = await throughDuct(reactor, url, args.events, args.queue_type)

        try:
            task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
        except SystemExit as done:  # react exits when run is done
            if done.code:
                raise
        result["bare_pika"] = barePika(url, args.events, args.queue_type)
    finally:
        server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
