"""duct.sources.redis: Queues and Redis on a recorded server, and against a real redis-server."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from dbservers import Server
from replay import HangingEndpoint, RefusingEndpoint, ReplayEndpoint, SilentEndpoint, recorded

from duct.lib.resp import encodeCommand, parseReply
from duct.sources.redis import Queues, Redis
from duct.testing import SourceHarness, recordingService, waitFor

INFO = encodeCommand("INFO")


def llen(name: str) -> bytes:
    return encodeCommand("LLEN", name)


def test_resp_replies_of_every_kind() -> None:
    data = b"*4\r\n+OK\r\n:-3\r\n$4\r\na\r\nb\r\n$-1\r\n-ERR no\r\n"
    items, end = parseReply(data)
    assert items == [b"OK", -3, b"a\r\nb", None]
    error, _ = parseReply(data, end)
    assert str(error) == "ERR no"


def test_queue_length_and_rate_with_the_original_keys() -> None:
    answers = {llen("celery"): b":3\r\n"}
    harness = SourceHarness(Queues, {"service": "redis.celery", "interval": 10}, pipeline=True)
    harness.source.endpoint = lambda: ReplayEndpoint(answers)  # type: ignore[method-assign]
    harness.start()
    assert harness.latest("redis.celery").metric == 3
    answers[llen("celery")] = b":23\r\n"
    harness.advance(10)
    assert harness.latest("redis.celery").metric == 23
    assert harness.latest("redis.celery.rate").metric == 2.0
    assert harness.latest("redis.celery").description == "celery queue length"


def test_several_queues_after_auth_and_select() -> None:
    auth, select = encodeCommand("AUTH", "secret"), encodeCommand("SELECT", 2)
    answers = {auth: b"+OK\r\n", select: b"+OK\r\n", llen("a"): b":1\r\n", llen("b"): b":0\r\n"}
    config = {"service": "q", "queues": "a, b", "db": 2, "password": "secret"}
    harness = SourceHarness(Queues, config)
    endpoint = ReplayEndpoint(answers)
    harness.source.endpoint = lambda: endpoint  # type: ignore[method-assign]
    harness.start()
    assert {e.service: e.metric for e in harness.events} == {"q.a": 1, "q.a.rate": 1,
                                                             "q.b": 0, "q.b.rate": 0}  # fmt: skip
    assert endpoint.transports[0].closed


def test_info_from_a_recorded_redis_7() -> None:
    harness = SourceHarness(Redis, {"service": "redis", "interval": 10}, pipeline=True)
    endpoint = ReplayEndpoint({INFO: recorded("redis-7.0-info.resp")})
    harness.source.endpoint = lambda: endpoint  # type: ignore[method-assign]
    harness.start()
    harness.advance(10)
    assert harness.latest("redis.state").metric == 1
    assert harness.latest("redis.memory.used").metric > 100_000
    assert harness.latest("redis.clients.connected").metric == 1
    assert harness.latest("redis.keyspace.hit_ratio").metric == 2 / 3  # two GETs hit, one missed
    assert harness.latest("redis.keyspace.hits").metric == 0.0  # a rate: nothing changed
    assert harness.latest("redis.replication.lag").metric == 0.0  # a primary with no replica
    assert {"redis.ops", "redis.commands", "redis.memory.rss"} <= {
        e.service for e in harness.events
    }
    assert harness.errors == []


def test_a_replica_whose_link_is_down_is_critical() -> None:
    harness = SourceHarness(Redis, {"service": "redis"})
    text = "role:slave\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n"
    body = b"$%d\r\n%s\r\n" % (len(text), text.encode())
    harness.source.endpoint = lambda: ReplayEndpoint({INFO: body})  # type: ignore[method-assign]
    harness.start()
    assert harness.latest("redis.replication.lag").state == "critical"


def test_refused_silent_and_unreachable_servers_are_critical_and_do_not_block() -> None:
    for endpoint in (RefusingEndpoint(), SilentEndpoint(), HangingEndpoint()):
        harness = SourceHarness(Redis, {"service": "redis", "timeout": 5})
        harness.source.endpoint = lambda e=endpoint: e  # type: ignore[method-assign]
        harness.start()
        harness.advance(5)
        state = harness.latest("redis.state")
        assert (state.state, state.metric) == ("critical", 0), endpoint
        assert state.description.startswith("Connection error: ")
        assert harness.errors == []


def test_an_error_reply_is_critical() -> None:
    harness = SourceHarness(Queues, {"service": "q"})
    answers = {llen("celery"): b"-WRONGTYPE Operation against a key holding the wrong kind\r\n"}
    harness.source.endpoint = lambda: ReplayEndpoint(answers)  # type: ignore[method-assign]
    harness.start()
    state = harness.latest("q.state")
    assert state.state == "critical" and "WRONGTYPE" in state.description


def send(server: Server, *command: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(encodeCommand(*command))
        s.recv(1024)


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_redis(reactor: Any, redis_server: Server) -> None:
    send(redis_server, "DEL", "jobs")
    send(redis_server, "RPUSH", "jobs", "1", "2", "3", "4")
    common = {"interval": 0.3, "port": redis_server.port}
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.redis.Queues", "service": "jobs", "queue": "jobs",
                     **common},
                    {"source": "duct.sources.redis.Redis", "service": "redis", **common}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def latest(name: str) -> Any:
        return next((e for e in reversed(output.written) if e.service == name), None)

    service.startService()
    try:
        await waitFor(reactor, lambda: latest("jobs") and latest("redis.commands"), "events", 30)
        send(redis_server, "GET", "jobs-missing")
        await waitFor(reactor, lambda: (e := latest("redis.keyspace.misses")) and e.metric > 0,
                      "a keyspace miss rate", 30)  # fmt: skip
    finally:
        await service.stopService()
    assert latest("jobs").metric == 4 and latest("jobs").state == "ok"
    assert latest("redis.state").metric == 1
    assert latest("redis.memory.used").metric > 0
    assert latest("redis.clients.connected").metric >= 1
    assert latest("redis.replication.lag").metric == 0
    assert [s.errors for s in service.sources] == [0, 0], redis_server.log()


@pytest_twisted.ensureDeferred
async def test_a_closed_port_is_critical(reactor: Any) -> None:
    from localservers import freePort

    harness = SourceHarness(Redis, {"service": "redis", "port": freePort(), "timeout": 2})
    harness.duct.reactor = reactor  # a real connection attempt; the timeout stays on the Clock
    [event] = await harness.poll()
    assert event.state == "critical" and "refused" in event.description.lower()


def test_over_ssh_redis_cli_answers() -> None:
    from twisted.internet.defer import succeed

    from duct.lib.commands import CommandOutput

    harness = SourceHarness(Queues, {"service": "q", "queue": "jobs", "db": 1})
    argvs: list[list[str]] = []

    def run(argv: list[str], timeout: float | None = None) -> Any:
        argvs.append(list(argv))
        return succeed(CommandOutput(0, "(integer) 7\n", ""))

    harness.source.useSSH = True  # as use_ssh sets it
    harness.source.run = run  # type: ignore[method-assign]
    harness.start()
    assert argvs == [["/usr/bin/redis-cli", "-h", "127.0.0.1", "-p", "6379", "-n", "1",
                      "llen", "jobs"]]  # fmt: skip
    assert harness.latest("q").metric == 7
