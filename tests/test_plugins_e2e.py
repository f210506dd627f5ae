"""Plugins enabled by name, end to end: a real twistd agent loads two plugins from plugin_path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from localservers import freePort
from test_e2e import BIN, spawn, waitFor

RECORDER = '''\
import json

from duct.options import Option
from duct.plugin import EventPlugin


class Recorder(EventPlugin):
    """Appends the events it gets to a file, one JSON line each."""

    options = (Option("path", "string", None, "the file"),)

    def initialize(self):
        self.file = open(self.config["path"], "a")

    def eventsReceived(self, events):
        for event in events:
            self.file.write(json.dumps([event.service, event.type]) + "\\n")
        self.file.flush()

    async def close(self):
        self.file.close()
        with open(self.config["path"] + ".closed", "w") as marker:
            marker.write("closed")


plugin = Recorder
'''

BEACON = '''\
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource

from duct.options import Option
from duct.plugin import BackgroundPlugin


class Count(Resource):
    isLeaf = True

    def __init__(self, beacon):
        super().__init__()
        self.beacon = beacon

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return f"{self.beacon.config['greeting']} {self.beacon.ticks}".encode()


class Beacon(BackgroundPlugin):
    """Counts ticks in the background, and serves the count at /beacon."""

    options = (
        Option("greeting", "string", "hello", "the first word of /beacon"),
        Option("marker", "string", None, "file written at close"),
    )

    def initialize(self):
        self.ticks = 0
        self.loop = LoopingCall(self.tick)
        self.loop.clock = self.clock

    def tick(self):
        self.ticks += 1

    def start(self):
        self.loop.start(0.05)

    def close(self):
        self.loop.stop()
        with open(self.config["marker"], "w") as marker:
            marker.write(str(self.ticks))

    def webRoutes(self):
        return {"beacon": Count(self)}


plugin = Beacon
'''


def recorded(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("]")]


async def fetch(url: str) -> tuple[int, bytes]:
    response = await treq.get(url)
    return response.code, await response.content()


@pytest_twisted.ensureDeferred
async def test_twistd_runs_plugins_by_name_and_closes_them_at_sigterm(
    reactor: Any, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "recorder.py").write_text(RECORDER)
    (plugins / "beacon.py").write_text(BEACON)
    events, marker, port = tmp_path / "events.jsonl", tmp_path / "beacon.closed", freePort()
    config = tmp_path / "duct.yml"
    config.write_text(
        textwrap.dedent(
            f"""\
            interval: 0.2
            stagger: 0
            web: {{listen: "tcp:{port}:interface=127.0.0.1"}}
            plugin_path: plugins
            plugins:
              - {{plugin: recorder, path: "{events}"}}
              - plugin: beacon
                greeting: ahoy
                marker: "{marker}"
            outputs:
              - output: duct.outputs.null.Null
            sources:
              - service: load
                source: duct.sources.linux.basic.LoadAverage
            """
        )
    )
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "--config", str(config)]
    proto, transport = spawn(reactor, argv)
    try:
        await waitFor(reactor, lambda: len(recorded(events)) >= 3, "events the plugin recorded")
        assert {tuple(e) for e in recorded(events)} == {
            ("load", "metric"),
            ("load.5min", "metric"),
            ("load.15min", "metric"),
        }
        code, body = await fetch(f"http://127.0.0.1:{port}/beacon")
        assert code == 200 and body.startswith(b"ahoy "), body
        code, body = await fetch(f"http://127.0.0.1:{port}/stats")
        stats = json.loads(body)["plugins"]
        assert stats["recorder"]["calls"] >= 1 and stats["recorder"]["dropped"] == 0
        assert stats["beacon"] == {"class": "beacon.Beacon", "running": True}
        transport.signalProcess("TERM")
        exit = await proto.ended
    finally:
        if not proto.ended.called:
            transport.signalProcess("KILL")
    log = proto.output.decode()
    assert exit == 0, log
    assert (tmp_path / "events.jsonl.closed").read_text() == "closed"
    assert int(marker.read_text()) > 0  # the loop had ticked when close() ran
    assert "plugin recorder closed" in log and "plugin beacon closed" in log
    assert "Traceback" not in log
