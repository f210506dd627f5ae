"""duct.sources.rabbitmq.Queues: on recorded answers, and against a real RabbitMQ."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from rabbitserver import BIN, RabbitMQ
from replay import recorded
from twisted.internet.defer import Deferred, succeed

from duct.lib.commands import CommandOutput
from duct.lib.process import ProcessTimeout
from duct.service import DuctService
from duct.sources.rabbitmq import Queues
from duct.testing import RecordingOutput, SourceHarness, StubHTTP, waitFor


def byService(harness: SourceHarness) -> dict[str, Any]:
    return {e.service: e.metric for e in harness.events}


def test_rabbitmqctl_with_the_original_keys_and_rates() -> None:
    harness = SourceHarness(Queues, {"service": "mq", "interval": 10})
    output = recorded("rabbitmqctl-3.10-list_queues.txt").decode()
    argvs: list[list[str]] = []

    def run(argv: list[str], timeout: float | None = None) -> Deferred[CommandOutput]:
        argvs.append(list(argv))
        return succeed(CommandOutput(0, output, ""))

    harness.source.run = run  # type: ignore[method-assign]
    harness.start()
    assert argvs[0] == ["/usr/sbin/rabbitmqctl", "-q", "list_queues", "-p", "/",
                        "name", "messages_ready", "messages_unacknowledged"]  # fmt: skip
    assert byService(harness) == {
        "mq.celery.ready": 3, "mq.celery.unack": 0, "mq.jobs.ready": 0,
        "mq.jobs.unack": 0, "mq.total.ready": 3, "mq.total.unack": 0,
    }  # fmt: skip
    output = output.replace("celery\t3\t0", "celery\t23\t5")
    harness.advance(10)
    latest = byService(harness)
    assert latest["mq.celery.ready_rate"] == 2.0 and latest["mq.celery.unack_rate"] == 0.5
    assert latest["mq.total.ready"] == 23 and latest["mq.total.ready_rate"] == 2.0
    assert latest["mq.jobs.ready_rate"] == 0.0
    assert harness.latest("mq.celery.ready").description == "celery ready messages: 23"


def test_rabbitmqctl_failing_or_hanging_is_critical() -> None:
    harness = SourceHarness(Queues, {"service": "mq"})
    answers = [succeed(CommandOutput(69, "", "Error: unable to perform an operation on node")),
               Deferred()]  # fmt: skip
    pending = answers[1]
    harness.source.run = lambda argv, timeout=None: answers.pop(0)  # type: ignore[method-assign]
    harness.start()
    state = harness.latest("mq.state")
    assert state.state == "critical" and "exited 69: Error: unable" in state.description
    harness.advance(60)
    pending.errback(ProcessTimeout("rabbitmqctl", 10))  # what run does past its timeout
    assert "Error reading queues" in harness.latest("mq.state").description
    assert len([e for e in harness.events if e.service == "mq.state"]) == 2


def test_the_management_api_gives_the_same_figures() -> None:
    http = StubHTTP({"/api/queues/%2F": recorded("rabbitmq-3.10-api-queues.json")})
    config = {"service": "mq", "management_url": "http://rabbit:15672/", "user": "guest",
              "password": "guest"}  # fmt: skip
    harness = SourceHarness(Queues, config, http=http)
    harness.start()
    assert byService(harness)["mq.celery.ready"] == 3
    assert byService(harness)["mq.total.unack"] == 0
    [request] = http.requests
    assert request.path == "/api/queues/%2F?columns=name,messages_ready,messages_unacknowledged"
    assert harness.errors == []


def test_an_api_error_is_critical() -> None:
    http = StubHTTP({"/api/queues/%2F": (401, '{"error":"not_authorised"}')})
    harness = SourceHarness(Queues, {"service": "mq", "management_url": "http://rabbit:15672"},
                            http=http)  # fmt: skip
    harness.start()
    assert "401" in harness.latest("mq.state").description


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_rabbitmq_both_ways(
    reactor: Any, rabbitmq_server: RabbitMQ
) -> None:
    rabbitmq_server.api("PUT", "queues/%2F/duct-work", {"durable": False})
    rabbitmq_server.publish("duct-work", 3)
    config = {
        "stagger": 0,
        "sources": [
            {"source": "duct.sources.rabbitmq.Queues", "service": "api", "interval": 0.5,
             "management_url": rabbitmq_server.managementURL, "user": "guest",
             "password": "guest"},
            {"source": "duct.sources.rabbitmq.Queues", "service": "ctl", "interval": 2,
             "rabbitmqctl": str(rabbitmq_server.root / "rabbitmqctl"), "timeout": 60},
        ],
        "outputs": [{"output": "duct.testing.RecordingOutput", "name": "out",
                     "flush_interval": 0}],
    }  # fmt: skip
    # rabbitmqctl as the source runs it: a script that reaches this broker's node.
    wrapper = rabbitmq_server.root / "rabbitmqctl"
    names = ("RABBITMQ", "ERL", "HOME")
    exports = " ".join(f"{k}='{v}'" for k, v in rabbitmq_server.env.items() if k.startswith(names))
    wrapper.write_text(f'#!/bin/sh\nexport {exports}\nexec {BIN}/rabbitmqctl "$@"\n')
    wrapper.chmod(0o755)
    service = DuctService(config, reactor=reactor)
    output = service.outputs["out"]
    assert isinstance(output, RecordingOutput)

    def latest(name: str) -> Any:
        return next((e for e in reversed(output.written) if e.service == name), None)

    service.startService()
    try:
        # The management API refreshes its queue figures every few seconds.
        await waitFor(reactor, lambda: (e := latest("api.duct-work.ready")) and e.metric == 3,
                      "the API's count", 60)  # fmt: skip
        await waitFor(reactor, lambda: latest("ctl.duct-work.ready"), "rabbitmqctl's count", 60)
    finally:
        await service.stopService()
    assert latest("ctl.duct-work.ready").metric == 3
    assert latest("ctl.duct-work.unack").metric == 0
    assert latest("ctl.total.ready").metric >= 3
    assert latest("ctl.state") is None and latest("api.state") is None
