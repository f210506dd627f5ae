"""Riemann relay benchmark: clients -> duct (listener -> output) -> acking sink.

Starts duct as a real ``twistd`` process with a RiemannTCP listener routed
to a RiemannTCP output aimed at a counting, acking sink in this process.
Four client connections send N events, each client waiting for the ack of
every Msg before sending the next (``--window`` lets each keep more Msgs
unacked), with B events per Msg.  Prints JSON:

- events_per_s: end to end, first send to the sink's last event;
- duct_cpu_ms_per_1000: duct's user+system CPU per 1,000 events;
- peak_rss_mb: duct's peak resident memory (VmHWM);
- ack_latency_ms p50/p99 as the clients saw them;
- bytes_per_buffered_event: duct's RSS growth per event while the sink is
  down and 100,000 events wait in the output's buffer;
- ceiling_cpu_ms_per_1000: protobuf decode plus re-encode of the same
  frames in one process, the floor any relay pays; ``fraction_of_ceiling``
  is that floor divided by duct's cost;
- bare_forwarder: the same clients and sink through a bare forwarder in
  its own process, written on asyncio alone: it frames, acks and forwards
  Msgs without decoding them, sending whatever it has queued at once (the
  whole backlog as one Msg, in one write).  ``rate_ratio`` is duct's
  events/s over the forwarder's and ``cpu_ratio`` duct's CPU per event over
  the forwarder's, each the median of the ratios of runs taken in turn
  (``rate_ratio_of_medians`` divides the two medians instead, and
  ``runs_events_per_s`` lists each pair);
- with ``--twisted-floor``, bare_twisted_ack_cpu_ms_per_1000: the CPU of a
  bare Twisted server that acks each frame without reading it.

Every figure is the median of ``--runs`` runs.

With ``--workers 1,2,4``, it measures ``workers: N`` instead, with one
event per Msg: for each count, the relay's events/s, the CPU per 1,000
events of the parent and its workers together (and the parent's alone),
and both as a ratio to one worker: the counts run in turn, so that each
sees the same load on the machine, and a ratio is the median of those
taken in each round (``*_of_medians`` divides the medians instead); and
how the clients' connections spread over the workers. Each client keeps
128 Msgs unacked there unless ``--window`` says otherwise: four clients
waiting for every ack cannot offer more than one worker takes, and cost
this process as much CPU per event as duct (``bench_cpu_ms_per_1000``),
where the workers need that core. Four clients with 128 Msgs in flight
stand for many agents with one each. ``--clients`` changes the number of
clients.

    .venv/bin/python bench/riemann_relay.py [--events 200000] [--runs 5]
    .venv/bin/python bench/riemann_relay.py --workers 1,2 [--events 400000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import Int32StringReceiver

from duct.protocol import riemann_pb2 as pb
from duct.protocol.riemann import ack, frame

CLIENTS = 4
WORKERS_WINDOW = 128
BIN = Path(sys.executable).parent


def makeFrames(count: int, perMsg: int, client: int) -> list[bytes]:
    frames = []
    for start in range(0, count, perMsg):
        msg = pb.Msg()
        for i in range(start, min(start + perMsg, count)):
            event = msg.events.add()
            event.host = "bench.example"
            event.service = f"bench.{client}.{i % 100}"
            event.state = "ok"
            event.metric_d = float(i)
            event.ttl = 60.0
            event.time = 1_700_000_000
            event.time_micros = 1_700_000_000_000_000 + i
            event.tags.append("bench")
        frames.append(msg.SerializeToString())
    return frames


class Sink(Int32StringReceiver):
    MAX_LENGTH = 64 * 1024 * 1024

    def stringReceived(self, data: bytes) -> None:
        self.factory.count += len(pb.Msg.FromString(data).events)  # type: ignore[attr-defined]
        self.factory.msgs += 1  # type: ignore[attr-defined]
        self.transport.write(ack())  # type: ignore[union-attr]
        if self.factory.count >= self.factory.expected and self.factory.done:  # type: ignore[attr-defined]
            d, self.factory.done = self.factory.done, None  # type: ignore[attr-defined]
            d.callback(reactor.seconds())


class SinkFactory(protocol.Factory):
    protocol = Sink

    def __init__(self) -> None:
        self.count = 0
        self.msgs = 0
        self.expected = 0
        self.done: defer.Deferred[float] | None = None


class Client(protocol.Protocol):
    """Sends its frames keeping at most ``window`` Msgs unacked; times each ack.

    With ``window`` 1 it waits for each ack before sending the next Msg.
    A wider window writes the Msgs it may send in one write, as a client
    that pipelines does, and reads acks in bulk: every ok ack is the same
    few bytes, so a run of them is compared at once, and anything else is
    parsed.  The client's own cost per event stays small beside the
    agent's, which is what a load generator sharing the agent's cores needs.
    """

    OK = ack()

    def __init__(self, frames: list[bytes], window: int = 1) -> None:
        self.frames = [frame(data) for data in frames]
        self.window = window
        self.sent = 0
        self.acked = 0
        self.sentAt: list[float] = []
        self.latencies: list[float] = []
        self.finished: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        self.sendMore()

    def sendMore(self) -> None:
        limit = min(len(self.frames), self.acked + self.window)
        if limit > self.sent:
            count = limit - self.sent
            data = (
                self.frames[self.sent] if count == 1 else b"".join(self.frames[self.sent : limit])
            )
            self.sentAt.extend([time.perf_counter()] * count)
            self.sent = limit
            self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        size = len(self.OK)
        count = len(buffer) // size
        if buffer[: count * size] != self.OK * count:
            self._checkReplies(buffer[: count * size])
        self._buffer = buffer[count * size :]
        if not count:
            return
        now = time.perf_counter()
        self.latencies.extend(now - sent for sent in self.sentAt[self.acked : self.acked + count])
        self.acked += count
        if self.acked == len(self.frames):
            self.finished.callback(None)
        else:
            self.sendMore()

    @staticmethod
    def _checkReplies(data: bytes) -> None:
        offset = 0
        while offset + 4 <= len(data):
            length = int.from_bytes(data[offset : offset + 4], "big")
            if not pb.Msg.FromString(data[offset + 4 : offset + 4 + length]).ok:
                raise RuntimeError("duct refused a Msg")
            offset += 4 + length


def startDuct(
    tmp: str,
    listenPort: int,
    sinkPort: int,
    maxsize: int,
    sync: str | None = None,
    workers: int = 0,
) -> subprocess.Popen[bytes]:
    """A relay whose output buffers in memory, or on disk under ``tmp`` with ``sync``."""
    config = Path(tmp) / "duct.yml"
    disk = f"{{type: disk, path: {tmp}/buffer, sync: {sync}}}" if sync else "{type: memory}"
    config.write_text(
        f"""
