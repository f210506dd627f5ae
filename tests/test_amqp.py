"""duct.outputs.amqp.AMQP and duct.sources.amqp.AMQP against a real RabbitMQ."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from rabbitserver import RabbitMQ
from twisted.internet.threads import deferToThread

from duct.event import Event
from duct.outputs.amqp import AMQP as AMQPOutput
from duct.service import DuctService
from duct.sources.amqp import AMQP as AMQPSource
from duct.stats.declare import declaredStats
from duct.stats.snapshot import read
from duct.testing import FakeDuct, RecordingOutput, configure, waitFor

DEADLINE = 60.0


def makeEvents(prefix: str, start: int, count: int) -> list[Event]:
    return [
        Event("ok", f"{prefix}.{i}", None, float(i), 60.0, hostname="agent.example")
        for i in range(start, start + count)
    ]


def publisher(reactor: Any, server: RabbitMQ, queue: str, **options: Any) -> AMQPOutput:
    config = {"urls": [server.amqpURL], "queue": queue, "batch_size": 50,
              "reconnect_max": 0.5, **options}  # fmt: skip
    output = AMQPOutput(configure(AMQPOutput, config), FakeDuct(reactor=reactor))
    return output


def consumer(reactor: Any, server: RabbitMQ, queue: str, **options: Any) -> DuctService:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.amqp.AMQP", "service": "mq", "queue": queue,
                     "urls": [server.amqpURL], "reconnect_max": 0.5, **options}],
        "outputs": [{"output": "duct.testing.RecordingOutput", "name": "out",
                     "flush_interval": 0}],
    }  # fmt: skip
    return DuctService(config, reactor=reactor)


def recorded(service: DuctService) -> RecordingOutput:
    output = service.outputs["out"]
    assert isinstance(output, RecordingOutput)
    return output


def source(service: DuctService) -> AMQPSource:
    found = service.sources[0]
    assert isinstance(found, AMQPSource)
    return found


def services(output: RecordingOutput, prefix: str) -> Counter[str]:
    return Counter(e.service for e in output.written if e.service.startswith(prefix))


def depth(server: RabbitMQ, queue: str) -> int:
    """Messages in ``queue``, ready or unacked, as the broker counts them now."""
    for line in server.ctl("-q", "list_queues", "name", "messages").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    raise AssertionError(f"no queue {queue}")


@pytest.mark.parametrize("fmt", ["riemann", "json"])
@pytest_twisted.ensureDeferred
async def test_events_go_through_the_queue(reactor: Any, rabbitmq_server: RabbitMQ,
                                           fmt: str) -> None:  # fmt: skip
    queue = f"duct-through-{fmt}"
    output = publisher(reactor, rabbitmq_server, queue, format=fmt)
    agg = consumer(reactor, rabbitmq_server, queue)
    agg.startService()
    await output.start()
    try:
        output.eventsReceived(makeEvents("through", 0, 1000))
        await waitFor(reactor, lambda: output.sent == 1000, "the broker's confirms", DEADLINE)
        out = recorded(agg)
        await waitFor(reactor, lambda: len(services(out, "through")) == 1000, "all events",
                      DEADLINE)  # fmt: skip
        await waitFor(reactor, lambda: source(agg).messages == output.published, "the acks")
    finally:
        await output.stop()
        await agg.stopService()
    got = services(out, "through")
    assert set(got) == {f"through.{i}" for i in range(1000)}
    assert max(got.values()) == 1
    event = next(e for e in out.written if e.service == "through.7")
    assert (event.metric, event.hostname, event.state) == (7.0, "agent.example", "ok")
    assert output.published == 20  # 1,000 events in batches of 50
    assert source(agg).unacked == 0
    assert await deferToThread(depth, rabbitmq_server, queue) == 0


@pytest_twisted.ensureDeferred
async def test_a_broker_restart_loses_nothing(reactor: Any, rabbitmq_server: RabbitMQ) -> None:
    queue = "duct-restart"
    output = publisher(reactor, rabbitmq_server, queue)
    agg = consumer(reactor, rabbitmq_server, queue, prefetch=5)
    agg.startService()
    await output.start()
    out = recorded(agg)
    try:
        output.eventsReceived(makeEvents("restart", 0, 1000))
        await waitFor(reactor, lambda: services(out, "restart"), "the first events", DEADLINE)
        await deferToThread(rabbitmq_server.ctl, "stop_app")
        # Published while the broker is down: held in the output's buffer.
        output.eventsReceived(makeEvents("restart", 1000, 1000))
        assert not output.connected
        await deferToThread(rabbitmq_server.ctl, "start_app")
        await waitFor(reactor, lambda: output.sent >= 2000, "every event confirmed", DEADLINE)
        await waitFor(reactor, lambda: len(services(out, "restart")) == 2000, "every event",
                      DEADLINE)  # fmt: skip
        await waitFor(reactor, lambda: output.buffer.depth == 0, "an empty buffer")
    finally:
        await output.stop()
        await agg.stopService()
    assert output.reconnects >= 1 and source(agg).reconnects >= 1
    assert await deferToThread(depth, rabbitmq_server, queue) == 0


@pytest_twisted.ensureDeferred
async def test_a_malformed_message_is_dead_lettered(
    reactor: Any, rabbitmq_server: RabbitMQ
) -> None:
    queue, dlx, dead = "duct-dlx", "duct-dlx-exchange", "duct-dlx-dead"
    api = rabbitmq_server.api
    await deferToThread(api, "PUT", f"exchanges/%2F/{dlx}", {"type": "fanout", "durable": True})
    await deferToThread(api, "PUT", f"queues/%2F/{dead}", {"durable": True})
    await deferToThread(api, "POST", f"bindings/%2F/e/{dlx}/q/{dead}", {"routing_key": ""})
    output = publisher(reactor, rabbitmq_server, queue, dead_letter_exchange=dlx)
    agg = consumer(reactor, rabbitmq_server, queue, dead_letter_exchange=dlx)
    agg.startService()
    await output.start()
    out = recorded(agg)
    bad = {"properties": {}, "routing_key": queue, "payload_encoding": "base64",
           "payload": base64.b64encode(b"\xff\xff\xffnot a Msg").decode()}  # fmt: skip
    try:
        await waitFor(reactor, lambda: source(agg).channel, "the consumer")
        await deferToThread(api, "POST", "exchanges/%2F/amq.default/publish", bad)
        output.eventsReceived(makeEvents("dlx", 0, 10))
        await waitFor(reactor, lambda: len(services(out, "dlx")) == 10, "the good events")
        await waitFor(reactor, lambda: source(agg).rejected == 1, "the rejection")
        counted = read(declaredStats(AMQPSource), source(agg))
    finally:
        await output.stop()
        await agg.stopService()
    take = {"count": 5, "ackmode": "ack_requeue_false", "encoding": "base64"}
    got = await deferToThread(api, "POST", f"queues/%2F/{dead}/get", take)
    assert isinstance(got, list) and len(got) == 1
    assert base64.b64decode(got[0]["payload"]) == b"\xff\xff\xffnot a Msg"
    assert counted["rejected"] == 1 and counted["messages"] == 1


@pytest_twisted.ensureDeferred
async def test_two_consumers_compete(reactor: Any, rabbitmq_server: RabbitMQ) -> None:
    queue = "duct-compete"
    output = publisher(reactor, rabbitmq_server, queue, batch_size=20)
    first = consumer(reactor, rabbitmq_server, queue, prefetch=2)
    second = consumer(reactor, rabbitmq_server, queue, prefetch=2)
    first.startService()
    second.startService()
    await output.start()
    try:
        await waitFor(reactor, lambda: source(first).channel and source(second).channel,
                      "both consumers")  # fmt: skip
        output.eventsReceived(makeEvents("compete", 0, 2000))

        def total() -> int:
            return sum(len(services(recorded(s), "compete")) for s in (first, second))

        await waitFor(reactor, lambda: total() == 2000, "every event", DEADLINE)
    finally:
        await output.stop()
        await first.stopService()
        await second.stopService()
    a, b = services(recorded(first), "compete"), services(recorded(second), "compete")
    assert a and b, "each consumer took a share"
    assert not set(a) & set(b)
    assert source(first).messages + source(second).messages == 100


@pytest.mark.parametrize(
    ("cls", "config", "key"),
    [
        (AMQPOutput, {"urls": ["http://localhost/"], "queue": "q"}, "urls"),
        (AMQPOutput, {"urls": [], "queue": "q"}, "urls"),
        (AMQPOutput, {"queue": "q", "routing_key": "{hostname}"}, "routing_key"),
        (AMQPOutput, {"queue": "q", "routing_key": "{host"}, "routing_key"),
        (AMQPOutput, {}, "routing_key"),
        (AMQPOutput, {"queue": "q", "format": "xml"}, "format"),
        (AMQPOutput, {"queue": "q", "queue_type": "stream"}, "queue_type"),
        (AMQPOutput, {"queue": "q", "durable": False}, "durable"),
        (AMQPSource, {"service": "mq"}, "queue"),
        (AMQPSource, {"service": "mq", "queue": "q", "prefetch": 0}, "prefetch"),
        (AMQPSource, {"service": "mq", "queue": "q", "colour": "red"}, "colour"),
    ],
)
def test_bad_options_name_the_key(cls: type, config: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{key}\b"):
        configure(cls, config)
