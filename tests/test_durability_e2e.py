"""Durability of disk buffers, end to end: a real twistd agent and a real Riemann sink.

Each test runs duct as a ``twistd`` process whose Riemann TCP listener
relays to a RiemannTCP (or JSONLines) output with a disk buffer.  The
clients and the sink live in this process, on the real reactor: the sink is
a Riemann server that counts events by service and acks every Msg, and can
be stopped and started again on the same port.  Every event carries a
distinct service, so the sink's counts show what was lost and what was
delivered twice.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_twisted
from agents import (
    BATCH,
    MB,
    Agents,
    Client,
    Sink,
    closeClient,
    connectClient,
    freePort,
    waitFor,
)
from twisted.internet.task import LoopingCall

from duct.protocol.riemann import pb
from duct.testing import pause

MAX_IN_FLIGHT = 4  # the output's max_in_flight: Msgs a reconnection may repeat


def relayConfig(
    tmp: Path,
    listen: int,
    sink: int,
    sync: str,
    maxsize: int = 100_000,
    shutdownTimeout: float = 10.0,
) -> Path:
    config = tmp / "duct.yml"
    config.write_text(
        f"""
shutdown_timeout: {shutdownTimeout}
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: sink
    server: 127.0.0.1
    port: {sink}
    batch_size: {BATCH}
    max_in_flight: {MAX_IN_FLIGHT}
    maxsize: {maxsize}
    reconnect_initial: 0.1
    reconnect_max: 1.0
    buffer: {{type: disk, path: {tmp / "buffer"}, sync: {sync}}}
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listen}:interface=127.0.0.1"
"""
    )
    return config


def onDisk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


# -- 1. a long outage ---------------------------------------------------------------------

OUTAGE = 60.0
OUTAGE_EVENTS = 200_000


@pytest_twisted.ensureDeferred
async def test_a_long_outage_is_buffered_on_disk_in_bounded_memory(
    reactor: Any, tmp_path: Path
) -> None:
    """200,000 events arrive while the sink is down for 60 s: all are delivered after.

    The agent's RSS, sampled every 0.5 s through the outage, stays within
    50 MB of its idle RSS: the backlog is on disk, not in memory.
    """
    listen, sinkPort = freePort(), freePort()
    config = relayConfig(tmp_path, listen, sinkPort, "interval", maxsize=2 * OUTAGE_EVENTS)
    sink = Sink(reactor, sinkPort)  # down: nothing listens on its port yet
    agents = Agents(reactor, config)
    client = Client("outage", OUTAGE_EVENTS // BATCH)
    samples: list[int] = []
    try:
        agent = await agents.startListening()
        process = psutil.Process(agent.pid)
        await pause(reactor, 1.0)
        idle = process.memory_info().rss

        sampler = LoopingCall(lambda: samples.append(process.memory_info().rss))
        sampler.clock = reactor
        outageStart = reactor.seconds()
        sampler.start(0.5)
        await connectClient(reactor, listen, client)
        await waitFor(reactor, lambda: client.done.called, "acks for every Msg", OUTAGE)
        loaded = reactor.seconds() - outageStart
        await pause(reactor, max(0.0, outageStart + OUTAGE - reactor.seconds()))
        sampler.stop()
        backlog = onDisk(tmp_path / "buffer")
        assert sink.received == 0 and agent.running

        sink.start()
        drainStart = reactor.seconds()
        await waitFor(
            reactor, lambda: len(sink.counts) >= OUTAGE_EVENTS, "every event at the sink", 45
        )
        drained = reactor.seconds() - drainStart
        assert set(sink.counts) == client.services(client.msgs)
        assert sink.duplicates <= MAX_IN_FLIGHT * BATCH
        peak = max(samples)
        print(
            f"\noutage: {OUTAGE_EVENTS} events acked in {loaded:.1f}s; idle RSS {idle / MB:.1f}"
            f" MB, peak {peak / MB:.1f} MB (+{(peak - idle) / MB:.1f} MB, {len(samples)}"
            f" samples); {backlog / OUTAGE_EVENTS:.0f} bytes/event on disk; drained in"
            f" {drained:.1f}s; {sink.duplicates} duplicates"
        )
        assert peak - idle <= 50 * MB, f"RSS grew by {(peak - idle) / MB:.1f} MB"

        await closeClient(reactor, client)
        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert "duct stopped; 0 events undelivered" in agent.log
        assert "Traceback" not in agent.log
    finally:
        if client.open:
            client.transport.abortConnection()  # type: ignore[union-attr]
        await agents.cleanup()
        await sink.stop()


# -- 2. SIGKILL mid-stream ------------------------------------------------------------------

KILL_AFTER = 150  # Msgs acked before the agent is killed
STREAM_MSGS = 400


@pytest.mark.parametrize("sinkState", ["down", "slow"])
@pytest_twisted.ensureDeferred
async def test_every_acked_event_survives_sigkill(
    reactor: Any, tmp_path: Path, sinkState: str
) -> None:
    """With ``sync: always`` an ack follows the fsync: SIGKILL loses no acked event.

    The client streams with 8 Msgs awaiting their acks; at the 150th ack the
    agent is killed.  The sink is down, or up but slow (10,000 events/s), so
    a backlog waits on disk.  After a restart on the same config, every
    event the client had an ack for reaches the sink.
    """
    listen, sinkPort = freePort(), freePort()
    config = relayConfig(tmp_path, listen, sinkPort, "always")
    sink = Sink(reactor, sinkPort, ackDelay=0.01)
    agents = Agents(reactor, config)
    killed: list[tuple[int, int]] = []  # (Msgs acked, events at the sink) at the kill

    def killAt(client: Client) -> None:
        if client.acked == KILL_AFTER:
            agent.transport.signalProcess("KILL")  # type: ignore[union-attr]
            killed.append((client.acked, sink.received))

    client = Client("kill", STREAM_MSGS, window=8, onAck=killAt)
    try:
        if sinkState == "slow":
            sink.start()
        agent = await agents.startListening()
        await connectClient(reactor, listen, client)
        await waitFor(reactor, lambda: client.lost.called, "the killed agent's connection")
        await agents.kill(agent)
        assert agent.signal == 9 and killed, agent.log
        acked = client.services(client.acked)
        backlog = onDisk(tmp_path / "buffer")
        assert client.acked >= KILL_AFTER and client.refused == 0

        again = await agents.startListening()
        assert "events to replay" in again.log, again.log
        if sinkState == "down":
            assert sink.received == 0
            sink.start()
        await waitFor(reactor, lambda: acked <= sink.counts.keys(), "every acked event")
        await agents.terminate(again)  # drains what is left before it stops
        assert again.code == 0, again.log
        assert "duct stopped; 0 events undelivered" in again.log
        unacked = len(sink.counts.keys() - acked)
        print(
            f"\nsigkill, sink {sinkState}: killed at {client.acked} Msgs acked"
            f" ({len(acked)} events), {client.sent} sent, {killed[0][1]} events at the sink,"
            f" {backlog} bytes on disk; after the restart all {len(acked)} acked events"
            f" delivered, {unacked} unacked ones too, {sink.duplicates} duplicates"
        )
        assert sink.duplicates <= MAX_IN_FLIGHT * BATCH
    finally:
        if client.open:
            client.transport.abortConnection()  # type: ignore[union-attr]
        await agents.cleanup()
        await sink.stop()


# -- 3. a damaged segment ---------------------------------------------------------------

RECORD = struct.Struct(">II")


def records(path: Path) -> list[tuple[int, int, str]]:
    """The (offset, size, service) of each record of a segment file, checked."""
    data = path.read_bytes()
    found, offset = [], 0
    while offset < len(data):
        length, crc = RECORD.unpack_from(data, offset)
        payload = data[offset + 8 : offset + 8 + length]
        assert zlib.crc32(payload, zlib.crc32(data[offset : offset + 4])) == crc
        found.append((offset, 8 + length, pb.Event.FromString(payload).service))
        offset += 8 + length
    return found


@pytest_twisted.ensureDeferred
async def test_a_damaged_buffer_is_repaired_at_start(reactor: Any, tmp_path: Path) -> None:
    """Corrupt bytes mid-segment and a torn last record: the rest is delivered.

    The agent starts and runs, logs both repairs, keeps the damaged segment
    as ``*.corrupt``, and delivers every record but the two damaged ones.
    """
    listen, sinkPort = freePort(), freePort()
    config = relayConfig(tmp_path, listen, sinkPort, "interval", shutdownTimeout=1)
    buffer = tmp_path / "buffer"
    sink = Sink(reactor, sinkPort)
    agents = Agents(reactor, config)
    # ~3 KB events: 6,000 of them fill more than one 16 MiB segment.
    client = Client("seg", 60, pad=3000)
    try:
        agent = await agents.startListening()
        await connectClient(reactor, listen, client)
        await waitFor(reactor, lambda: client.done.called, "acks for every Msg")
        await closeClient(reactor, client)
        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert "output sink: 6000 events undelivered, kept on disk" in agent.log

        segments = sorted(buffer.glob("*.seg"))
        assert len(segments) >= 2, segments
        first, last = records(segments[0]), records(segments[-1])
        assert sum(len(records(s)) for s in segments) == 6000
        # Flip 32 bytes in the payload of a record in the middle of the first segment.
        offset, size, corrupted = first[len(first) // 2]
        with open(segments[0], "r+b") as f:
            f.seek(offset + size // 2)
            chunk = f.read(32)
            f.seek(offset + size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
        # Tear the last record of the last segment in half.
        offset, size, torn = last[-1]
        os.truncate(segments[-1], offset + size // 2)

        again = await agents.startListening()
        log = again.log
        assert again.running and again.code is None
        assert f"{segments[0]} is damaged (1 unreadable region(s))" in log, log
        assert f"moved it aside to {segments[0]}.corrupt" in log
        assert f"truncated a torn record at the end of {segments[-1]}" in log
        assert "5998 events to replay" in log
        assert (buffer / f"{segments[0].name}.corrupt").exists()
        assert "Traceback" not in log

        sink.start()
        expected = client.services(60) - {corrupted, torn}
        await waitFor(reactor, lambda: len(sink.counts) >= len(expected), "the readable events")
        await agents.terminate(again)
        assert again.code == 0, again.log
        assert set(sink.counts) == expected
        assert sink.duplicates == 0
        print(f"\ncorrupt: {len(segments)} segments, {len(expected)} of 6000 events delivered")
    finally:
        if client.open:
            client.transport.abortConnection()  # type: ignore[union-attr]
        await agents.cleanup()
        await sink.stop()


# -- 4. a file output's backlog across a restart -----------------------------------------


@pytest.mark.parametrize(
    "nudge",
    [
        pytest.param(False, id="without-a-new-event"),
        pytest.param(True, id="after-a-new-event"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_file_outputs_backlog_survives_a_restart(
    reactor: Any, tmp_path: Path, nudge: bool
) -> None:
    """Events a JSONLines output cannot write (no directory) are written after a restart.

    1,000 events are queued on disk while the file's directory is missing;
    the agent stops (SIGTERM) and starts again, then the directory is
    created: every event is written, once, whether or not a new event
    arrives after the restart (the replayed backlog starts the writer).
    """
    listen = freePort()
    events = tmp_path / "missing" / "events.jsonl"
    config = tmp_path / "duct.yml"
    config.write_text(
        f"""