workers: {workers}
state_dir: {tmp}/state
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: sink
    server: 127.0.0.1
    port: {sinkPort}
    maxsize: {maxsize}
    max_bytes: 1073741824
    buffer: {disk}
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listenPort}:interface=127.0.0.1"
"""
    )
    argv = [
        str(BIN / "twistd"),
        "--nodaemon",
        "--pidfile=",
        f"--logfile={tmp}/duct.log",
        "duct",
        "--config",
        str(config),
    ]
    return subprocess.Popen(argv, cwd=tmp)


def freePort() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def waitForPort(port: int) -> None:
    for _ in range(200):
        try:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            p = await connectProtocol(endpoint, protocol.Protocol())
            p.transport.loseConnection()
            return
        except Exception:  # noqa: BLE001 - not listening yet
            await task.deferLater(reactor, 0.05, lambda: None)
    raise RuntimeError(f"duct did not listen on {port}")


def cpuSeconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def peakRss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def startForwarder(tmp: str, listenPort: int, sinkPort: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, __file__, "--bare-forwarder", str(listenPort), str(sinkPort)]
    return subprocess.Popen(argv, cwd=tmp)


async def waitForWorkers(tmp: str, count: int) -> None:
    """Until the parent's log says that ``count`` workers serve."""
    log = Path(tmp) / "duct.log"
    for _ in range(600):
        if log.exists() and log.read_text().count("serving; its statistics") >= count:
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    raise RuntimeError(f"{count} workers did not start")


def clientsPerWorker(parent: psutil.Process, port: int) -> list[int]:
    """How many of the clients' connections each worker holds, most first."""
    counts = []
    for child in parent.children(recursive=True):
        held = child.net_connections(kind="tcp")
        counts.append(sum(1 for c in held if c.laddr.port == port and c.status == "ESTABLISHED"))
    return sorted(counts, reverse=True)


def treeCpuSeconds(proc: psutil.Process) -> float:
    """The CPU of a process and of its children."""
    return cpuSeconds(proc) + sum(cpuSeconds(child) for child in proc.children(recursive=True))


