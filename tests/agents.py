"""A real twistd agent and the peers that talk to it, for end-to-end tests and benches.

`Agents` starts ``twistd -n duct -c FILE`` as a child process (`Agent`
keeps its log and how it ended).  `Client` is a Riemann client that sends
Msgs of distinct services and counts their acks; `RawClient` sends
whatever bytes it is given and parses what comes back; `Sink` is a Riemann
server that counts what an output delivers and acks it.  `Harness` runs a
whole agent for a hostile-input case: the agent, a good client that keeps
sending, the sink, and monitors of the agent's memory and ``/stats``.

Nothing here needs pytest, so the benches use it too.  Everything runs on
the real reactor and waits by polling with a deadline (`waitFor`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localservers import freePort
from treq.client import HTTPClient
from twisted.internet import error, protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import Int32StringReceiver
from twisted.web.client import Agent as WebAgent
from twisted.web.client import HTTPConnectionPool

from duct import testing
from duct.protocol.riemann import ack, frame, pb

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0  # seconds a real process or socket may take before a test gives up
BATCH = 100  # events per Msg, from the clients and from the agent's output
MB = 1024 * 1024


# -- waiting, without blocking the reactor -----------------------------------------------


def waitFor(
    reactor: Any, check: Callable[[], Any], what: str, timeout: float = DEADLINE
) -> Deferred[Any]:
    """Poll ``check`` on the real reactor until it is true, for at most ``timeout`` s."""
    return testing.waitFor(reactor, check, what, timeout, interval=0.05)


# -- the sink: a Riemann server that counts events by service ---------------------------


class SinkConnection(Int32StringReceiver):
    MAX_LENGTH = 64 * MB

    def connectionMade(self) -> None:
        self.sink: Sink = self.factory  # type: ignore[assignment]
        self.sink.connections.add(self)
        self.pending: list[Any] = []
        self.due = 0.0
        self.lost: Deferred[None] = Deferred()

    def stringReceived(self, data: bytes) -> None:
        sink = self.sink
        if sink.keepRaw:
            sink.payloads.append(data)
        msg = pb.Msg.FromString(data)
        sink.counts.update(event.service for event in msg.events)
        sink.received += len(msg.events)
        sink.msgs += 1
        if not sink.ackDelay:
            self.transport.write(ack())  # type: ignore[union-attr]
            return
        # A slow server: one Msg at a time, each ``ackDelay`` after the last.
        now = sink.reactor.seconds()
        self.due = max(now, self.due) + sink.ackDelay
        self.pending.append(sink.reactor.callLater(self.due - now, self._ack))

    def _ack(self) -> None:
        self.pending = [call for call in self.pending if call.active()]
        self.transport.write(ack())  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        for call in self.pending:
            if call.active():
                call.cancel()
        self.sink.connections.discard(self)
        self.lost.callback(None)


class Sink(protocol.Factory):
    """Counts events by service and acks each Msg; stops and starts on one port.

    With ``keepRaw``, ``payloads`` keeps every Msg as the bytes it arrived
    as, to check what a relay passed on unchanged.
    """

    protocol = SinkConnection
    noisy = False

    def __init__(
        self, reactor: Any, portNumber: int, ackDelay: float = 0.0, keepRaw: bool = False
    ) -> None:
        self.reactor = reactor
        self.portNumber = portNumber
        self.ackDelay = ackDelay
        self.keepRaw = keepRaw
        self.payloads: list[bytes] = []
        self.counts: Counter[Any] = Counter()
        self.received = 0
        self.msgs = 0
        self.connections: set[SinkConnection] = set()
        self.port: Any = None

    @property
    def duplicates(self) -> int:
        return self.received - len(self.counts)

    def start(self) -> None:
        self.port = self.reactor.listenTCP(self.portNumber, self, interface="127.0.0.1")

    async def stop(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            await port.stopListening()
        lost = [c.lost for c in self.connections]
        for connection in list(self.connections):
            connection.transport.abortConnection()  # type: ignore[union-attr]
        await DeferredList(lost)


# -- clients ------------------------------------------------------------------------------


def makeMsg(
    prefix: str, first: int, count: int, pad: int = 0, host: str = "durability.example"
) -> bytes:
    """A Msg of ``count`` events, services ``<prefix>.<first>`` onwards."""
    msg = pb.Msg()
    for i in range(first, first + count):
        event = msg.events.add()
        event.host = host
        event.service = f"{prefix}.{i}"
        event.state = "ok"
        event.metric_d = float(i)
        event.ttl = 60.0
        event.time = 1_700_000_000
        event.tags.append("durability")
        if pad:
            event.description = "d" * pad
    return msg.SerializeToString()


class Client(Int32StringReceiver):
    """Sends ``msgs`` Msgs of ``batch`` events, at most ``window`` awaiting their acks.

    Replies come in order, so the n-th reply acks the n-th Msg: the events of
    the first ``acked`` Msgs are the ones the agent has confirmed.  Given a
    ``clock``, it also times each ack: ``worstAck`` is the longest wait so
    far, and `waiting` how long the oldest unanswered Msg has waited.
    """

    MAX_LENGTH = 1 << 24

    def __init__(
        self,
        prefix: str,
        msgs: int,
        window: int = 1,
        pad: int = 0,
        onAck: Callable[[Client], None] | None = None,
        batch: int = BATCH,
        clock: Any = None,
    ) -> None:
        self.prefix, self.msgs, self.window, self.pad, self.onAck = prefix, msgs, window, pad, onAck
        self.batch, self.clock = batch, clock
        self.sent = self.acked = self.refused = 0
        self.open = False
        self.sentAt: deque[float] = deque()
        self.worstAck = 0.0
        self.done: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def services(self, msgs: int) -> set[str]:
        """The services of the events in the first ``msgs`` Msgs."""
        return {f"{self.prefix}.{i}" for i in range(msgs * self.batch)}

    def waiting(self) -> float:
        """Seconds the oldest Msg not yet answered has waited (0 if none)."""
        if self.clock is None or not self.sentAt:
            return 0.0
        return float(self.clock.seconds() - self.sentAt[0])

    def connectionMade(self) -> None:
        self.open = True
        self._fill()

    def _fill(self) -> None:
        while self.open and self.sent < self.msgs and self.sent - self.acked < self.window:
            msg = makeMsg(self.prefix, self.sent * self.batch, self.batch, self.pad)
            if self.clock is not None:
                self.sentAt.append(self.clock.seconds())
            self.sendString(msg)
            self.sent += 1

    def stringReceived(self, data: bytes) -> None:
        if self.clock is not None and self.sentAt:
            self.worstAck = max(self.worstAck, self.clock.seconds() - self.sentAt.popleft())
        if not pb.Msg.FromString(data).ok:
            self.refused += 1
            return  # the test sees it: acked stops short of msgs
        self.acked += 1
        if self.onAck is not None:
            self.onAck(self)
        if self.acked == self.msgs:
            self.done.callback(None)
        self._fill()

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.lost.callback(None)


class RawClient(protocol.Protocol):
    """Writes whatever it is told to and keeps each reply frame, parsed, in ``replies``."""

    def __init__(self) -> None:
        self.replies: list[pb.Msg] = []
        self.open = False
        self.lost: Deferred[None] = Deferred()
        self._buffer = bytearray()

    def connectionMade(self) -> None:
        self.open = True

    def send(self, payload: bytes) -> None:
        """Send ``payload`` as one frame."""
        self.transport.write(frame(payload))  # type: ignore[union-attr]

    def sendRaw(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[:4], "big")
            if len(buffer) < 4 + length:
                break
            self.replies.append(pb.Msg.FromString(bytes(buffer[4 : 4 + length])))
            del buffer[: 4 + length]

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.lost.callback(None)


async def connectClient(reactor: Any, port: int, client: Any) -> Any:
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


async def closeClient(reactor: Any, client: Any) -> None:
    if client.open:
        client.transport.loseConnection()
    await waitFor(reactor, lambda: client.lost.called, "the client's connection to close")


# -- raw protobuf, for bytes a well-behaved encoder would not write ------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def lengthDelimited(field: int, data: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(data)) + data


def rawEvent(
    host: bytes,
    service: bytes,
    description: bytes,
    attributes: dict[bytes, bytes] | None = None,
    state: bytes = b"ok",
) -> bytes:
    """One serialized Riemann Event whose text fields are exactly the bytes given."""
    parts = [
        varint(1 << 3) + varint(1_700_000_000),  # time
        lengthDelimited(2, state),
        lengthDelimited(3, service),
        lengthDelimited(4, host),
        lengthDelimited(5, description),
    ]
    for key, value in (attributes or {}).items():
        parts.append(lengthDelimited(9, lengthDelimited(1, key) + lengthDelimited(2, value)))
    return b"".join(parts)


def rawMsg(*events: bytes) -> bytes:
    """A serialized Msg holding ``events``, each already serialized."""
    return b"".join(lengthDelimited(6, event) for event in events)


# -- the agent: a real twistd process -------------------------------------------------------


class Agent(protocol.ProcessProtocol):
    """One twistd process: its output (the log) and how it ended."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[None] = Deferred()
        self.code: int | None = None
        self.signal: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    @property
    def log(self) -> str:
        return self.output.decode(errors="replace")

    @property
    def pid(self) -> int:
        return int(self.transport.pid)  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        return not self.ended.called

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        if isinstance(value, (error.ProcessDone, error.ProcessTerminated)):
            self.code, self.signal = value.exitCode, getattr(value, "signal", None)
        self.ended.callback(None)