shutdown_timeout: 1
outputs:
  - output: duct.outputs.file.JSONLines
    name: file
    path: {events}
    flush_interval: 0.1
    retry_initial: 0.1
    retry_max: 0.5
    buffer: {{type: disk, path: {tmp_path / "buffer"}, sync: always}}
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listen}:interface=127.0.0.1"
"""
    )
    agents = Agents(reactor, config)
    client = Client("file", 10)
    extra = Client("nudge", 1)
    expected = client.services(10) | (extra.services(1) if nudge else set())

    def lines() -> list[dict[str, Any]]:
        """The complete lines written so far (the agent may be writing the last one)."""
        text = events.read_text() if events.exists() else ""
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line]

    try:
        agent = await agents.startListening()
        await connectClient(reactor, listen, client)
        await waitFor(reactor, lambda: client.done.called, "acks for every Msg")
        await closeClient(reactor, client)
        await waitFor(reactor, lambda: "output file failed to write" in agent.log, "a failure")
        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert "output file: 1000 events undelivered, kept on disk" in agent.log

        again = await agents.startListening()
        assert "disk buffer file: 1000 events to replay" in again.log
        await pause(reactor, 1.0)  # two retry_max periods: time enough to fail a write
        assert not events.exists()
        events.parent.mkdir()
        if nudge:
            await connectClient(reactor, listen, extra)
            await waitFor(reactor, lambda: extra.done.called, "the ack of the new Msg")
            await closeClient(reactor, extra)
        await waitFor(reactor, lambda: len(lines()) >= len(expected), "every event in the file", 10)
        await agents.terminate(again)
        assert again.code == 0, again.log
        assert "duct stopped; 0 events undelivered" in again.log
        written = lines()
        assert len(written) == len(expected)
        assert {line["service"] for line in written} == expected
        assert all(
            line["metric"] == float(line["service"].split(".")[1])
            and line["host"] == "durability.example"
            and line["tags"] == ["durability"]
            for line in written
        )
    finally:
        for c in (client, extra):
            if c.open:
                c.transport.abortConnection()  # type: ignore[union-attr]
        await agents.cleanup()


# -- 5. reload with SIGHUP ------------------------------------------------------------------


def reloadConfig(tmp: Path, listen: int, sink: int, fileOutput: str) -> str:
    """A relay to the sink (a memory buffer) and to one JSON-lines file, ``fileOutput``."""
    return f"""
