"""The dashboard in a real browser: headless Chromium on a running twistd agent.

The agent polls the system every half second into a Store, serves the
dashboard from its web server, and listens for Riemann events.  The test
checks that the ``cpu`` chart draws points, that an event sent after the
page loaded shows up without a reload, and saves a screenshot.  It fails
(CI installs them) when chromium or chromedriver is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import error, protocol, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from duct import testing
from duct.objects import Event
from duct.protocol.riemann import decodeMsg, encodeEvent, frame, msgFromEncoded

TOKEN = "dashboard-test-token"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 30.0


class Agent(protocol.ProcessProtocol):
    """A twistd agent: its log, and whether it is still running."""

    def __init__(self) -> None:
        self.log = ""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.log += data.decode("utf-8", "replace")

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        code = (
            value.exitCode
            if isinstance(value, (error.ProcessDone, error.ProcessTerminated))
            else None
        )
        self.ended.callback(code)

    def port(self, pattern: str) -> int | None:
        """The port in the first log line matching ``pattern`` (an address follows it)."""
        found = re.search(pattern + r".*?port=(\d+)", self.log)
        return int(found.group(1)) if found else None


def waitFor(reactor: Any, check: Callable[[], Any], what: str) -> Deferred[Any]:
    """Poll ``check`` (bounded) on the reactor until it returns something true."""
    return testing.waitFor(reactor, check, what, DEADLINE, interval=0.2)


async def inThread(reactor: Any, work: Callable[[], Any]) -> Any:
    """Selenium blocks: run its calls off the reactor, which keeps reading the agent."""
    return await threads.deferToThreadPool(reactor, reactor.getThreadPool(), work)


def browser() -> Any:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("this test needs Debian's chromium and chromium-driver packages")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def sendRiemann(port: int, event: Event) -> bool:
    """Send one event to the agent's Riemann listener and read its ack (blocking)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as conn:
        conn.sendall(frame(msgFromEncoded([encodeEvent(event)])))
        header = conn.recv(4)
        size = int.from_bytes(header, "big")
        body = b""
        while len(body) < size:
            body += conn.recv(size - len(body))
    return bool(decodeMsg(body).ok)


# What the test asks of the page, in its own language.
STACK_DRAWN = """
const f = document.querySelector('figure.chart[data-group="cpu.*"]');
return f && f.dataset.type === "full-stack" && f.querySelectorAll("polygon.area").length
    && Number(f.dataset.points);
"""
STACK_LAYERS = """
return [...document.querySelectorAll('figure.chart[data-group="cpu.*"] polygon.area')]
    .map(p => p.dataset.service);
"""
LINE_DRAWN = """
const f = document.querySelector('figure.chart[data-group="cpu"]');
return [f.dataset.type, Number(f.dataset.points)];
"""
LIVE = "return document.getElementById('status').textContent === 'live';"
PROBE_ROW = """
const r = document.querySelector('tr[data-host="probe-host"][data-service="probe.alarm"]');
return r && [r.dataset.state, r.querySelector("td.metric").textContent,
             getComputedStyle(r.querySelector("td.state"), "::before").backgroundColor];
"""
REQUESTS = """
return performance.getEntriesByType("resource").map(e => e.name).concat([location.href]);
"""


@pytest_twisted.ensureDeferred
async def test_the_dashboard_draws_history_and_follows_live_events(
    reactor: Any, tmp_path: Path
) -> None:
    config = tmp_path / "duct.yml"
    config.write_text(
        f"""
interval: 0.5
stagger: 0
state_dir: {tmp_path / "state"}
web:
  listen: "tcp:0:interface=127.0.0.1"
  token: {TOKEN}
outputs:
  - output: duct.outputs.store.Store
    flush_interval: 0.2
sources:
  - service: cpu
    source: duct.sources.linux.basic.CPU
  - service: memory
    source: duct.sources.linux.basic.Memory
  - service: relay
    source: duct.sources.riemann.RiemannTCP
    listen: "tcp:0:interface=127.0.0.1"
"""
    )
    agent = Agent()
    argv = [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "duct", "-c", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    transport = reactor.spawnProcess(agent, argv[0], argv, env=env, path=str(ROOT))
    driver = None
    try:
        web = await waitFor(
            reactor, lambda: agent.port("web server listening on"), "the web server"
        )
        relay = await waitFor(
            reactor, lambda: agent.port("riemann listener relay listening on"), "the listener"
        )
        base = f"http://127.0.0.1:{web}/"
        page = f"{base}?access_token={TOKEN}"
        driver = await inThread(reactor, browser)
        # Let some CPU history reach the store first, so the page starts from it.
        await deferLater(reactor, 2.0, lambda: None)
        await inThread(reactor, lambda: driver.get(page))

        def script(code: str) -> Callable[[], Any]:
            return lambda: inThread(reactor, lambda: driver.execute_script(code))

        drawn = await pollScript(reactor, script(STACK_DRAWN), "points in the cpu chart")
        assert drawn > 0
        assert await pollScript(reactor, script(LIVE), "the live event stream")
        layers = await script(STACK_LAYERS)()
        assert {"cpu.user", "cpu.system", "cpu.idle"} <= set(layers)
        assert "cpu.guest" not in layers  # a line of its own: its prefix is longer
        kind, before = await script(LINE_DRAWN)()
        assert kind == "line" and before > 0

        # The busy line grows as events arrive, with no request for history.
        async def grown() -> bool:
            return bool((await script(LINE_DRAWN)())[1] > before)

        await pollScript(reactor, grown, "the cpu line to grow")

        # An event sent now, for a service the page has never seen.
        await script("window.loadedOnce = true;")()
        probe = Event(
            "critical", "probe.alarm", "the probe fired", 42.0, 60.0, hostname="probe-host"
        )
        assert await inThread(reactor, lambda: sendRiemann(relay, probe))
        state, metric, colour = await pollScript(reactor, script(PROBE_ROW), "the new event")
        assert (state, metric) == ("critical", "42")
        assert colour == "rgb(208, 52, 44)"  # --critical in dashboard.css
        assert await script("return window.loadedOnce === true;")()  # no reload happened
        assert await script("return document.getElementById('error').hidden;")()

        # Every request the page made went to the agent, and the API was among them.
        urls = await script(REQUESTS)()
        assert all(url.startswith(base) for url in urls), urls
        assert any(url.startswith(base + "api/series?") for url in urls), urls

        shot = tmp_path / "dashboard.png"
        assert await inThread(reactor, lambda: driver.save_screenshot(str(shot)))
        assert shot.stat().st_size > 10_000
        errors = await inThread(reactor, lambda: driver.get_log("browser"))
        assert not [e for e in errors if e["level"] == "SEVERE"], json.dumps(errors)
    finally:
        if driver is not None:
            await inThread(reactor, driver.quit)
        if not agent.ended.called:
            transport.signalProcess("TERM")
    code = await agent.ended
    assert code == 0, agent.log
    assert "Traceback" not in agent.log


async def pollScript(reactor: Any, run: Callable[[], Any], what: str) -> Any:
    waited = 0.0
    while True:
        result = await run()
        if result:
            return result
        if waited > DEADLINE:
            raise AssertionError(f"gave up waiting for {what}")
        await deferLater(reactor, 0.2, lambda: None)
        waited += 0.2