class Agents:
    """Starts agents on a config and makes sure none outlives the test."""

    def __init__(self, reactor: Any, config: Path) -> None:
        self.reactor, self.config = reactor, config
        self.started: list[Agent] = []

    def start(self) -> Agent:
        agent = Agent()
        argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "-c", str(self.config)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.reactor.spawnProcess(agent, argv[0], argv, env=env, path=str(ROOT))
        self.started.append(agent)
        return agent

    async def startListening(self, listener: str = "relay") -> Agent:
        agent = self.start()
        await waitFor(
            self.reactor,
            lambda: f"riemann listener {listener} listening on" in agent.log or not agent.running,
            "the agent's listener",
        )
        assert agent.running, agent.log
        return agent

    async def terminate(self, agent: Agent, timeout: float = DEADLINE) -> None:
        agent.transport.signalProcess("TERM")  # type: ignore[union-attr]
        await waitFor(self.reactor, lambda: agent.ended.called, "the agent to stop", timeout)

    async def kill(self, agent: Agent) -> None:
        if agent.running:
            agent.transport.signalProcess("KILL")  # type: ignore[union-attr]
        await waitFor(self.reactor, lambda: agent.ended.called, "the agent to die")

    async def cleanup(self) -> None:
        for agent in self.started:
            if agent.running:
                try:
                    agent.transport.signalProcess("KILL")  # type: ignore[union-attr]
                except error.ProcessExitedAlready:
                    pass
        for agent in self.started:
            await waitFor(self.reactor, lambda a=agent: a.ended.called, "a leftover agent")