shutdown_timeout: 5
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    name: sink
    server: 127.0.0.1
    port: {sink}
    batch_size: {BATCH}
    max_in_flight: {MAX_IN_FLIGHT}
    reconnect_initial: 0.1
    reconnect_max: 1.0
  - output: duct.outputs.file.JSONLines
    name: {fileOutput}
    path: {tmp / (fileOutput + ".jsonl")}
    flush_interval: 0.1
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listen}:interface=127.0.0.1"
"""


def jsonServices(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line)["service"] for line in text.splitlines() if line]


@pytest_twisted.ensureDeferred
async def test_sighup_swaps_outputs_without_losing_what_others_hold(
    reactor: Any, tmp_path: Path
) -> None:
    """A SIGHUP removes one output and adds another while the sink is down.

    The sink's output is unchanged: the 2,000 events it holds in memory
    survive the reload and are all delivered once the sink is up.  The
    removed file output writes what it had before it stops; the added one
    receives what arrives after.  Then a SIGHUP with an invalid file is
    logged and the agent keeps relaying with the configuration it had.
    """
    listen, sinkPort = freePort(), freePort()
    config = tmp_path / "duct.yml"
    config.write_text(reloadConfig(tmp_path, listen, sinkPort, "before"))
    sink = Sink(reactor, sinkPort)  # down for now
    agents = Agents(reactor, config)
    first, second, third = Client("first", 20), Client("second", 10), Client("third", 5)
    try:
        agent = await agents.startListening()
        await connectClient(reactor, listen, first)
        await waitFor(reactor, lambda: first.done.called, "acks for the first Msgs")
        await waitFor(reactor, lambda: len(jsonServices(tmp_path / "before.jsonl")) >= 2000, "file")

        config.write_text(reloadConfig(tmp_path, listen, sinkPort, "after"))
        agent.transport.signalProcess("HUP")  # type: ignore[union-attr]
        await waitFor(reactor, lambda: "configuration reloaded" in agent.log, "the reload")
        assert "outputs: 1 added, 1 removed, 0 changed" in agent.log

        await connectClient(reactor, listen, second)
        await waitFor(reactor, lambda: second.done.called, "acks after the reload")
        sink.start()
        expected = first.services(20) | second.services(10)
        await waitFor(reactor, lambda: set(sink.counts) >= expected, "every event at the sink")
        assert set(sink.counts) == expected
        assert sink.duplicates <= MAX_IN_FLIGHT * BATCH
        assert sorted(jsonServices(tmp_path / "before.jsonl")) == sorted(first.services(20))
        after = tmp_path / "after.jsonl"
        await waitFor(reactor, lambda: len(jsonServices(after)) >= 1000, "the added output")
        assert set(jsonServices(after)) == second.services(10)

        config.write_text("outputs: [\n")  # a YAML syntax error
        agent.transport.signalProcess("HUP")  # type: ignore[union-attr]
        await waitFor(
            reactor, lambda: "keeping the running configuration" in agent.log, "a refusal"
        )
        assert agent.running
        await connectClient(reactor, listen, third)
        await waitFor(reactor, lambda: third.done.called, "acks after the refused reload")
        await waitFor(reactor, lambda: set(sink.counts) >= third.services(5), "the last events")

        for client in (first, second, third):
            await closeClient(reactor, client)
        await agents.terminate(agent)
        assert agent.code == 0, agent.log
        assert "Traceback" not in agent.log
    finally:
        for client in (first, second, third):
            if client.open:
                client.transport.abortConnection()  # type: ignore[union-attr]
        await agents.cleanup()
        await sink.stop()


@pytest_twisted.ensureDeferred
async def test_duct_reload_finds_the_running_agent(reactor: Any, tmp_path: Path) -> None:
    """``duct reload -c FILE`` validates FILE, then signals the agent running it."""
    from twisted.internet.utils import getProcessOutputAndValue

    listen, sinkPort = freePort(), freePort()
    config = tmp_path / "duct.yml"
    config.write_text(reloadConfig(tmp_path, listen, sinkPort, "before"))
    agents = Agents(reactor, config)
    try:
        agent = await agents.startListening()
        config.write_text(reloadConfig(tmp_path, listen, sinkPort, "after"))
        argv = ["-m", "duct.cli", "reload", "-c", str(config)]
        out, err, code = await getProcessOutputAndValue(sys.executable, argv, path=str(tmp_path))
        assert code == 0, err
        assert f"asked agent {agent.pid} to reload it".encode() in out
        await waitFor(reactor, lambda: "configuration reloaded" in agent.log, "the reload")
        assert "outputs: 1 added, 1 removed, 0 changed" in agent.log
        await agents.terminate(agent)
        assert agent.code == 0, agent.log
    finally:
        await agents.cleanup()
