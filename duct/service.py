"""DuctService: builds the sources, outputs and pipeline, starts and stops them.

The agent is a tree of services: the web server (``web:``) outermost, then
the plugins enabled by name, the outputs, the housekeeping timer, the SSH
connections of remote checks and the sources.  Twisted starts the
children in that order, so the web server and the listeners bind before
anything else happens, and a port in use fails the start.  They stop in
the reverse order, each once the one inside it has finished: sources
first (their last polls still find their outputs), then the outputs
deliver what they can, the plugins close, and the web server answers
until the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from duct.children import OutputsService, SourcesService
from duct.configuration import Config, ConfigFile, Item
from duct.errors import ConfigurationError, Problem
from duct.event import defaultHostname
from duct.interfaces import IDuct
from duct.lib.ssh import SSHPool
from duct.output import Output
from duct.pipeline import Pipeline, SourceFeed
from duct.pluginhost import PluginHost, PluginsService
from duct.reload import DEFAULT_STATE_DIR, applyConfig
from duct.roster import Roster, Running
from duct.source import Source
from duct.web.events.ring import DEFAULT_MAX_BYTES, DEFAULT_SIZE, EventRing

HOUSEKEEPING_INTERVAL = 300.0
STALE_SERIES_AFTER = 600.0
"""Seconds (at least; or three of the longest interval) before a silent series is forgotten."""


@implementer(IDuct)
class DuctService(MultiService):
    """The agent: the service tree owning every source and output.

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
        # Only a web server reads the ring: without ``web:`` the pipeline skips it.
        web = self.config.get("web")
        self.ring: EventRing | None = None
        """The recent events, numbered, that /events streams (built at start only)."""
        if web is not None:
            size = web.get("ring_size") or DEFAULT_SIZE
            self.ring = EventRing(size, web.get("ring_max_bytes") or DEFAULT_MAX_BYTES)
        self.pipeline = Pipeline({}, ring=self.ring)
        self.roster = Roster(self.pipeline, self.clock)
        """The running outputs and sources; every change to them goes through it."""
        for item in self.config.outputs:
            self.roster.addOutput(self.buildOutput(item), item)
        for item in self.config.sources:
            self.roster.addSource(self.buildSource(item), item)
        self.pluginHost = PluginHost(self, self.config.plugins)  # duct.yml plugins: (by name)
        self.pipeline.plugins = self.pluginHost
        self._reloading = DeferredLock()
        self._bound = False
        self.web: Any = None
        """The web server (``web:``, a `duct.web.server.WebServer`), or None without one."""
        if web is not None:
            # Imported only when used: twisted.web and prometheus_client cost memory.
            from duct.web.server import WebServer

            self.web = WebServer(self, web, self.config.path)
            self.web.setServiceParent(self)
        PluginsService(self.pluginHost, self._remaining).setServiceParent(self)
        self.outputService = OutputsService(self.roster, self.clock, self._remaining)
        self.outputService.setServiceParent(self)
        self.housekeeping = TimerService(HOUSEKEEPING_INTERVAL, self.forgetStaleSeries)
        self.housekeeping.clock = self.clock
        self.housekeeping.setServiceParent(self)
        self.ssh = SSHPool(reactor, self.clock)
        """The SSH connections of ``use_ssh`` sources, one per host; closed after the sources."""
        self.ssh.setServiceParent(self)
        self.sourceService = SourcesService(self)
        self.sourceService.setServiceParent(self)
        self._deadline = 0.0

    @property
    def outputs(self) -> dict[str, Output]:
        """The running outputs by name (the roster's; change them through it)."""
        return self.roster.outputs

    @property
    def sources(self) -> list[Source]:
        """The running sources in order (the roster's; change them through it)."""
        return self.roster.sources

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

    def itemOf(self, source: Source) -> Item:
        return self.roster.itemOf(source)

    def snapshot(self) -> Running:
        """What runs, for `duct.reload.diff`."""
        return self.roster.snapshot(self.config.get("state_dir") or DEFAULT_STATE_DIR)

    def accepting(self, source: Source) -> bool:
        """Whether ``source`` may poll: its blocking outputs have room."""
        return self.pipeline.accepting(source)

    # -- starting ----------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind the web server and the listeners (before twistd drops privileges).

        A port that cannot be bound raises ConfigurationError naming the
        item, the key and the address; nothing else has started then.
        """
        try:
            super().privilegedStartService()
        except Exception:
            if self.web is not None and self.web.port is not None:
                self.web.stopService()  # free its port: the start failed
            raise
        self._bound = True

    def startService(self) -> None:
        """Start the tree: web server, plugins, outputs, housekeeping, sources, in that order."""
        if not self._bound:  # started directly, not by twistd: bind first all the same
            self.privilegedStartService()
        super().startService()
        self.log.info(
            "duct started: {sources} sources, {outputs} outputs",
            sources=len(self.sources),
            outputs=len(self.outputs),
        )

    def startOutput(self, output: Output) -> None:
        """Connect or open ``output``'s destination; a failure is logged."""
        self.outputService.startOutput(output)

    def startSources(self, sources: list[Source]) -> None:
        """Start ``sources``: listeners now, pollers ``stagger`` seconds apart."""
        self.sourceService.startSources(sources)

    def watch(self) -> None:
        """(Re)start the watchdog at the shortest interval of the watched sources."""
        self.sourceService.watch()

    def pauseWatchdog(self) -> None:
        self.sourceService.pauseWatchdog()

    def forgetStaleSeries(self) -> None:
        """Forget aggregation samples of series that stopped reporting."""
        longest = max((s.interval for s in self.sources), default=0.0)
        horizon = max(STALE_SERIES_AFTER, 3 * longest)
        forgotten = self.pipeline.forget(self.clock.seconds() - horizon)
        if forgotten:
            self.log.debug("forgot {count} stale series", count=forgotten)

    # -- stopping ----------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Stop the children innermost first, each once the previous one has finished.

        (`MultiService` would stop them all at once.)  The whole stop takes
        at most ``shutdown_timeout`` of waiting for polls and deliveries.
        """
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self._reloading.acquire()  # a reload in progress finishes first
        try:
            timeout = float(self.config.get("shutdown_timeout") or 0.0)
            self._deadline = self.clock.seconds() + timeout
            for child in reversed(list(self)):
                if child.running:
                    await maybeDeferred(child.stopService)
            self._bound = False
        finally:
            self._reloading.release()

    def _remaining(self) -> float:
        """Seconds left of the stop's ``shutdown_timeout``."""
        return self._deadline - self.clock.seconds()

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
