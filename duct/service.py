"""DuctService: builds the sources, outputs and pipeline, starts and stops them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from duct.configuration import Config, ConfigFile, ConfigurationError, Item, Problem
from duct.interfaces import IDuct
from duct.objects import Output, Source, defaultHostname
from duct.pipeline import Pipeline, SourceFeed
from duct.pluginhost import PluginHost
from duct.web.events.ring import DEFAULT_MAX_BYTES, DEFAULT_SIZE, EventRing

if TYPE_CHECKING:
    from duct.web.server import WebServer

WATCHDOG_INTERVALS = 10
"""A watched source silent for this many intervals is recreated."""

HOUSEKEEPING_INTERVAL = 300.0
STALE_SERIES_AFTER = 600.0
"""Seconds (at least; or three of the longest interval) before a silent series is forgotten."""


@implementer(IDuct)
class DuctService(MultiService):
    """The agent: one service owning every source and output.

    :param config: a validated `Config`, or a mapping to validate.
    :param reactor: the reactor to run on.  Tests pass a `task.Clock` here
        (or as ``clock``) to drive time by hand.
    :param clock: the time source, when it differs from ``reactor``.
    """

    log = Logger()

    def __init__(self, config: Config | Mapping[str, Any], reactor: Any, clock: Any = None):
        super().__init__()
        self.config = config if isinstance(config, Config) else ConfigFile.fromDict(config)
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.hostname: str = self.config.get("hostname") or defaultHostname()
        self.outputs: dict[str, Output] = {}
        self.outputItems: dict[str, Item] = {}
        for item in self.config.outputs:
            output = self.buildOutput(item)
            self.outputs[output.name] = output
            self.outputItems[output.name] = item
        # Only a web server reads the ring: without ``web:`` the pipeline skips it.
        web = self.config.get("web")
        self.ring: EventRing | None = None
        """The recent events, numbered, that /events streams (built at start only)."""
        if web is not None:
            size = web.get("ring_size") or DEFAULT_SIZE
            self.ring = EventRing(size, web.get("ring_max_bytes") or DEFAULT_MAX_BYTES)
        self.pipeline = Pipeline(self.outputs, ring=self.ring)
        self.sources: list[Source] = []
        self._items: dict[Source, Item] = {}
        for item in self.config.sources:
            self.sources.append(self.createSource(item))
        self.pluginHost = PluginHost(self, self.config.plugins)  # duct.yml plugins: (by name)
        self.pipeline.plugins = self.pluginHost
        self._startCalls: list[Any] = []
        self._startedAt: dict[Source, float] = {}
        self.watchdog = task.LoopingCall(self.checkWatchdog)
        self.watchdog.clock = self.clock
        self.housekeeping = task.LoopingCall(self.forgetStaleSeries)
        self.housekeeping.clock = self.clock
        self._reloading = DeferredLock()
        self.web: WebServer | None = None
        """The web server (``web:``), or None without one."""
        web = self.config.get("web")
        if web is not None:
            # Imported only when used: twisted.web and prometheus_client cost memory.
            from duct.web.server import WebServer

            self.web = WebServer(self, web, self.config.path)

    @staticmethod
    def _build(item: Item, make: Any) -> Any:
        """Construct a plugin; a failure is a configuration problem naming the item."""
        assert item.cls is not None, f"{item.label} was not validated"
        try:
            return make(item.cls, dict(item.config))
        except Exception as e:  # a plugin's constructor may fail in any way
            message = f"cannot be built: {type(e).__name__}: {e}"
            raise ConfigurationError([Problem(item.file, item.label, None, message)]) from e

    def buildOutput(self, item: Item) -> Output:
        """Build the output an item describes; ConfigurationError if it cannot be."""
        output: Output = self._build(item, lambda cls, cfg: cls(cfg, self))
        return output

    def buildSource(self, item: Item) -> Source:
        """Build the source an item describes, fed to the pipeline but not yet routed."""
        feed = SourceFeed(self.pipeline)
        source: Source = self._build(item, lambda cls, cfg: cls(cfg, feed, self))
        feed.source = source
        return source

    def adoptSource(self, source: Source, item: Item) -> None:
        """Route a built source and remember the item it came from."""
        self.pipeline.register(source)
        self._items[source] = item

    def createSource(self, item: Item) -> Source:
        """Build the source an item describes and connect it to the pipeline."""
        source = self.buildSource(item)
        self.adoptSource(source, item)
        return source

    def itemOf(self, source: Source) -> Item:
        return self._items[source]

    def forgetSource(self, source: Source) -> None:
        """Take ``source`` out of the running set (its timer is stopped separately)."""
        self.sources.remove(source)
        self._items.pop(source, None)
        self._startedAt.pop(source, None)

    def accepting(self, source: Source) -> bool:
        """Whether ``source`` may poll: its blocking outputs have room."""
        return self.pipeline.accepting(source)

    # -- starting ----------------------------------------------------------------

    def startService(self) -> None:
        """Start everything; the web server first, so that a port in use stops the start.

        That raises ConfigurationError naming ``web: listen`` and the address.
        """
        super().startService()
        if self.web is not None:
            self.web.startService()
        self.pluginHost.startService()
        for output in self.outputs.values():
            self.startOutput(output)
        self.startSources(self.sources)
        self.housekeeping.start(HOUSEKEEPING_INTERVAL, now=False)
        self.watch()
        self.log.info(
            "duct started: {sources} sources, {outputs} outputs",
            sources=len(self.sources),
            outputs=len(self.outputs),
        )

    def startOutput(self, output: Output) -> None:
        """Connect or open ``output``'s destination; a failure is logged."""
        d = output.start()
        d.addErrback(self._logFailure, "output {name} failed to start", output.name)

    def startSources(self, sources: list[Source]) -> None:
        """Start ``sources``, ``stagger`` seconds apart (or after their ``start_delay``)."""
        stagger = float(self.config.get("stagger") or 0.0)
        for index, source in enumerate(sources):
            delay = source.config.get("start_delay")
            self._scheduleStart(source, index * stagger if delay is None else delay)

    def watch(self) -> None:
        """(Re)start the watchdog at the shortest interval of the watched sources."""
        if self.watchdog.running:
            self.watchdog.stop()
        watched = [s.interval for s in self.sources if s.config.get("watchdog")]
        if watched:
            self.watchdog.start(min(watched), now=False)

    def _scheduleStart(self, source: Source, delay: float) -> None:
        self._startCalls = [call for call in self._startCalls if call.active()]
        self._startedAt[source] = self.clock.seconds() + delay
        self._startCalls.append(self.clock.callLater(delay, self._startSource, source))

    def _startSource(self, source: Source) -> None:
        if source not in self._items:  # removed (by a reload) before its start
            return
        try:
            source.startTimer()
        except Exception:
            self.log.failure("source {service} failed to start", service=source.service)

    def _logFailure(self, failure: Failure, message: str, name: str) -> None:
        self.log.failure(message, failure, name=name)

    # -- the watchdog --------------------------------------------------------------

    def checkWatchdog(self) -> None:
        """Recreate each watched source that has been silent for too long."""
        now = self.clock.seconds()
        for index, source in enumerate(list(self.sources)):
            if not source.config.get("watchdog"):
                continue
            last = source.lastEventTime or self._startedAt.get(source, now)
            if now - last < WATCHDOG_INTERVALS * source.interval:
                continue
            self.log.warn(
                "source {service} emitted nothing for {silent:.0f}s; recreating it",
                service=source.service,
                silent=now - last,
            )
            # A poll still in flight may deliver late: unroute only after it.
            source.stopTimer().addBoth(self._unroute, source)
            item = self._items.pop(source)
            self._startedAt.pop(source, None)
            try:
                replacement = self.createSource(item)
            except ConfigurationError:
                self.log.failure("source {service} could not be recreated", service=source.service)
                continue
            self.sources[index] = replacement
            self._scheduleStart(replacement, 0.0)

    def _unroute(self, result: object, source: Source) -> object:
        self.pipeline.unregister(source)
        return result

    def forgetStaleSeries(self) -> None:
        """Forget aggregation samples of series that stopped reporting."""
        longest = max((s.interval for s in self.sources), default=0.0)
        horizon = max(STALE_SERIES_AFTER, 3 * longest)
        forgotten = self.pipeline.forget(self.clock.seconds() - horizon)
        if forgotten:
            self.log.debug("forgot {count} stale series", count=forgotten)

    # -- stopping ----------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self._reloading.acquire()  # a reload in progress finishes first
        try:
            await self._stopAll()
        finally:
            self._reloading.release()

    async def _stopAll(self) -> None:
        for call in self._startCalls:
            if call.active():
                call.cancel()
        self._startCalls = []
        for loop in (self.watchdog, self.housekeeping):
            if loop.running:
                loop.stop()
        timeout = float(self.config.get("shutdown_timeout") or 0.0)
        deadline = self.clock.seconds() + timeout
        # A poll that never finishes must not hold the stop forever: wait for
        # polls in flight within shutdown_timeout, then go on without them.
        polls = DeferredList([source.stopTimer() for source in self.sources], consumeErrors=True)
        if not await self._within(polls, timeout):
            self.log.warn(
                "sources {services} still polling after {timeout}s; not waiting at shutdown",
                services=", ".join(s.service for s in self.sources if s.running),
                timeout=timeout,
            )
        plugins = self.pluginHost.stopService(deadline - self.clock.seconds())  # while draining
        outputs = list(self.outputs.values())
        await self.drainOutputs(outputs, deadline - self.clock.seconds())
        total = self.reportUndelivered(outputs, "at shutdown")
        self.log.info("duct stopped; {count} events undelivered", count=total)
        await self.stopOutputs(outputs)
        await plugins
        if self.web is not None and self.web.running:  # /stats answers until the end
            await self.web.stopService()

    # -- retiring outputs (at shutdown, and when a reload removes or replaces one) ------

    async def retireOutputs(self, outputs: list[Output], seconds: float, when: str) -> int:
        """Drain ``outputs`` for up to ``seconds``, log what is left, stop them.

        Returns how many events were left undelivered.
        """
        await self.drainOutputs(outputs, seconds)
        total = self.reportUndelivered(outputs, when)
        await self.stopOutputs(outputs)
        return total

    async def drainOutputs(self, outputs: list[Output], seconds: float) -> None:
        """Let ``outputs`` deliver what they hold, for up to ``seconds``."""
        drained = DeferredList([o.flush() for o in outputs], consumeErrors=True)
        drained.addTimeout(max(0.0, seconds), self.clock, onTimeoutCancel=lambda *_: None)
        await drained

    def reportUndelivered(self, outputs: list[Output], when: str) -> int:
        """Log, per output, the events it still holds; return their total."""
        for output in outputs:
            left = output.buffer.depth
            if left and output.buffer.durable and when == "at shutdown":
                self.log.info(
                    "output {output}: {count} events undelivered, kept on disk for the next start",
                    output=output.name,
                    count=left,
                )
            elif left and output.buffer.durable:
                self.log.info(
                    "output {output}: {count} events undelivered {when}, kept on disk in {path}",
                    output=output.name,
                    count=left,
                    when=when,
                    path=getattr(output.buffer, "path", "?"),
                )
            elif left:
                self.log.warn(
                    "output {output}: {count} events left undelivered {when}, and lost",
                    output=output.name,
                    count=left,
                    when=when,
                )
        return sum(o.buffer.depth for o in outputs)

    async def stopOutputs(self, outputs: list[Output]) -> None:
        await DeferredList([maybeDeferred(o.stop) for o in outputs], consumeErrors=True)

    def _within(self, d: Deferred[Any], seconds: float) -> Deferred[bool]:
        """Fire True when ``d`` fires, or False after ``seconds``; ``d`` is not cancelled."""
        waiter: Deferred[bool] = Deferred()

        def fired(_: object) -> None:
            if not waiter.called:
                waiter.callback(True)

        d.addBoth(fired)
        waiter.addTimeout(seconds, self.clock, onTimeoutCancel=lambda *_: False)
        return waiter

    # -- reloading ------------------------------------------------------------------

    def reload(self, config: Config | Mapping[str, Any]) -> Deferred[None]:
        """Apply a new, validated configuration to the running agent.

        Only what differs is rebuilt: outputs are matched by name, sources
        by (source class, service, hostname); unchanged ones keep running
        untouched.  See `duct.reload` for the rules.  Reloads run one at a
        time, and a stop waits for the one in progress.  The Deferred fails
        with ConfigurationError (and nothing changed) if a new output or
        source cannot be built.
        """
        from duct.reload import applyConfig

        new = config if isinstance(config, Config) else ConfigFile.fromDict(config)
        d = self._reloading.run(lambda: Deferred.fromCoroutine(applyConfig(self, new)))
        return d.addCallback(self._reloadWeb)

    def _reloadWeb(self, result: None) -> None:
        """After a reload: the web server takes the new token and the plugins' routes."""
        web = self.config.get("web")
        if self.web is None:
            if web is not None:
                self.log.warn("web: the web server starts at the next restart, not on reload")
        elif web is None:
            self.log.warn("web: the web server stops at the next restart, not on reload")
        else:
            self.web.update(web)

    def reopen(self) -> None:
        """Reopen files (after logrotate), for outputs that keep one open."""
        for output in self.outputs.values():
            reopen = getattr(output, "reopen", None)
            if reopen is not None:
                reopen()