# -- the agent's own view: /stats and its memory ----------------------------------------


def rss(pid: int) -> int:
    """The resident memory of process ``pid`` in bytes (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def getJSON(reactor: Any, port: int, path: str, timeout: float = 5.0) -> Any:
    """GET ``path`` from the agent's web server and parse the JSON it answers."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(WebAgent(reactor, pool=pool))
    response = await client.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)
    body = await response.content()
    assert response.code == 200, (path, response.code, body[:200])
    return json.loads(body)


class HTTPPeek(protocol.Protocol):
    """Sends one GET and keeps what comes back: for streams that do not end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data = bytearray()
        self.open = False
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.open = True
        request = f"GET {self.path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        self.transport.write(request.encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.open = False
        self.lost.callback(None)

    @property
    def status(self) -> int | None:
        """The response's status code, once its status line has arrived."""
        line, crlf, _ = bytes(self.data).partition(b"\r\n")
        if not crlf:
            return None
        return int(line.split()[1])


async def peek(
    reactor: Any,
    port: int,
    path: str,
    until: Callable[[bytes], bool] = lambda data: b"\r\n\r\n" in data,
    timeout: float = 10.0,
    meanwhile: Callable[[], object] = lambda: None,
) -> HTTPPeek:
    """GET ``path``; once ``until`` holds for what arrived (or it closes), hang up.

    ``meanwhile`` is called at each poll: `Harness.check`, to fail at once.
    """
    request = HTTPPeek(path)
    await connectClient(reactor, port, request)
    try:
        await waitFor(
            reactor,
            lambda: meanwhile() or until(bytes(request.data)) or request.lost.called,
            f"an answer to GET {path}",
            timeout,
        )
    finally:
        if request.open:
            request.transport.abortConnection()  # type: ignore[union-attr]
    return request


def stat(stats: dict[str, Any] | None, group: str, name: str, key: str) -> Any:
    """``stats[group][name][key]`` from a ``/stats`` snapshot, 0 when it is not there."""
    return ((stats or {}).get(group, {}).get(name) or {}).get(key, 0)


# -- a hostile-input case: one agent, a good client, the monitors ---------------------------

