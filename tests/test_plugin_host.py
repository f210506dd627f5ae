"""Plugins enabled by name at run time: lifecycle, feeding after routing, bounds, reload."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, LoopingCall
from twisted.logger import formatEvent
from twisted.web.static import Data

from duct.objects import Event, Source
from duct.plugin import BackgroundPlugin, EventPlugin
from duct.protocol.riemann import EncodedEvents, encodeEvent
from duct.service import DuctService
from duct.stats import snapshot
from duct.testing import RecordingOutput
from duct.web.metrics import families
from duct.web.site import pluginRoutes

HERE = __name__


class Mixed(Source):
    """Each poll: one metric event and one log event."""

    options = ()

    def get(self) -> list[Event]:
        return [self.createEvent("ok", None, float(self.polls)), self.createLog("app", "hello")]


class Recorder(EventPlugin):
    """Records every hook call, and every batch it is called with."""

    eventTypes: tuple[str, ...] | None = ("metric",)

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.calls: list[str] = []
        self.batches: list[list[Event]] = []

    def initialize(self) -> None:
        self.calls.append("initialize")

    def start(self) -> None:
        self.calls.append("start")

    def close(self) -> None:
        self.calls.append("close")

    def eventsReceived(self, events: list[Event]) -> None:
        self.batches.append(events)


class LogsOnly(Recorder):
    eventTypes = ("log",)


class Everything(Recorder):
    eventTypes = None


class Deferring(Recorder):
    """Its hooks return Deferreds the test fires."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.waiting: dict[str, Deferred[None]] = {}

    def _wait(self, name: str) -> Deferred[None]:
        self.calls.append(name)
        self.waiting[name] = Deferred()
        return self.waiting[name]

    def initialize(self) -> Deferred[None]:
        return self._wait("initialize")

    def start(self) -> Deferred[None]:
        return self._wait("start")

    def close(self) -> Deferred[None]:
        return self._wait("close")


class Async(Recorder):
    """``async def`` hooks, each awaiting a Deferred the test fires."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.gate: Deferred[None] = Deferred()

    async def initialize(self) -> None:
        self.calls.append("initialize")
        await self.gate
        self.calls.append("initialized")

    async def close(self) -> None:
        self.calls.append("close")
        closing: Deferred[None] = Deferred()
        self.duct.clock.callLater(1, closing.callback, None)
        await closing
        self.calls.append("closed")


class Slow(Recorder):
    """Each call waits for the test to fire it."""

    options = ()

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.inFlight: list[Deferred[None]] = []

    def eventsReceived(self, events: list[Event]) -> Deferred[None]:
        self.batches.append(events)
        self.inFlight.append(Deferred())
        return self.inFlight[-1]


class Failing(Recorder):
    def eventsReceived(self, events: list[Event]) -> None:
        self.batches.append(events)
        raise RuntimeError("plugin is broken")


class Ticking(BackgroundPlugin):
    """Counts on a LoopingCall, and serves the count at /ticks."""

    def initialize(self) -> None:
        self.ticks = 0
        self.loop = LoopingCall(self.tick)
        self.loop.clock = self.clock

    def tick(self) -> None:
        self.ticks += 1

    def start(self) -> None:
        self.loop.start(1.0, now=False)

    def close(self) -> None:
        self.loop.stop()

    def webRoutes(self) -> dict[str, Any]:
        return {"ticks": Data(str(self.config["plugin"]).encode(), "text/plain")}


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[Path]:
    """A plugin_path directory; what it imports is forgotten afterwards."""
    directory = tmp_path / "plugins"
    directory.mkdir()
    modules, path = set(sys.modules), list(sys.path)
    yield directory
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


def module(directory: Path, name: str, cls: str) -> str:
    """Write plugin module ``name`` exposing this file's ``cls``; return the name."""
    (directory / f"{name}.py").write_text(f"from {HERE} import {cls} as plugin\n")
    return name


def config(directory: Path, plugins: list[Any], **more: Any) -> dict[str, Any]:
    return {
        "hostname": "test.example",
        "stagger": 0,
        "shutdown_timeout": 5,
        "plugin_path": str(directory),
        "plugins": plugins,
        "outputs": [{"output": "duct.testing.RecordingOutput", "name": "rec", "flush_interval": 0}],
        "sources": [{"source": f"{HERE}.Mixed", "service": "mixed", "interval": 1}],
        **more,
    }


