"""PluginHost: the plugins of ``plugins:`` at run time.

The host builds each plugin when the agent is built, runs
``initialize`` then ``start`` when it starts, and ``close`` when it stops
or when a reload removes or changes the plugin (an unchanged plugin, same
module and same options, keeps running).

An event plugin is fed by an `EventFeed`: the pipeline hands every routed
batch to `PluginHost.eventsRouted`, which keeps the events of the types the
plugin handles and queues them; the plugin is called with one batch at a
time, never from within the pipeline's own call.  At most ``max_pending``
batches wait; beyond that, events are dropped and counted (the plugin's,
never the pipeline's), and a call that fails is counted and logged at a
limited rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from duct.configuration import Item
from duct.errors import ConfigurationError, Problem
from duct.event import Event
from duct.lib.deferreds import within
from duct.lib.lograte import RateLimitedLog
from duct.plugin import EventPlugin, Plugin, callHook
from duct.protocol.riemann import EncodedEvents

log = Logger()


class EventFeed:
    """The queue between the pipeline and one event plugin, with its counters."""

    def __init__(self, plugin: EventPlugin, clock: Any, limited: RateLimitedLog) -> None:
        self.plugin = plugin
        self.clock = clock
        self.limited = limited
        types = plugin.eventTypes
        self.types: frozenset[str] | None = None if types is None else frozenset(types)
        self.maxPending: int = int(plugin.config.get("max_pending") or 16)
        self.pending: deque[list[Event]] = deque()
        self.open = False
        """True while batches are handed to the plugin (it started and is not closing)."""
        self.shutOut = False
        """True once the plugin failed to start or is closing: what comes is dropped."""
        self.busy = False
        self.calls = 0
        self.failures = 0
        self.received = 0
        self.dropped = 0
        self._call: Any = None
        self._idle: list[Deferred[None]] = []

    @property
    def pendingBatches(self) -> int:
        return len(self.pending)

    def offer(self, events: list[Event]) -> None:
        """Queue the events of the plugin's types; drop (and count) them if too many wait."""
        types = self.types
        batch = list(events) if types is None else [e for e in events if e.type in types]
        if not batch:
            return
        if self.shutOut:
            self.drop(len(batch), "the plugin is not running")
            return
        if len(self.pending) >= self.maxPending:
            self.drop(len(batch), f"{self.maxPending} batches already wait")
            return
        self.pending.append(batch)
        self._schedule()

    def drop(self, count: int, why: str) -> None:
        self.dropped += count
        self.limited.emit(
            f"drop:{self.plugin.name}",
            "plugin {plugin}: {count} events dropped: {why}",
            plugin=self.plugin.name,
            count=count,
            why=why,
        )

    def begin(self) -> None:
        """The plugin has started: hand it what waits."""
        self.open = True
        self._schedule()

    def _schedule(self) -> None:
        if self.open and not self.busy and self.pending and self._call is None:
            self._call = self.clock.callLater(0, self._next)

    def _next(self) -> None:
        self._call = None
        if not self.open or self.busy or not self.pending:
            return
        batch = self.pending.popleft()
        self.busy = True
        self.calls += 1
        self.received += len(batch)
        d = callHook(self.plugin.eventsReceived, batch)
        d.addErrback(self._failed, len(batch))
        d.addBoth(self._done)

    def _failed(self, failure: Failure, count: int) -> None:
        self.failures += 1
        self.limited.emit(
            f"fail:{self.plugin.name}",
            "plugin {plugin}: eventsReceived failed on {count} events: {why}",
            level=LogLevel.error,
            plugin=self.plugin.name,
            count=count,
            why=failure.getErrorMessage(),
            log_failure=failure,
        )

    def _done(self, _: object) -> None:
        self.busy = False
        if self.pending:
            self._schedule()
        else:
            waiters, self._idle = self._idle, []
            for d in waiters:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """Fires once nothing waits and no call is running (at once if so now)."""
        d: Deferred[None] = Deferred()
        if (not self.pending or not self.open) and not self.busy:
            d.callback(None)
        else:
            self._idle.append(d)
        return d

    def shut(self) -> None:
        """Hand nothing more to the plugin; what still waits is dropped and counted."""
        self.open = False
        self.shutOut = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        left = sum(len(batch) for batch in self.pending)
        self.pending.clear()
        if left:
            self.drop(left, "the plugin stopped before handling them")