MAXSIZE = 20_000  # each output buffer's bound in events
RSS_CEILING = 400 * MB  # the agent's memory never goes above this
ACK_BOUND = 10.0  # seconds the good client may wait for any one ack
GOOD_BATCH = 10  # events per Msg from the good client
OUTPUTS = ("file", "sink", "store")


def hostileConfig(
    tmp: Path, web: int, tcp: int, udp: int, sink: int, extraSources: str = ""
) -> str:
    """A relay on TCP and UDP to a JSON lines file, a Riemann sink and a store.

    The file and the sink block when full (``overflow: block``), so what a
    listener acks is what they deliver; every buffer holds at most
    `MAXSIZE` events.
    """
    return f"""
hostname: hostile.example
stagger: 0
state_dir: {tmp / "state"}
shutdown_timeout: 10
web: {{listen: "tcp:{web}:interface=127.0.0.1"}}
outputs:
  - output: duct.outputs.file.JSONLines
    name: file
    path: {tmp / "events.jsonl"}
    maxsize: {MAXSIZE}
    overflow: block
    flush_interval: 0.1
    retry_initial: 0.1
    retry_max: 0.5
  - output: duct.outputs.riemann.RiemannTCP
    name: sink
    server: 127.0.0.1
    port: {sink}
    maxsize: {MAXSIZE}
    overflow: block
    reconnect_initial: 0.1
    reconnect_max: 0.5
  - output: duct.outputs.store.Store
    name: store
    path: {tmp / "store.sqlite"}
    maxsize: {MAXSIZE}
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{tcp}:interface=127.0.0.1"
  - service: relayudp
    source: duct.sources.riemann.RiemannUDP
    port: {udp}
{extraSources}"""