def plugin(service: DuctService, name: str) -> Any:
    return service.pluginHost.runners[name].plugin


def started(clock: Clock, settings: dict[str, Any]) -> DuctService:
    service = DuctService(settings, reactor=clock)
    service.startService()
    clock.advance(0)
    return service


def stopped(clock: Clock, service: DuctService) -> list[Any]:
    fired: list[Any] = []
    service.stopService().addBoth(fired.append)
    clock.advance(0)
    return fired


def test_sync_hooks_run_in_order_and_close_runs_at_stop(clock: Clock, plugins: Path) -> None:
    service = started(clock, config(plugins, [module(plugins, "rec", "Recorder")]))
    assert plugin(service, "rec").calls == ["initialize", "start"]
    assert stopped(clock, service) != []
    assert plugin(service, "rec").calls == ["initialize", "start", "close"]


def test_deferred_hooks_are_awaited_one_after_the_other(clock: Clock, plugins: Path) -> None:
    service = started(clock, config(plugins, [module(plugins, "dfr", "Deferring")]))
    deferring = plugin(service, "dfr")
    assert deferring.calls == ["initialize"]  # start waits for initialize
    clock.pump([1, 1, 1])  # events arrive meanwhile: they wait for the plugin to start
    assert deferring.batches == []
    deferring.waiting["initialize"].callback(None)
    assert deferring.calls == ["initialize", "start"]
    deferring.waiting["start"].callback(None)
    clock.advance(0)
    assert [len(b) for b in deferring.batches] == [1, 1, 1, 1]
    fired = stopped(clock, service)
    assert deferring.calls[-1] == "close" and fired == []  # the stop waits for close
    deferring.waiting["close"].callback(None)
    clock.advance(0)
    assert len(fired) == 1


def test_async_hooks_are_adapted(clock: Clock, plugins: Path) -> None:
    service = started(clock, config(plugins, [module(plugins, "asy", "Async")]))
    asy = plugin(service, "asy")
    assert asy.calls == ["initialize"]
    asy.gate.callback(None)
    assert asy.calls == ["initialize", "initialized", "start"]
    fired = stopped(clock, service)
    assert asy.calls[-1] == "close" and fired == []
    clock.advance(1)
    assert asy.calls[-1] == "closed" and len(fired) == 1


def test_event_plugins_get_only_their_types_after_routing(clock: Clock, plugins: Path) -> None:
    names = [
        module(plugins, "metrics", "Recorder"),
        module(plugins, "logs", "LogsOnly"),
        module(plugins, "everything", "Everything"),
    ]
    service = started(clock, config(plugins, names))
    clock.advance(1)
    clock.advance(0)
    output: RecordingOutput = service.outputs["rec"]  # type: ignore[assignment]
    assert len(output.written) == 4  # the pipeline delivered as before
    assert [[e.type for e in b] for b in plugin(service, "metrics").batches] == [["metric"]] * 2
    assert [[e.type for e in b] for b in plugin(service, "logs").batches] == [["log"]] * 2
    assert [len(b) for b in plugin(service, "everything").batches] == [2, 2]


def test_a_slow_plugin_has_a_bounded_backlog_and_counts_drops(clock: Clock, plugins: Path) -> None:
    entry = {"plugin": module(plugins, "slow", "Slow"), "max_pending": 2}
    service = started(clock, config(plugins, [entry]))
    slow = plugin(service, "slow")
    for _ in range(9):
        clock.advance(1)
    clock.advance(0)
    output: RecordingOutput = service.outputs["rec"]  # type: ignore[assignment]
    assert len(output.written) == 20  # ten polls of two events: the pipeline never waited
    assert len(slow.batches) == 1  # the first call still runs; two batches wait; 7 dropped
    entry = snapshot(service)["plugins"]["slow"]
    assert entry["calls"] == 1 and entry["pending"] == 2 and entry["dropped"] == 7
    assert entry["class"] == f"{HERE}.Slow" and entry["running"] is True
    slow.inFlight[0].callback(None)
    clock.advance(0)
    assert [b[0].metric for b in slow.batches] == [1.0, 2.0]  # the next waiting batch