async def relayRun(
    events: int,
    perMsg: int,
    sync: str | None = None,
    bare: bool = False,
    workers: int = 0,
    window: int = 1,
) -> dict[str, Any]:
    """Clients -> duct (or, with ``bare``, the bare forwarder) -> the sink."""
    sink = SinkFactory()
    sinkPort = reactor.listenTCP(0, sink, interface="127.0.0.1")
    listen = freePort()
    with tempfile.TemporaryDirectory() as tmp:
        if bare:
            duct = startForwarder(tmp, listen, sinkPort.getHost().port)
        else:
            sinkAt = sinkPort.getHost().port
            duct = startDuct(tmp, listen, sinkAt, maxsize=events * 2, sync=sync, workers=workers)
        try:
            await waitForPort(listen)
            if workers:
                await waitForWorkers(tmp, workers)
            proc = psutil.Process(duct.pid)
            per = events // CLIENTS
            frames = [makeFrames(per, perMsg, c) for c in range(CLIENTS)]
            sink.expected = per * CLIENTS
            sink.done = done = defer.Deferred()
            cpu0, t0 = treeCpuSeconds(proc), reactor.seconds()
            parent0 = cpuSeconds(proc)
            me = psutil.Process()
            own0 = cpuSeconds(me)
            clients = []
            for c in range(CLIENTS):
                client = Client(frames[c], window)
                endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listen)
                await connectProtocol(endpoint, client)
                clients.append(client)
            await defer.gatherResults([c.finished for c in clients])
            acked = reactor.seconds()
            t1 = await done  # may have fired already: the sink can finish first
            cpu = treeCpuSeconds(proc) - cpu0
            parentCpu = cpuSeconds(proc) - parent0
            own = cpuSeconds(me) - own0
            latencies = sorted(x for c in clients for x in c.latencies)
            spread = clientsPerWorker(proc, listen) if workers else []
            for c in clients:
                c.transport.loseConnection()
            result: dict[str, Any] = {
                "events_per_s": sink.expected / (t1 - t0),
                "cpu_ms_per_1000": cpu * 1000 / (sink.expected / 1000),
                "peak_rss_mb": peakRss(duct.pid) / 2**20,
                "ack_p50_ms": latencies[len(latencies) // 2] * 1000,
                "ack_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                "drain_ms": max(0.0, t1 - acked) * 1000,
                "events_per_sink_msg": sink.count / max(1, sink.msgs),
                "bench_cpu_ms_per_1000": own * 1000 / (sink.expected / 1000),
            }
            if workers:
                result["clients_per_worker"] = spread
                result["parent_cpu_ms_per_1000"] = parentCpu * 1000 / (sink.expected / 1000)
            return result
        finally:
            duct.terminate()
            duct.wait(30)
            await sinkPort.stopListening()


async def bufferedRun(events: int, sync: str | None = None) -> dict[str, float]:
    """RSS growth, in all and per event, while the sink is down and events queue in duct.

    With ``sync``, the buffer is on disk and ``disk_bytes_per_event`` says
    what the segment files hold per event.
    """
    deadPort = freePort()  # nothing listens here: the output cannot deliver
    listen = freePort()
    with tempfile.TemporaryDirectory() as tmp:
        duct = startDuct(tmp, listen, deadPort, maxsize=events * 2, sync=sync)
        try:
            await waitForPort(listen)
            proc = psutil.Process(duct.pid)
            await task.deferLater(reactor, 0.5, lambda: None)
            idle = proc.memory_info().rss
            client = Client(makeFrames(events, 100, 0))
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", listen), client)
            await client.finished
            await task.deferLater(reactor, 0.5, lambda: None)
            grown = proc.memory_info().rss - idle
            client.transport.loseConnection()
            segments = Path(tmp, "buffer").glob("*.seg")
            return {
                "rss_growth_mb": grown / 2**20,
                "rss_bytes_per_event": grown / events,
                "disk_bytes_per_event": sum(p.stat().st_size for p in segments) / events,
            }
        finally:
            duct.terminate()
            duct.wait(30)


class BareAck(Int32StringReceiver):
    """Acks each frame without reading it: Twisted's own cost per round trip."""

    MAX_LENGTH = 64 * 1024 * 1024
    reply = ack()

    def stringReceived(self, data: bytes) -> None:
        self.transport.write(self.reply)  # type: ignore[union-attr]


def serveBareAcks(port: int) -> None:
    reactor.listenTCP(port, protocol.Factory.forProtocol(BareAck), interface="127.0.0.1")
    reactor.run()  # type: ignore[attr-defined]


def serveBareForwarder(listenPort: int, sinkPort: int) -> None:
    """Frame, ack and forward Msgs undecoded; send all that is queued at once, as one Msg.

    Serialized Msgs that hold only events concatenate into one valid Msg,
    so the whole backlog goes to the sink in one frame and one write.
    """
    import asyncio
    import struct

    header = struct.Struct(">I")
    okReply = ack()

    async def forward() -> None:
        loop = asyncio.get_running_loop()
        queued: list[bytes] = []
        sending = False

        class SinkSide(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                pass  # the sink's acks: nothing waits for them

        sinkTransport, _ = await loop.create_connection(SinkSide, "127.0.0.1", sinkPort)

        def send() -> None:
            nonlocal sending
            sending = False
            payload = b"".join(queued)
            queued.clear()
            sinkTransport.writelines((header.pack(len(payload)), payload))

        class ClientSide(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.buffer = bytearray()

            def data_received(self, data: bytes) -> None:
                nonlocal sending
                buffer = self.buffer
                buffer += data
                frames = 0
                start = 0
                while len(buffer) - start >= 4:
                    (length,) = header.unpack_from(buffer, start)
                    end = start + 4 + length
                    if end > len(buffer):
                        break
                    queued.append(bytes(buffer[start + 4 : end]))
                    frames += 1
                    start = end
                del buffer[:start]
                if frames:
                    self.transport.write(okReply * frames)
                    if not sending:
                        sending = True
                        loop.call_soon(send)

        server = await loop.create_server(ClientSide, "127.0.0.1", listenPort)
        await server.serve_forever()

    asyncio.run(forward())


async def floorRun(events: int, perMsg: int) -> float:
    """CPU ms per 1,000 events of a bare Twisted server acking the same clients."""
    port = freePort()
    argv = [sys.executable, __file__, "--bare-ack-server", str(port)]
    server = subprocess.Popen(argv)
    try:
        await waitForPort(port)
        proc = psutil.Process(server.pid)
        per = events // CLIENTS
        frames = [makeFrames(per, perMsg, c) for c in range(CLIENTS)]
        cpu0 = cpuSeconds(proc)
        clients = []
        for c in range(CLIENTS):
            client = Client(frames[c])
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
            clients.append(client)
        await defer.gatherResults([c.finished for c in clients])
        for c in clients:
            c.transport.loseConnection()
        return (cpuSeconds(proc) - cpu0) * 1000 / (per * CLIENTS / 1000)
    finally:
        server.terminate()
        server.wait(30)


def ceiling(events: int, perMsg: int) -> float:
    """CPU ms per 1,000 events to decode and re-encode the same frames."""
    frames = makeFrames(events, perMsg, 0)
    start = time.process_time()
    for data in frames:
        msg = pb.Msg.FromString(data)
        frame(msg.SerializeToString())
        frame(pb.Msg(ok=True).SerializeToString())
    return (time.process_time() - start) * 1000 / (events / 1000)


def medianRatio(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(a / b for a, b in pairs)


async def workersMain(args: argparse.Namespace) -> None:
    """``workers: N`` for each N of ``--workers``: rates and CPU, and their ratio to 1 worker."""
    global CLIENTS
    CLIENTS = args.clients
    counts = [int(n) for n in args.workers.split(",")]
    window = args.window or WORKERS_WINDOW
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(args.runs):
        for n in counts:
            runs[n].append(await relayRun(args.events, 1, workers=n, window=window))
    report: dict[str, Any] = {"events": args.events, "runs": args.runs, "clients": CLIENTS}
    report["events_per_msg"] = 1
    report["window"] = window
    base = statistics.median(r["events_per_s"] for r in runs[counts[0]])
    baseCpu = statistics.median(r["cpu_ms_per_1000"] for r in runs[counts[0]])
    for n in counts:
        rate = statistics.median(r["events_per_s"] for r in runs[n])
        cpu = statistics.median(r["cpu_ms_per_1000"] for r in runs[n])
        rounds = list(zip(runs[n], runs[counts[0]], strict=True))
        rates = [(r["events_per_s"], b["events_per_s"]) for r, b in rounds]
        cpus = [(r["cpu_ms_per_1000"], b["cpu_ms_per_1000"]) for r, b in rounds]
        report[f"workers={n}"] = {
            "events_per_s": round(rate),
            "cpu_ms_per_1000": round(cpu, 1),
            f"rate_ratio_to_{counts[0]}": round(medianRatio(rates), 2),
            f"cpu_ratio_to_{counts[0]}": round(medianRatio(cpus), 2),
            "rate_ratio_of_medians": round(rate / base, 2),
            "cpu_ratio_of_medians": round(cpu / baseCpu, 2),
            "runs_events_per_s": [round(r["events_per_s"]) for r in runs[n]],
            "events_per_sink_msg": round(
                statistics.median(r["events_per_sink_msg"] for r in runs[n]), 1
            ),
            "bench_cpu_ms_per_1000": round(
                statistics.median(r["bench_cpu_ms_per_1000"] for r in runs[n]), 1
            ),
            "clients_per_worker": [r["clients_per_worker"] for r in runs[n]],
            "parent_cpu_ms_per_1000": round(
                statistics.median(r["parent_cpu_ms_per_1000"] for r in runs[n]), 2
            ),
        }
    print(json.dumps(report, indent=2))


async def main(reactor_: Any, args: argparse.Namespace) -> None:
    if args.workers:
        await workersMain(args)
        return
    report: dict[str, Any] = {"events": args.events, "runs": args.runs, "clients": CLIENTS}
    report["window"] = args.window or 1
    for perMsg in args.batch:
        ducts, bares = [], []
        for _ in range(args.runs):  # in turn, so that both see the same load on the machine
            ducts.append(await relayRun(args.events, perMsg, window=args.window or 1))
            bares.append(await relayRun(args.events, perMsg, bare=True, window=args.window or 1))
        result: dict[str, Any] = {
            key: round(statistics.median(r[key] for r in ducts), 3) for key in ducts[0]
        }
        result["bare_forwarder"] = {
            key: round(statistics.median(r[key] for r in bares), 3)
            for key in ("events_per_s", "cpu_ms_per_1000")
        }
        pairs = list(zip(ducts, bares, strict=True))
        rates = [(d["events_per_s"], b["events_per_s"]) for d, b in pairs]
        cpus = [(d["cpu_ms_per_1000"], b["cpu_ms_per_1000"]) for d, b in pairs]
        result["rate_ratio"] = round(medianRatio(rates), 3)
        result["cpu_ratio"] = round(medianRatio(cpus), 3)
        result["rate_ratio_of_medians"] = round(
            result["events_per_s"] / result["bare_forwarder"]["events_per_s"], 3
        )
        result["runs_events_per_s"] = [[round(d), round(b)] for d, b in rates]
        floor = statistics.median(ceiling(min(args.events, 50_000), perMsg) for _ in range(3))
        result["ceiling_cpu_ms_per_1000"] = round(floor, 3)
        result["fraction_of_ceiling"] = round(floor / result["cpu_ms_per_1000"], 3)
        if args.twisted_floor:
            bare = [await floorRun(args.events, perMsg) for _ in range(args.runs)]
            result["bare_twisted_ack_cpu_ms_per_1000"] = round(statistics.median(bare), 3)
        report[f"B={perMsg}"] = result
    if not args.no_buffered:
        buffered = [await bufferedRun(100_000) for _ in range(args.runs)]
        report["bytes_per_buffered_event"] = round(
            statistics.median(b["rss_bytes_per_event"] for b in buffered)
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Riemann relay benchmark")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 1])
    parser.add_argument("--twisted-floor", action="store_true", help="time a bare Twisted acker")
    parser.add_argument("--workers", help="compare workers: N for these counts, e.g. 1,2,4,8")
    parser.add_argument(
        "--window", type=int, help="unacked Msgs per client (1; 128 with --workers)"
    )
    parser.add_argument("--clients", type=int, default=CLIENTS, help="clients, with --workers")
    parser.add_argument("--no-buffered", action="store_true", help="skip the memory measure")
    parser.add_argument("--bare-ack-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare-forwarder", type=int, nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.bare_ack_server:
        serveBareAcks(arguments.bare_ack_server)
        sys.exit(0)
    if arguments.bare_forwarder:
        serveBareForwarder(*arguments.bare_forwarder)
        sys.exit(0)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    task.react(lambda r: defer.ensureDeferred(main(r, arguments)))
