"""An independent Riemann client, node's ``riemann`` package, against our listeners.

CI installs it with ``npm ci --prefix tests/interop``.  Its schema lacks
``time_micros``, so times are whole seconds here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import error, protocol
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from duct.event import Event
from duct.service import DuctService
from duct.testing import RecordingOutput, waitFor

INTEROP = Path(__file__).resolve().parent / "interop"
NODE = shutil.which("node")
DEADLINE = 30.0  # seconds the node client may take

# `make test` installs node (scripts/test-deps.sh) and the client (npm ci): a
# missing one is a broken set-up, so these tests fail rather than skip.
MISSING = (
    "node is not installed: run scripts/test-deps.sh (as root) or make test"
    if NODE is None
    else "tests/interop/node_modules is missing: run npm ci --prefix tests/interop"
    if not (INTEROP / "node_modules" / "riemann").is_dir()
    else None
)


@pytest.fixture(autouse=True)
def _interopClient() -> None:
    if MISSING is not None:
        pytest.fail(MISSING)


EVENTS: list[dict[str, Any]] = [
    {
        "host": "web1.example.com",
        "service": "disk.sda.used",
        "state": "warning",
        "description": "82% used",
        "metricSint64": 42,
        "ttl": 30.5,
        "tags": ["prod", "disk"],
        "attributes": [{"key": "team", "value": "storage"}, {"key": "rack", "value": "b4"}],
        "time": 1700000000,
    },
    {"host": "web2", "service": "load", "metricD": 0.1, "time": 1700000001},
    {"host": "web3", "service": "temperature", "metric": 21.25, "time": 1700000002},
    {"host": "web4", "service": "heartbeat", "state": "ok", "time": 1700000003},
]

EXPECTED = [
    Event(
        "warning",
        "disk.sda.used",
        "82% used",
        42,
        30.5,
        tags=["prod", "disk"],
        hostname="web1.example.com",
        evtime=1700000000.0,
        attributes={"team": "storage", "rack": "b4"},
    ),
    Event(None, "load", None, 0.1, None, hostname="web2", evtime=1700000001.0),
    # The client sends ``metric`` as metric_f, a float32: 21.25 is exact in one.
    Event(None, "temperature", None, 21.25, None, hostname="web3", evtime=1700000002.0),
    Event("ok", "heartbeat", None, None, None, hostname="web4", evtime=1700000003.0),
]


class Node(protocol.ProcessProtocol):
    """Feeds the events on stdin, keeps stdout and stderr, fires ``ended`` with the exit code."""

    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.ended: Deferred[int | None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        done = isinstance(value, (error.ProcessDone, error.ProcessTerminated))
        self.ended.callback(value.exitCode if done else None)


async def runNode(reactor: Any, port: int, transport: str) -> tuple[int | None, Node]:
    """Run send.js on the real reactor, which keeps serving our listener meanwhile."""
    node = Node(json.dumps(EVENTS).encode())
    argv = [str(NODE), str(INTEROP / "send.js"), "127.0.0.1", str(port), transport]
    process = reactor.spawnProcess(node, argv[0], argv, env=dict(os.environ), path=str(INTEROP))
    waited = 0.0
    while not node.ended.called:
        if waited > DEADLINE:
            process.signalProcess("KILL")
            await node.ended
            raise AssertionError(f"node did not finish: {node.err.decode()}")
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
    return await node.ended, node


def relay(reactor: Any, source: dict[str, Any]) -> tuple[Any, RecordingOutput]:
    service = DuctService(
        {
            "outputs": [
                {"output": "duct.testing.RecordingOutput", "name": "recorded", "flush_interval": 0}
            ],
            "sources": [{"service": "riemann", **source}],
        },
        reactor=reactor,
    )
    output = service.outputs["recorded"]
    assert isinstance(output, RecordingOutput)
    listener = service.sources[0]
    listener.startTimer()
    return listener, output


def waitForEvents(reactor: Any, output: RecordingOutput, count: int) -> Deferred[Any]:
    check = lambda: len(output.written) >= count  # noqa: E731
    return waitFor(reactor, check, f"{count} events", DEADLINE, interval=0.01)


@pytest_twisted.ensureDeferred
async def test_node_client_over_tcp_gets_acks_and_every_field_arrives(reactor: Any) -> None:
    listener, output = relay(
        reactor,
        {"source": "duct.sources.riemann.RiemannTCP", "listen": "tcp:0:interface=127.0.0.1"},
    )
    try:
        code, node = await runNode(reactor, listener.port.getHost().port, "tcp")
        assert code == 0, node.err.decode()
        await waitForEvents(reactor, output, len(EXPECTED))
    finally:
        await listener.stopTimer()
        output.stop()
    acks = [json.loads(line) for line in node.out.decode().splitlines()]
    assert acks == [{"ok": True}] * len(EVENTS)
    assert output.written == EXPECTED
    assert isinstance(output.written[0].metric, int)
    assert listener.received == len(EVENTS) and listener.malformed == 0


@pytest_twisted.ensureDeferred
async def test_node_client_over_udp(reactor: Any) -> None:
    listener, output = relay(
        reactor, {"source": "duct.sources.riemann.RiemannUDP", "interface": "127.0.0.1", "port": 0}
    )
    port = listener.port.getHost().port
    # The client connects over TCP to the same port even to send over UDP,
    # as to a Riemann server, which listens on both.
    tcp, _ = relay(
        reactor,
        {"source": "duct.sources.riemann.RiemannTCP", "listen": f"tcp:{port}:interface=127.0.0.1"},
    )
    try:
        assert tcp.port is not None, f"TCP port {port} is taken"
        code, node = await runNode(reactor, port, "udp")
        assert code == 0, node.err.decode()
        await waitForEvents(reactor, output, len(EXPECTED))
    finally:
        await listener.stopTimer()
        await tcp.stopTimer()
        output.stop()
    assert output.written == EXPECTED
    assert listener.received == len(EVENTS) and tcp.received == 0