def test_a_failing_plugin_is_counted_logged_at_a_limited_rate_and_called_again(
    clock: Clock, plugins: Path, observe_errors: Any
) -> None:
    service = started(clock, config(plugins, [module(plugins, "bad", "Failing")]))
    for _ in range(4):
        clock.advance(1)
    clock.advance(0)
    bad = plugin(service, "bad")
    assert len(bad.batches) == 5
    assert snapshot(service)["plugins"]["bad"]["failures"] == 5
    errors = observe_errors.take()
    assert len(errors) == 1  # the others within the ten seconds are counted, not logged
    assert "plugin bad: eventsReceived failed on 1 events" in formatEvent(errors[0])
    output: RecordingOutput = service.outputs["rec"]  # type: ignore[assignment]
    assert len(output.written) == 10


def test_encoded_batches_are_decoded_only_for_event_plugins(clock: Clock, plugins: Path) -> None:
    event = Event("ok", "relayed", None, 1.0, 60, hostname="h", evtime=5.0)
    service = started(clock, config(plugins, [module(plugins, "tick", "Ticking")], sources=[]))
    batch = EncodedEvents([encodeEvent(event)])
    service.pluginHost.eventsRouted(batch)
    assert batch._decoded is None  # a background plugin wants no events
    everything = [module(plugins, "all", "Everything")]
    other = started(clock, config(plugins, everything, sources=[]))
    other.pluginHost.eventsRouted(batch)
    clock.advance(0)
    assert [e.asDict() for e in plugin(other, "all").batches[0]] == [event.asDict()]


def test_a_background_plugin_runs_on_the_clock_and_serves_a_route(
    clock: Clock, plugins: Path
) -> None:
    service = started(clock, config(plugins, [module(plugins, "tick", "Ticking")]))
    clock.pump([1, 1, 1])
    assert plugin(service, "tick").ticks == 3
    routes, problems = pluginRoutes(service)
    assert problems == [] and "ticks" in routes
    stopped(clock, service)
    clock.pump([1, 1, 1])
    assert plugin(service, "tick").ticks == 3  # close stopped the loop
    assert snapshot(service)["plugins"]["tick"] == {"class": f"{HERE}.Ticking", "running": False}


def test_plugin_statistics_show_in_metrics(clock: Clock, plugins: Path) -> None:
    service = started(clock, config(plugins, [module(plugins, "rec", "Recorder")]))
    clock.advance(1)
    clock.advance(0)
    samples = {
        (s.name, s.labels.get("plugin")): s.value
        for family in families(snapshot(service))
        for s in family.samples
    }
    assert samples[("duct_plugin_calls_total", "rec")] == 2.0
    assert samples[("duct_plugin_events_received_total", "rec")] == 2.0
    assert samples[("duct_plugin_running", "rec")] == 1.0


def test_reload_keeps_unchanged_plugins_and_closes_removed_and_changed(
    clock: Clock, plugins: Path
) -> None:
    names = [module(plugins, n, "Recorder") for n in ("keep", "drop", "change")]
    service = started(clock, config(plugins, names))
    keep, drop, change = (plugin(service, n) for n in names)
    fired: list[Any] = []
    new = config(
        plugins,
        ["keep", {"plugin": "change", "max_pending": 3}, module(plugins, "add", "Recorder")],
    )
    service.reload(new).addBoth(fired.append)
    clock.advance(0)
    assert fired == [None]
    assert plugin(service, "keep") is keep and keep.calls == ["initialize", "start"]
    assert drop.calls[-1] == "close" and change.calls[-1] == "close"
    changed = plugin(service, "change")
    assert changed is not change and changed.config["max_pending"] == 3
    assert changed.calls == ["initialize", "start"]
    assert plugin(service, "add").calls == ["initialize", "start"]
    assert list(service.pluginHost.runners) == ["keep", "change", "add"]
    clock.advance(1)
    clock.advance(0)
    assert len(drop.batches) == 1 and len(plugin(service, "add").batches) == 1