class PluginRunner:
    """One plugin and its lifecycle: built, starting, running, closed."""

    def __init__(self, plugin: Plugin, item: Item, limited: RateLimitedLog) -> None:
        self.plugin = plugin
        self.item = item
        self.feed = (
            EventFeed(plugin, plugin.clock, limited) if isinstance(plugin, EventPlugin) else None
        )
        self.state = "built"
        self._starting: Deferred[None] | None = None

    @property
    def isRunning(self) -> bool:
        return self.state == "running"

    def start(self) -> Deferred[None]:
        """``initialize``, then ``start``; a failure is logged and the plugin stays idle."""
        self.state = "starting"
        d = callHook(self.plugin.initialize)
        d.addCallback(self._initialized)
        d.addCallbacks(self._started, self._startFailed)
        self._starting = d
        return d

    def _initialized(self, _: object) -> Deferred[Any] | None:
        if self.state != "starting":  # a stop gave up waiting and closed it: never start
            return None
        return callHook(self.plugin.start)

    def _started(self, _: object) -> None:
        self._starting = None
        if self.state != "starting":  # stopped meanwhile
            return
        self.state = "running"
        log.info("plugin {plugin} started", plugin=self.plugin.name)
        if self.feed is not None:
            self.feed.begin()

    def _startFailed(self, failure: Failure) -> None:
        self._starting = None
        self.state = "failed"
        log.failure("plugin {plugin} failed to start", failure, plugin=self.plugin.name)
        if self.feed is not None:
            self.feed.shut()

    async def stop(self, clock: Any, seconds: float) -> None:
        """Let waiting batches be handled, then ``close``; within ``seconds`` in all."""
        if self.state in ("built", "closed"):  # never initialized: nothing to close
            self.state = "closed"
            return
        deadline = clock.seconds() + seconds
        if self._starting is not None:
            await within(self._starting, seconds, clock)
        if self.feed is not None:
            if not await within(self.feed.whenIdle(), deadline - clock.seconds(), clock):
                log.warn("plugin {plugin}: still busy at close", plugin=self.plugin.name)
            self.feed.shut()
        self.state = "closing"
        closing = callHook(self.plugin.close)
        closing.addErrback(self._closeFailed)
        if not await within(closing, deadline - clock.seconds(), clock):
            log.warn("plugin {plugin}: close() has not finished; going on", plugin=self.plugin.name)
        self.state = "closed"
        log.info("plugin {plugin} closed", plugin=self.plugin.name)

    def _closeFailed(self, failure: Failure) -> None:
        log.failure("plugin {plugin}: close() failed", failure, plugin=self.plugin.name)


@dataclass
class PluginChange:
    """What a reload does to the plugins: built by `PluginHost.prepare`."""

    runners: dict[str, PluginRunner] = field(default_factory=dict)
    """The new set, by module, in order: unchanged runners and new ones."""
    added: list[PluginRunner] = field(default_factory=list)
    removed: list[PluginRunner] = field(default_factory=list)
    items: dict[str, Item] = field(default_factory=dict)
    """The new items of the plugins that stay."""


