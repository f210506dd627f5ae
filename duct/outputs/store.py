"""Store: keep recent events in a local SQLite file, and serve them to the dashboard."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from duct.defaults import stateDir
from duct.graphs import GraphMap
from duct.lib.encodeeach import describeError
from duct.objects import Event, Output
from duct.options import Option
from duct.output import Unencodable
from duct.outputs.store_db import StoreDatabase, StoreError, StoreUnavailable
from duct.stats import counter

T = TypeVar("T")

DEFAULT_RETENTION = 7 * 86400.0


class Store(Output):
    """Keep events in a local SQLite database for the dashboard and its API.

    Each event updates its series (host and service) with its last state,
    metric, time and description, and an event with a numeric metric adds
    a point to the series' history.  Points older than `retention` are
    removed every `cleanup_interval`, and so are series with no point left
    that have not reported since.  The file is `path`, by default
    ``<state_dir>/store/<name>.sqlite``; it is kept across restarts.

    Writes go in batches, one transaction each, on a thread of their own,
    and queries on another, so the reactor never waits for the disk.  A
    batch counts as delivered once committed (WAL journal, synchronous
    NORMAL: a crash of the process loses nothing, a power cut may lose
    the last commits).  A point delivered twice replaces itself.  The
    threads report back through the service's reactor, so a test drives
    the store's timers with a Clock but needs a running reactor too.

    A file that cannot be opened or written (damaged, not a database,
    read-only) is logged as an error naming the path; the batch waits in
    the buffer and is retried with backoff, so the store resumes once the
    file is fixed or moved aside.  An event with a value SQLite cannot
    store (text that is not valid Unicode, say) is dropped, counted as
    ``rejected``, and the rest of its batch written.  By default a full buffer drops its
    oldest events rather than holding back the sources.

    With the web server on, the store serves the dashboard at ``/`` and
    its query API under ``/api`` (``/api/services``, ``/api/series``).
    """

    options = (
        Option("path", "string", None, "SQLite file (default: store/NAME.sqlite under state_dir)"),
        Option(
            "retention",
            "duration",
            DEFAULT_RETENTION,
            "how long points are kept: seconds, or a duration such as 12h, 7d, 2w",
            minimum=60,
        ),
        Option(
            "cleanup_interval",
            "duration",
            600.0,
            "seconds (or a duration) between removals of expired points",
            minimum=1,
        ),
        Option("batch_size", "integer", 2000, "most events written in one transaction", minimum=1),
        Option("flush_interval", "number", 1.0, "seconds a partial batch may wait", minimum=0),
        Option(
            "overflow",
            "string",
            "drop_oldest",
            "what a full buffer does",
            choices=("block", "drop_oldest", "drop_newest"),
        ),
    )

    # fmt: off
    stats = (
        counter("points_written", "pointsWritten", "store_points_written", "points written"),
        counter("points_removed", "pointsRemoved", "store_points_removed",
                "points removed past their retention"),
        counter("series_removed", "seriesRemoved", "store_series_removed",
                "series removed with their last point"),
        counter("cleanups", "cleanups", "store_cleanups", "removals of expired points run"),
        counter("queries", "queries", "store_queries", "queries the API ran"),
        counter("bad_requests", "badRequests", "store_bad_requests",
                "API requests refused for a bad parameter"),
    )
    # fmt: on

    @property
    def connected(self) -> bool:  # type: ignore[override]
        """False while the file cannot be used, for /health."""
        return self.error is None

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.path: str = self.config["path"] or os.path.join(
            stateDir(duct), "store", f"{self.name}.sqlite"
        )
        self.retention = float(self.config["retention"])
        self.cleanupInterval = float(self.config["cleanup_interval"])
        self.reactor: Any = duct.reactor
        self.pointsWritten = 0
        self.pointsRemoved = 0
        self.seriesRemoved = 0
        self.cleanups = 0
        self.queries = 0
        self.badRequests = 0
        self.error: str | None = None
        """Why the database is unusable, or None while it works."""
        self.lastCleanup: Deferred[None] = succeed(None)
        self._writer: StoreDatabase | None = None
        self._reader: StoreDatabase | None = None
        self._writePool: ThreadPool | None = None
        self._readPool: ThreadPool | None = None
        self._shutdownTrigger: Any = None
        self._cleanupLoop = task.LoopingCall(self.cleanup)
        self._cleanupLoop.clock = self.clock

    # -- lifecycle -------------------------------------------------------------

    def createClient(self) -> Deferred[None]:
        """Start the writer and reader threads, open the file, start the cleanup timer."""
        self._writePool = self._startPool("write")
        self._readPool = self._startPool("read")
        # Should the reactor stop without stopping the service, the threads go too.
        self._shutdownTrigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self._stopPools
        )
        d = self._inWriter(self._openWriter)
        d.addErrback(lambda _: None)  # logged by _inWriter; writes retry the open
        d.addCallback(lambda _: self._startCleanup())
        return d

    def _startPool(self, role: str) -> ThreadPool:
        pool = ThreadPool(minthreads=1, maxthreads=1, name=f"duct-store-{self.name}-{role}")
        pool.start()
        return pool

    def _startCleanup(self) -> None:
        if not self.stopped and not self._cleanupLoop.running:
            self._cleanupLoop.start(self.cleanupInterval, now=True)

    def stop(self) -> Deferred[Any]:
        """Stop the cleanup timer, close both connections and stop the threads."""
        if self._cleanupLoop.running:
            self._cleanupLoop.stop()
        super().stop()
        closing = [
            self._run(pool, close)
            for pool, close in (
                (self._writePool, self._closeWriter),
                (self._readPool, self._closeReader),
            )
            if pool is not None
        ]
        d = DeferredList(closing, consumeErrors=True)
        d.addCallback(self._closed)
        return d

    def _closed(self, results: list[tuple[bool, Any]]) -> None:
        for ok, result in results:
            if not ok:
                self.log.failure("store {output}: closing failed", result, output=self.name)
        self._stopPools()

    def _stopPools(self) -> None:
        if self._shutdownTrigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(self._shutdownTrigger)
            except (ValueError, KeyError):
                pass  # already fired
            self._shutdownTrigger = None
        pools, self._writePool, self._readPool = (self._writePool, self._readPool), None, None
        for pool in pools:
            if pool is not None:
                pool.stop()

    # -- threads -----------------------------------------------------------------

    def _run(self, pool: ThreadPool, work: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self.reactor, pool, work, *args)

    def _inWriter(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``work`` on the writer thread; a StoreError there marks the store broken."""
        if self._writePool is None:
            return _failed(StoreUnavailable("the store is not running"))
        d = self._run(self._writePool, work, *args)
        d.addCallbacks(self._usable, self._broken)
        return d

    def _usable(self, result: T) -> T:
        if self.error is not None:
            self.log.info(
                "store {output}: {path} is usable again", output=self.name, path=self.path
            )
            self.error = None
        return result

    def _broken(self, failure: Failure) -> Failure:
        if failure.check(StoreError):
            message = failure.getErrorMessage()
            if message != self.error:
                self.log.error(
                    "store {output}: {error}; events wait in the buffer and writes are retried",
                    output=self.name,
                    error=message,
                )
            self.error = message
        return failure

    # Everything below named *InThread runs on the writer or the reader thread.

    def _openWriter(self) -> None:
        if self._writer is None:
            self._writer = StoreDatabase(self.path)

    def _closeWriter(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def _closeReader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _writeInThread(self, events: list[Event]) -> int:
        self._openWriter()
        assert self._writer is not None
        try:
            return self._writer.write(events)
        except Exception as e:
            bad = self._unbindableInThread(events)
            if bad:  # the events are at fault, not the file
                raise Unencodable(describeError(e.__cause__ or e), bad) from e
            if isinstance(e, StoreError):
                self._closeWriter()  # the next try opens the file afresh
            raise

    def _unbindableInThread(self, events: list[Event]) -> list[int]:
        try:
            return self._writer.unbindable(events) if self._writer is not None else []
        except Exception:
            return []

    def _cleanupInThread(self, before: float) -> tuple[int, int]:
        self._openWriter()
        assert self._writer is not None
        return self._writer.cleanup(before)

    def _readInThread(self, work: Callable[[StoreDatabase], T]) -> T:
        if self._reader is None:
            self._reader = StoreDatabase(self.path, readOnly=True)
        try:
            return work(self._reader)
        except StoreError:
            self._closeReader()
            raise

    # -- writing -------------------------------------------------------------------

    def writeBatch(self, events: list[Event]) -> Deferred[None]:
        return self._inWriter(self._writeInThread, events).addCallback(self._counted)

    def _counted(self, points: int) -> None:
        self.pointsWritten += points

    def cleanup(self) -> Deferred[None]:
        """Remove points older than `retention`; the Deferred never fails."""
        before = self.clock.seconds() - self.retention
        d = self._inWriter(self._cleanupInThread, before)
        self.lastCleanup = d.addCallbacks(self._cleaned, self._cleanupFailed)
        return self.lastCleanup

    def _cleaned(self, removed: tuple[int, int]) -> None:
        points, series = removed
        self.cleanups += 1
        self.pointsRemoved += points
        self.seriesRemoved += series
        if points or series:
            self.log.debug(
                "store {output}: removed {points} points and {series} series",
                output=self.name,
                points=points,
                series=series,
            )

    def _cleanupFailed(self, failure: Failure) -> None:
        if not failure.check(StoreError):  # a StoreError is already logged
            self.log.failure("store {output}: cleanup failed", failure, output=self.name)

    # -- reading ---------------------------------------------------------------------

    def query(self, work: Callable[[StoreDatabase], T]) -> Deferred[T]:
        """Run ``work(database)`` on the reader thread.

        Fails with StoreUnavailable while the file has not been opened, and
        with StoreError if the query cannot be run.
        """
        if self._readPool is None or self.stopped:
            return _failed(StoreUnavailable("the store is not running"))
        self.queries += 1
        return self._run(self._readPool, self._readInThread, work)

    def graphs(self) -> GraphMap:
        """The graph types the running sources declare."""
        return GraphMap.fromSources(getattr(self.duct, "sources", None) or ())

    def webRoutes(self) -> Mapping[str, Any]:
        """The dashboard at ``/`` and its query API under ``/api``."""
        from duct.dashboard.api import ApiResource
        from duct.dashboard.page import DashboardPage

        return {"": DashboardPage(), "api": ApiResource(self)}


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d