def test_a_plugin_that_cannot_be_built_fails_the_reload_and_changes_nothing(
    clock: Clock, plugins: Path
) -> None:
    service = started(clock, config(plugins, [module(plugins, "keep", "Recorder")]))
    keep = plugin(service, "keep")
    (plugins / "broken.py").write_text(
        f"from {HERE} import Recorder\n"
        "class Broken(Recorder):\n"
        "    def __init__(self, config, duct):\n"
        "        raise ValueError('no way')\n"
        "plugin = Broken\n"
    )
    fired: list[Any] = []
    service.reload(config(plugins, ["broken"])).addBoth(fired.append)
    clock.advance(0)
    assert "plugins[0] (broken): cannot be built: ValueError: no way" in str(fired[0].value)
    assert plugin(service, "keep") is keep and keep.calls == ["initialize", "start"]


class BrokenStart(Recorder):
    def initialize(self) -> None:
        self.calls.append("initialize")
        raise OSError("cannot open the thing")


def test_a_plugin_that_fails_to_start_is_logged_and_its_events_dropped(
    clock: Clock, plugins: Path, observe_errors: Any
) -> None:
    service = started(clock, config(plugins, [module(plugins, "brk", "BrokenStart")]))
    [error] = observe_errors.take()
    assert "plugin brk failed to start" in formatEvent(error)
    clock.pump([1, 1])
    broken = plugin(service, "brk")
    assert broken.calls == ["initialize"] and broken.batches == []
    entry = snapshot(service)["plugins"]["brk"]
    assert entry["running"] is False and entry["dropped"] == 3 and entry["pending"] == 0
    stopped(clock, service)
    assert broken.calls == ["initialize", "close"]  # close may clean up a half-done setup


def test_a_stuck_plugin_holds_the_stop_for_shutdown_timeout_at_most(
    clock: Clock, plugins: Path
) -> None:
    service = started(clock, config(plugins, [module(plugins, "slow", "Slow")]))
    clock.pump([1, 1])
    slow = plugin(service, "slow")
    assert len(slow.batches) == 1  # the first call never finishes
    fired = stopped(clock, service)
    assert fired == [] and slow.calls == ["initialize", "start"]
    clock.advance(5)  # shutdown_timeout
    assert slow.calls[-1] == "close" and len(fired) == 1
    assert snapshot(service)["plugins"]["slow"]["dropped"] == 2  # what waited, counted


def test_plugins_provide_their_interfaces(clock: Clock, plugins: Path) -> None:
    from zope.interface.verify import verifyObject

    from duct.interfaces import IDuctEventPlugin, IDuctPlugin

    names = [module(plugins, "rec", "Recorder"), module(plugins, "tick", "Ticking")]
    service = DuctService(config(plugins, names), reactor=clock)
    assert verifyObject(IDuctEventPlugin, plugin(service, "rec"))
    assert verifyObject(IDuctPlugin, plugin(service, "tick"))
    assert not IDuctEventPlugin.providedBy(plugin(service, "tick"))


def test_plugin_statistics_combine_across_processes_and_become_self_events(
    clock: Clock, plugins: Path
) -> None:
    from duct.stats import combine, flatten

    service = started(clock, config(plugins, [module(plugins, "rec", "Recorder")]))
    clock.advance(1)
    clock.advance(0)
    one = snapshot(service)
    merged = combine([one, one])
    assert merged["plugins"]["rec"]["calls"] == 4 and merged["plugins"]["rec"]["running"] is True
    numbers = dict(flatten(one))
    assert numbers["plugin.rec.calls"] == 2 and numbers["plugin.rec.running"] == 1.0


def test_a_plugin_still_initializing_at_stop_is_closed_and_never_started(
    clock: Clock, plugins: Path
) -> None:
    service = started(clock, config(plugins, [module(plugins, "dfr", "Deferring")]))
    deferring = plugin(service, "dfr")
    stopped(clock, service)
    clock.advance(5)  # shutdown_timeout: initialize() has not finished
    assert deferring.calls == ["initialize", "close"]
    deferring.waiting["initialize"].callback(None)
    assert deferring.calls == ["initialize", "close"]