class Harness:
    """One agent under hostile input, with a good client sending all along.

    `start` starts the sink (unless ``sinkUp`` is false), the agent, the
    good client on the ``relay`` listener and two monitors: the agent's RSS
    every 0.1 s and ``/stats`` every 0.2 s.  The agent is killed if its RSS
    passes `RSS_CEILING`, so a case that breaks memory fails instead of
    taking the machine with it.  `serving` waits for more good acks;
    `finish` stops the client and the agent (SIGTERM: it drains) and checks
    what every case must hold.  `cleanup` ends whatever is still running.
    """

    def __init__(
        self, reactor: Any, tmp: Path, extraSources: str = "", sinkUp: bool = True
    ) -> None:
        self.reactor, self.tmp = reactor, tmp
        self.web, self.tcp, self.sinkPort = freePort(), freePort(), freePort()
        self.udp = freePort(socket.SOCK_DGRAM)
        self.limitedPort = freePort()
        """The port ``{port}`` in ``extraSources`` stands for."""
        self.sinkUp = sinkUp
        self.config = tmp / "duct.yml"
        extra = extraSources.replace("{port}", str(self.limitedPort))
        self.config.write_text(
            hostileConfig(tmp, self.web, self.tcp, self.udp, self.sinkPort, extra)
        )
        self.jsonPath = tmp / "events.jsonl"
        self.sink = Sink(reactor, self.sinkPort, keepRaw=True)
        self.agents = Agents(reactor, self.config)
        self.agent: Agent | None = None
        self.good = Client("good", 10**9, batch=GOOD_BATCH, clock=reactor)
        self.clients: list[Any] = [self.good]
        self.peakRss = 0
        self.breached = False
        self.stats: dict[str, Any] | None = None
        self.peakDepth: dict[str, int] = {}
        self.maxDepth: dict[str, int] = {}
        self._monitors: list[LoopingCall] = []
        self._polling = False
        self._scanned, self._tail = 0, b""

    # -- running ------------------------------------------------------------------

    async def start(self, listener: str = "relay") -> Harness:
        if self.sinkUp:
            self.sink.start()
        self.agent = await self.agents.startListening(listener)
        await waitFor(self.reactor, lambda: "duct started" in self.agent.log, "the agent to start")
        for call, interval in ((self._sampleRss, 0.1), (self._pollStats, 0.2)):
            loop = LoopingCall(call)
            loop.clock = self.reactor
            loop.start(interval)
            self._monitors.append(loop)
        await connectClient(self.reactor, self.tcp, self.good)
        await self.serving(20, "the good client's first acks")
        return self

    def _sampleRss(self) -> None:
        agent = self.agent
        if agent is None or not agent.running:
            return
        now = rss(agent.pid)
        self.peakRss = max(self.peakRss, now)
        if now > RSS_CEILING and not self.breached:
            self.breached = True
            agent.transport.signalProcess("KILL")  # type: ignore[union-attr]

    def _pollStats(self) -> None:
        if self._polling or self.agent is None or not self.agent.running:
            return
        self._polling = True
        d = Deferred.fromCoroutine(self.fetchStats(timeout=2.0))
        d.addErrback(lambda _: None)  # busy or gone: the next poll tries again

        def done(_: object) -> None:
            self._polling = False

        d.addBoth(done)

    async def fetchStats(self, timeout: float = 5.0) -> dict[str, Any]:
        """A fresh ``/stats`` snapshot; it also updates the peak buffer depths."""
        stats: dict[str, Any] = await getJSON(self.reactor, self.web, "/stats", timeout)
        self.stats = stats
        for name, output in stats.get("outputs", {}).items():
            self.peakDepth[name] = max(self.peakDepth.get(name, 0), output["buffer_events"])
            self.maxDepth[name] = output["buffer_max_events"]
        return stats

    async def waitStat(
        self, check: Callable[[dict[str, Any]], Any], what: str, timeout: float = DEADLINE
    ) -> dict[str, Any]:
        """Poll ``/stats`` until ``check`` holds for a snapshot; returns that snapshot.

        Each poll first makes the checks of `check` (memory, the good client).
        """

        async def poll() -> dict[str, Any] | None:
            self.check()
            try:
                stats = await self.fetchStats()
            except Exception:  # noqa: BLE001 - not answering yet: poll again
                return None
            return stats if check(stats) else None

        result: dict[str, Any] = await waitFor(self.reactor, poll, what, timeout)
        return result

    def check(self) -> None:
        """Fail at once if memory or the good client went wrong."""
        assert not self.breached, f"agent RSS passed {RSS_CEILING // MB} MB; it was killed"
        assert self.agent is not None and self.agent.running, self.log
        good = self.good
        assert good.refused == 0, f"the good client got {good.refused} ok: false"
        assert good.open, "the good client's connection was closed"
        waited = max(good.worstAck, good.waiting())
        assert waited <= ACK_BOUND, f"the good client waited {waited:.1f}s for an ack"

    async def serving(self, acks: int = 20, what: str = "more good acks") -> None:
        """Wait for ``acks`` more acks of the good client, none waited for over `ACK_BOUND`."""
        target = self.good.acked + acks

        def more() -> bool:
            self.check()
            return self.good.acked >= target

        await waitFor(self.reactor, more, what, DEADLINE)

    @property
    def log(self) -> str:
        return self.agent.log if self.agent is not None else ""

    def written(self, needle: bytes) -> bool:
        """Whether the JSON lines file holds ``needle`` yet (read on from the last call)."""
        if not self.jsonPath.exists():
            return False
        with self.jsonPath.open("rb") as f:
            f.seek(self._scanned)
            data = self._tail + f.read()
        self._scanned += len(data) - len(self._tail)
        self._tail = data[-len(needle) :]
        return needle in data

    def jsonLines(self) -> list[dict[str, Any]]:
        text = self.jsonPath.read_text(encoding="utf-8") if self.jsonPath.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]

    async def finish(self) -> None:
        """The checks of every case: liveness, delivery of every acked event, bounds."""
        await self.serving(20, "good acks at the end of the case")
        self.check()
        good = self.good
        await self.fetchStats()
        for loop in self._monitors:
            loop.stop()
        self._monitors = []
        for client in self.clients:
            if client.open:
                client.transport.loseConnection()
        for client in self.clients:
            await waitFor(self.reactor, lambda c=client: c.lost.called, "a client to close")
        acked = good.services(good.acked)
        assert self.agent is not None
        await self.agents.terminate(self.agent)
        assert self.agent.code == 0, self.log
        written = {line["service"] for line in self.jsonLines()}
        missing = acked - written
        assert not missing, f"{len(missing)} acked events not in the JSON lines file"
        missing = acked - self.sink.counts.keys()
        assert not missing, f"{len(missing)} acked events not at the sink"
        assert self.peakRss <= RSS_CEILING, f"peak RSS {self.peakRss / MB:.0f} MB"
        assert set(self.maxDepth) == set(OUTPUTS), self.maxDepth
        for name, peak in self.peakDepth.items():
            assert peak <= self.maxDepth[name], f"output {name} held {peak} events"

    async def cleanup(self) -> None:
        for loop in self._monitors:
            loop.stop()
        self._monitors = []
        for client in self.clients:
            if client.open:
                client.transport.abortConnection()
        await self.agents.cleanup()
        await self.sink.stop()