class PluginHost:
    """Owns the plugins: builds, starts, feeds, reloads and closes them.

    :param duct: the service the plugins get (``clock``, ``reactor``, ``hostname``).
    :param items: validated plugin items (`duct.configuration.Config.plugins`).
    """

    def __init__(self, duct: Any, items: Iterable[Item]) -> None:
        self.duct = duct
        self.clock: Any = duct.clock
        self.limited = RateLimitedLog(log, self.clock)
        self.running = False
        self.runners: dict[str, PluginRunner] = {}
        problems: list[Problem] = []
        for item in items:
            try:
                self.runners[item.config["plugin"]] = self.build(item)
            except ConfigurationError as e:
                problems += e.problems
        if problems:
            raise ConfigurationError(problems)
        self._feeds = self._eventFeeds()

    def build(self, item: Item) -> PluginRunner:
        """A runner for the plugin ``item`` describes; ConfigurationError if it cannot be built."""
        assert item.cls is not None, f"{item.label} was not validated"
        try:
            plugin = item.cls(dict(item.config), self.duct)
        except Exception as e:  # a plugin's constructor may fail in any way
            message = f"cannot be built: {type(e).__name__}: {e}"
            raise ConfigurationError([Problem(item.file, item.label, None, message)]) from e
        return PluginRunner(plugin, item, self.limited)

    def _eventFeeds(self) -> list[EventFeed]:
        return [r.feed for r in self.runners.values() if r.feed is not None]

    def routed(self) -> list[tuple[Plugin, Item]]:
        """Each plugin with its item, for `duct.web.site.pluginRoutes`."""
        return [(r.plugin, r.item) for r in self.runners.values()]

    # -- running ---------------------------------------------------------------------

    def startService(self) -> None:
        self.running = True
        for runner in self.runners.values():
            runner.start()

    def stopService(self, seconds: float = 10.0) -> Deferred[Any]:
        """Close every plugin (each within ``seconds``); fires when all are done."""
        self.running = False
        stops = [self._stop(runner, seconds) for runner in self.runners.values()]
        return DeferredList(stops, consumeErrors=True)

    def _stop(self, runner: PluginRunner, seconds: float) -> Deferred[None]:
        return Deferred.fromCoroutine(runner.stop(self.clock, seconds))

    def eventsRouted(self, events: list[Event] | EncodedEvents) -> None:
        """A batch the pipeline has delivered: queue it for each event plugin that wants it."""
        feeds = self._feeds
        if not feeds or not self.running:
            return
        if isinstance(events, EncodedEvents):  # decoded once (and cached) only for plugins
            events = events.decode()
        for feed in feeds:
            feed.offer(events)

    # -- reloading ---------------------------------------------------------------------

    def prepare(self, items: Iterable[Item]) -> PluginChange:
        """Build what a reload adds or changes; ConfigurationError (nothing changed) if one fails.

        A plugin is the same when its module, class and options are.
        """
        change = PluginChange()
        problems: list[Problem] = []
        for item in items:
            name = item.config["plugin"]
            old = self.runners.get(name)
            if old is not None and old.item.cls is item.cls and old.item.config == item.config:
                change.items[name] = item
                change.runners[name] = old
                continue
            try:
                runner = self.build(item)
            except ConfigurationError as e:
                problems += e.problems
                continue
            change.runners[name] = runner
            change.added.append(runner)
        if problems:
            raise ConfigurationError(problems)
        kept = {id(r) for r in change.runners.values()}
        change.removed = [r for r in self.runners.values() if id(r) not in kept]
        return change

    async def apply(self, change: PluginChange, seconds: float) -> None:
        """Switch to ``change``: close what leaves, then start what comes (a changed plugin
        is closed before its new version initializes)."""
        self.runners = dict(change.runners)
        for name, item in change.items.items():
            self.runners[name].item = item
        self._feeds = self._eventFeeds()
        if change.removed:
            await DeferredList([self._stop(r, seconds) for r in change.removed])
        if self.running:
            for runner in change.added:
                runner.start()
        if change.added or change.removed:
            log.info(
                "plugins reloaded: {added} started, {removed} closed",
                added=len(change.added),
                removed=len(change.removed),
            )


class PluginsService(Service):
    """The plugins as a child of the agent's service tree.

    It starts them after the web server and before the outputs, and closes
    them once the outputs have stopped, within what is left of the stop's
    ``shutdown_timeout`` (``remaining``).
    """

    name = "plugins"

    def __init__(self, host: PluginHost, remaining: Callable[[], float]) -> None:
        self.host = host
        self.remaining = remaining

    def startService(self) -> None:
        super().startService()
        self.host.startService()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.host.stopService(max(0.0, self.remaining()))
