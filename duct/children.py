"""The outputs and the sources of a running agent: two children of its service tree.

Both act on the agent's `duct.roster.Roster`; neither holds outputs or
sources of its own.  `duct.service.DuctService` starts the outputs before
the sources and stops them after, so that no event is produced for an
output that is not there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.errors import ConfigurationError, Problem
from duct.listening import CannotListen
from duct.objects import Output, Source
from duct.roster import Roster

WATCHDOG_INTERVALS = 10
"""A watched source silent for this many intervals is recreated."""


class OutputsService(Service):
    """Starts every output; at stop, lets them deliver, reports what is left, stops them.

    :param remaining: how many seconds of the stop's ``shutdown_timeout`` are left.
    """

    name = "outputs"
    log = Logger()

    def __init__(self, roster: Roster, clock: Any, remaining: Callable[[], float]) -> None:
        self.roster = roster
        self.clock = clock
        self.remaining = remaining

    def privilegedStartService(self) -> None:
        """Bind the outputs that listen (a scrape endpoint) before privileges drop.

        An address that cannot be bound fails the start with a
        ConfigurationError naming the output's item and key.
        """
        super().privilegedStartService()
        for output in list(self.roster.outputs.values()):
            listen = getattr(output, "listen", None)
            if not getattr(output, "listens", False) or listen is None:
                continue
            try:
                listen()
            except CannotListen as e:
                item = self.roster.outputItem(output.name)
                raise ConfigurationError([Problem(item.file, item.label, e.key, str(e))]) from None

    def startService(self) -> None:
        super().startService()
        for output in list(self.roster.outputs.values()):
            self.startOutput(output)

    def startOutput(self, output: Output) -> None:
        """Connect or open ``output``'s destination; a failure is logged."""
        d = output.start()
        d.addErrback(self._failed, output.name)

    def _failed(self, failure: Failure, name: str) -> None:
        self.log.failure("output {name} failed to start", failure, name=name)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        outputs = list(self.roster.outputs.values())
        total = await self.roster.retire(outputs, self.remaining(), "at shutdown")
        self.log.info("duct stopped; {count} events undelivered", count=total)


class SourcesService(Service):
    """Starts the sources, watches them, and stops them.

    Listeners (``Source.listens``) bind in `privilegedStartService`, or at
    the latest in `startService`, and a listener that cannot bind fails
    the start with a ConfigurationError naming its item and address.
    Pollers start ``stagger`` seconds apart (or after their
    ``start_delay``), from the clock.

    :param duct: the agent (`duct.service.DuctService`): its ``roster``,
        ``clock``, ``config`` and ``buildSource``.
    """

    name = "sources"
    log = Logger()

    def __init__(self, duct: Any) -> None:
        self.duct = duct
        self.roster: Roster = duct.roster
        self.clock = duct.clock
        self.watchdog = task.LoopingCall(self.checkWatchdog)
        self.watchdog.clock = self.clock
        self._startCalls: list[Any] = []
        self._startedAt: dict[Source, float] = {}
        self._listening: set[Source] = set()

    # -- starting ------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.bindListeners(self.roster.sources)

    def bindListeners(self, sources: list[Source]) -> None:
        """Bind the listeners among ``sources``; if one cannot, unbind the others and raise."""
        bound: list[Source] = []
        try:
            for source in sources:
                if source.listens and source not in self._listening:
                    self._listen(source)
                    bound.append(source)
        except ConfigurationError:
            for source in bound:
                self._listening.discard(source)
                source.stopTimer()
            raise

    def _listen(self, source: Source) -> None:
        item = self.roster.itemOf(source)
        try:
            source.startTimer()
        except CannotListen as e:
            raise ConfigurationError([Problem(item.file, item.label, e.key, str(e))]) from None
        except Exception as e:  # a plugin's listener may fail in any way
            message = f"cannot start: {type(e).__name__}: {e}"
            raise ConfigurationError([Problem(item.file, item.label, None, message)]) from e
        self._listening.add(source)
        self._startedAt[source] = self.clock.seconds()

    def startService(self) -> None:
        super().startService()
        self.bindListeners(self.roster.sources)
        self._schedulePollers(self.roster.sources)
        self.watch()

    def startSources(self, sources: list[Source]) -> None:
        """Start ``sources`` while running (after a reload); a listener that fails is logged."""
        for source in sources:
            if source.listens:
                try:
                    self._listen(source)
                except ConfigurationError as e:
                    self.log.error("{problem}; it is not listening", problem=str(e))
        self._schedulePollers(sources)

    def _schedulePollers(self, sources: list[Source]) -> None:
        stagger = float(self.duct.config.get("stagger") or 0.0)
        for index, source in enumerate(sources):
            if source.listens:
                continue
            delay = source.config.get("start_delay")
            self._scheduleStart(source, index * stagger if delay is None else delay)

    def _scheduleStart(self, source: Source, delay: float) -> None:
        self._startCalls = [call for call in self._startCalls if call.active()]
        self._startedAt[source] = self.clock.seconds() + delay
        self._startCalls.append(self.clock.callLater(delay, self._startSource, source))

    def _startSource(self, source: Source) -> None:
        if not self.roster.holds(source):  # removed (by a reload) before its start
            return
        try:
            source.startTimer()
        except Exception:
            self.log.failure("source {service} failed to start", service=source.service)

    # -- the watchdog --------------------------------------------------------------

    def watch(self) -> None:
        """(Re)start the watchdog at the shortest interval of the watched sources."""
        self.pauseWatchdog()
        for source in [s for s in self._startedAt if not self.roster.holds(s)]:
            self._forget(source)  # removed by a reload
        watched = [s.interval for s in self.roster.sources if s.config.get("watchdog")]
        if watched:
            self.watchdog.start(min(watched), now=False)

    def pauseWatchdog(self) -> None:
        if self.watchdog.running:
            self.watchdog.stop()

    def checkWatchdog(self) -> None:
        """Recreate each watched source that has been silent for too long."""
        now = self.clock.seconds()
        for source in list(self.roster.sources):
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
            try:
                replacement = self.duct.buildSource(self.roster.itemOf(source))
            except ConfigurationError:
                self.log.failure("source {service} could not be recreated", service=source.service)
                continue
            self.roster.replaceSource(source, replacement)
            self._forget(source)
            self._scheduleStart(replacement, 0.0)

    def _forget(self, source: Source) -> None:
        self._startedAt.pop(source, None)
        self._listening.discard(source)

    # -- stopping ------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        for call in self._startCalls:
            if call.active():
                call.cancel()
        self._startCalls = []
        self.pauseWatchdog()
        timeout = float(self.duct.config.get("shutdown_timeout") or 0.0)
        await self.roster.stopSources(list(self.roster.sources), timeout, "at shutdown")
        self._listening.clear()
