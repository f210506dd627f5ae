"""``duct send`` as a user runs it: a real process sending to a real Riemann peer or agent."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from agents import Agents, Sink, freePort, waitFor
from silentserver import listenSilently
from test_riemann_source import selfSigned
from twisted.internet.utils import getProcessOutputAndValue

from duct.protocol.riemann import pb
from duct.send import PER_MSG, parseServer

ROOT = Path(__file__).resolve().parent.parent


async def duct(reactor: Any, *args: str) -> tuple[int, str, str]:
    """``duct send ARGS`` in a process of its own: its exit status, stdout and stderr."""
    argv = ["-m", "duct.cli", "send", *args]
    out, err, code = await getProcessOutputAndValue(
        sys.executable, argv, env=dict(os.environ), path=str(ROOT), reactor=reactor
    )
    return code, out.decode(), err.decode()


@pytest_twisted.async_yield_fixture
async def sink(reactor: Any) -> AsyncIterator[Sink]:
    peer = Sink(reactor, freePort(), keepRaw=True)
    peer.start()
    yield peer
    await peer.stop()


@pytest_twisted.ensureDeferred
async def test_one_event_from_options_arrives_with_every_field(reactor: Any, sink: Any) -> None:
    code, out, err = await duct(
        reactor, "--server", f"127.0.0.1:{sink.portNumber}", "--host", "web-1",
        "--service", "disk.free", "--state", "warning", "--metric", "0.125", "--ttl", "60",
        "--description", "low", "--tag", "disk", "--tag", "prod",
        "--attribute", "team=ops", "--attribute", "empty=", "--time", "1700000000.5",
    )  # fmt: skip
    assert code == 0, err
    assert "1 event acknowledged" in out
    [payload] = sink.payloads
    [event] = pb.Msg.FromString(payload).events
    assert (event.host, event.service, event.state) == ("web-1", "disk.free", "warning")
    assert event.metric_d == 0.125 and event.ttl == 60 and event.description == "low"
    assert list(event.tags) == ["disk", "prod"]
    assert {a.key: a.value for a in event.attributes} == {"team": "ops", "empty": ""}
    assert event.time == 1_700_000_000 and event.time_micros == 1_700_000_000_500_000


@pytest_twisted.ensureDeferred
async def test_json_events_go_in_msgs_of_at_most_a_thousand(
    reactor: Any, sink: Any, tmp_path: Path
) -> None:
    events = [{"service": f"s.{i}", "metric": i, "host": "h"} for i in range(2 * PER_MSG + 5)]
    body = tmp_path / "events.jsonl"
    body.write_text("\n".join(json.dumps(e) for e in events))
    code, out, err = await duct(
        reactor, "--server", f"127.0.0.1:{sink.portNumber}", "--json", str(body)
    )
    assert code == 0, err
    assert "2005 events acknowledged" in out and "in 3 Msg(s)" in out
    sizes = [len(pb.Msg.FromString(p).events) for p in sink.payloads]
    assert sizes == [PER_MSG, PER_MSG, 5]
    assert sink.received == 2005 and set(sink.counts) == {f"s.{i}" for i in range(2005)}


@pytest_twisted.ensureDeferred
async def test_a_refusal_exits_1_with_the_servers_error(reactor: Any, tmp_path: Path) -> None:
    listen = freePort()
    config = tmp_path / "duct.yml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
web: {{listen: "tcp:{freePort()}:interface=127.0.0.1"}}
outputs: [{{output: duct.outputs.null.Null}}]
sources:
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:{listen}:interface=127.0.0.1"
    max_events: 2
"""
    )
    agents = Agents(reactor, config)
    body = tmp_path / "three.json"
    body.write_text(json.dumps([{"service": f"x.{i}"} for i in range(3)]))
    try:
        await agents.startListening()
        code, out, err = await duct(reactor, "--server", f"127.0.0.1:{listen}", "--json", str(body))
        assert code == 1 and "refused" in err and "max_events" in err, err
        code, out, err = await duct(reactor, "--server", f"127.0.0.1:{listen}", "--service", "one")
        assert code == 0 and "1 event acknowledged" in out, err
    finally:
        await agents.cleanup()


@pytest_twisted.ensureDeferred
async def test_no_server_and_a_silent_one_exit_2_naming_why(reactor: Any) -> None:
    closed = freePort()
    code, _, err = await duct(reactor, "--server", f"127.0.0.1:{closed}", "--service", "x")
    assert code == 2 and f"127.0.0.1:{closed}" in err and "cannot connect" in err, err
    port = listenSilently(reactor)
    try:
        silent = f"127.0.0.1:{port.getHost().port}"
        code, _, err = await duct(reactor, "--server", silent, "--service", "x", "--timeout", "0.5")
        assert code == 2 and "no reply" in err and "0.5s" in err, err
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_over_tls_checked_against_a_ca(reactor: Any, tmp_path: Path) -> None:
    key, cert, _ = selfSigned(tmp_path)
    listen = freePort()
    sinkPort = freePort()
    sink = Sink(reactor, sinkPort)
    sink.start()
    config = tmp_path / "duct.yml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
web: {{listen: "tcp:{freePort()}:interface=127.0.0.1"}}
outputs:
  - {{output: duct.outputs.riemann.RiemannTCP, server: 127.0.0.1, port: {sinkPort}}}
sources:
  - service: tls
    source: duct.sources.riemann.RiemannTCP
    listen: "ssl:{listen}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
"""
    )
    agents = Agents(reactor, config)
    try:
        await agents.startListening("tls")
        server = f"localhost:{listen}"
        code, out, err = await duct(
            reactor, "--server", server, "--tls", "--ca", cert, "--service", "secure"
        )
        assert code == 0, err
        await waitFor(reactor, lambda: sink.counts["secure"] == 1, "the event relayed")
        code, _, err = await duct(reactor, "--server", server, "--tls", "--service", "untrusted")
        assert code == 2 and "TLS failed" in err and "certificate verify failed" in err, err
    finally:
        await agents.cleanup()
        await sink.stop()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--service", "x", "--attribute", "novalue"], "--attribute 'novalue': expected KEY=VALUE"),
        (["--state", "ok"], "give --service, or --json"),
        (["--service", "x", "--server", "host:port"], "--server 'host:port': expected HOST"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_arguments_exit_2_naming_the_option(
    reactor: Any, args: list[str], error: str
) -> None:
    code, _, err = await duct(reactor, *args)
    assert code == 2 and error in err, err


@pytest_twisted.ensureDeferred
async def test_a_bad_json_event_is_named_and_nothing_is_sent(
    reactor: Any, sink: Any, tmp_path: Path
) -> None:
    body = tmp_path / "bad.json"
    body.write_text(json.dumps([{"service": "a"}, {"service": "b", "metric": "high"}]))
    code, _, err = await duct(
        reactor, "--server", f"127.0.0.1:{sink.portNumber}", "--json", str(body)
    )
    assert code == 2 and "events[1].metric: not a number" in err, err
    assert sink.payloads == []


def test_servers_as_host_port_or_bracketed_ipv6() -> None:
    assert parseServer("riemann.example") == ("riemann.example", 5555)
    assert parseServer("10.0.0.1:5556") == ("10.0.0.1", 5556)
    assert parseServer("[::1]:5557") == ("::1", 5557)
    assert parseServer("[::1]") == ("::1", 5555)
    for bad in ("", "h:", "h:0", "h:99999", "[::1]x"):
        with pytest.raises(ValueError):
            parseServer(bad)
