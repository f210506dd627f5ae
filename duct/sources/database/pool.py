"""What the SQL sources share: one connection in its own thread, and a deadline.

A source built on `DatabaseSource` names a DB-API driver and its connect
arguments; its queries run through a `twisted.enterprise.adbapi` pool of
one connection, so they never run on the reactor thread and never pile
up more than one connection on the server.  A query that fails, or has
not answered within ``timeout`` seconds, turns into one ``critical``
``{service}.state`` event.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, maybeDeferred

from duct.lib.tcpclient import reason, within
from duct.objects import Event, Source


class DatabaseSource(Source):
    """A source that polls a database through a DB-API driver in a thread."""

    sync = True
    driver = ""
    """The DB-API module's name, as ``import`` takes it."""
    package = ""
    """The Python package that provides ``driver``, for the error when it is missing."""

    _pool: adbapi.ConnectionPool | None = None

    def connectArgs(self) -> dict[str, Any]:
        """Keyword arguments for the driver's ``connect``."""
        raise NotImplementedError

    def pool(self) -> adbapi.ConnectionPool:
        if self._pool is None:
            try:
                importlib.import_module(self.driver)
            except ImportError as e:
                raise RuntimeError(f"{type(self).__name__} needs {self.package}: "
                                   f"pip install '{self.package}'") from e  # fmt: skip
            self._pool = adbapi.ConnectionPool(self.driver, cp_min=1, cp_max=1, cp_noisy=False,
                                               cp_reconnect=True, cp_reactor=self.duct.reactor,
                                               **self.connectArgs())  # fmt: skip
        return self._pool

    def runQuery(self, sql: str) -> Deferred[list[tuple[Any, ...]]]:
        """Run ``sql`` in the connection's thread; a test may answer here instead."""
        return self.pool().runQuery(sql)

    def query(self, sql: str) -> Deferred[list[tuple[Any, ...]]]:
        """The rows of ``sql``, or `Timeout` past ``timeout`` seconds."""
        d = maybeDeferred(self.runQuery, sql)
        return within(d, float(self.config["timeout"]), self.clock, f"query {sql[:40]!r}")

    def failed(self, error: BaseException) -> Event:
        return self.createEvent("critical", f"Connection error: {reason(error)}", 0, "state")

    def connected(self) -> Event:
        return self.createEvent("ok", "Connection ok", 1, "state")

    async def get(self) -> list[Event]:
        try:
            return [*await self.read(), self.connected()]
        except Exception as e:
            return [self.failed(e)]

    async def read(self) -> list[Event]:
        """This database's events; any exception makes the poll's one ``critical`` event."""
        raise NotImplementedError

    def stopTimer(self) -> Deferred[Any]:
        d = super().stopTimer()

        def close(result: object) -> object:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.close()
            return result

        return d.addBoth(close)
