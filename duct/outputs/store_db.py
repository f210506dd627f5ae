"""The SQLite side of the local store: schema, writes, queries, retention.

`StoreDatabase` is blocking and belongs to one thread: `duct.outputs.store`
keeps one for writing on its writer thread and one for reading on its
reader thread, never touching either from the reactor.

Two tables: ``series`` maps (host, service) to an id and keeps the last
state, metric, time, description and ttl seen; ``points`` holds
(series, time, metric), clustered by (series, time) so that a series'
range is one index walk.  A point delivered twice (at least once) replaces
itself.  WAL mode lets the reader run while the writer commits.
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from duct.lib.json import finiteNumber

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    service TEXT NOT NULL,
    state TEXT,
    metric REAL,
    time REAL NOT NULL,
    description TEXT,
    ttl REAL,
    UNIQUE (host, service)
);
CREATE TABLE IF NOT EXISTS points (
    series INTEGER NOT NULL,
    time REAL NOT NULL,
    metric REAL NOT NULL,
    PRIMARY KEY (series, time)
) WITHOUT ROWID;
"""

_UPSERT_SERIES = """
INSERT INTO series (host, service, state, metric, time, description, ttl)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host, service) DO UPDATE SET
    state = excluded.state, metric = excluded.metric, time = excluded.time,
    description = excluded.description, ttl = excluded.ttl
WHERE excluded.time >= series.time
"""

# Bucket i of n covers [since + i*width, since + (i+1)*width); the last one
# also takes points at `until` itself.  Each bucket gives its mean time and
# mean metric, so a bucket holding one point gives that point unchanged.
# AVG sums first, so large metrics (1e308 twice) overflow to inf, or to NaN,
# which SQLite returns as NULL: such a bucket is averaged again by `_mean`.
_BUCKET = "MIN(CAST((time - :since) / :width AS INTEGER), :last)"
_RANGE = "series = :series AND time >= :since AND time <= :until"
_BUCKETED = f"""
SELECT AVG(time), AVG(metric), {_BUCKET} AS bucket FROM points
WHERE {_RANGE}
GROUP BY bucket
ORDER BY 1
"""
_BUCKET_METRICS = f"SELECT metric FROM points WHERE {_RANGE} AND {_BUCKET} = :bucket"


def _mean(values: list[float]) -> float:
    """The mean of finite ``values``, finite itself however large they are.

    Each value is divided by the count before they are added, exactly
    (`math.fsum`), so the sum cannot pass the largest value's magnitude
    but by rounding, which is clamped.
    """
    if not values:
        return math.nan
    count = len(values)
    try:
        mean = math.fsum(value / count for value in values)
    except OverflowError:
        mean = math.copysign(math.inf, values[0])
    if math.isinf(mean):
        mean = math.copysign(sys.float_info.max, mean)
    return mean


class StoreError(Exception):
    """The database cannot be opened or used; the message says why and what to do."""


class StoreUnavailable(Exception):
    """The store is not running, so there is nothing to query."""


class StoreDatabase:
    """One connection to the store's SQLite file.

    :param path: the database file; its directory is created if missing.
    :param readOnly: open for queries only (the writer creates the schema).
    """

    def __init__(self, path: str, readOnly: bool = False) -> None:
        self.path = path
        self.readOnly = readOnly
        self._ids: dict[tuple[str, str], int] = {}
        try:
            if readOnly:  # never create the file: only the writer does
                target, uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=rw", True
            else:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                target, uri = path, False
            self.db = sqlite3.connect(target, isolation_level=None, timeout=30.0, uri=uri)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open {path}: {e}") from e
        try:
            self._prepare()
        except sqlite3.Error as e:
            self.db.close()
            raise self._explain(e) from e

    def _explain(self, error: sqlite3.Error) -> StoreError:
        message = str(error)
        if isinstance(error, sqlite3.DatabaseError) and (
            "not a database" in message or "malformed" in message
        ):
            return StoreError(
                f"{self.path} is damaged ({message}); move it aside and a new store is started"
            )
        return StoreError(f"{self.path}: {message}")

    def _prepare(self) -> None:
        db = self.db
        if self.readOnly:
            db.execute("PRAGMA query_only = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, not {SCHEMA_VERSION}")
            return
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL journaling (got {mode})")
        # In WAL mode NORMAL survives a crash of the process; a power cut may
        # lose the last commits.
        db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} was written by a newer duct (this one knows "
                f"{SCHEMA_VERSION})"
            )
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def _run(self, work: Any, *args: Any) -> Any:
        try:
            return work(*args)
        except sqlite3.Error as e:
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._ids.clear()
            raise self._explain(e) from e
        except Exception:  # a value that cannot be bound, say: no transaction left open
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._ids.clear()
            raise

    # -- writing -----------------------------------------------------------------

    def write(self, events: Iterable[Any]) -> int:
        """Record a batch of events in one transaction; return the points written.

        Each event updates its series' last state.  Events whose metric is a
        finite number also add a point; the others (logs, NaN) only update
        the state.
        """
        return int(self._run(self._write, events))

    def unbindable(self, events: Sequence[Any]) -> list[int]:
        """The indices of the events whose values SQLite cannot take; nothing is written.

        Each event's row is bound to a SELECT on its own: slow, for finding
        the events at fault once a batch failed.
        """
        bad = []
        for index, event in enumerate(events):
            try:
                self.db.execute("SELECT ?, ?, ?, ?, ?, ?, ?", _row(event)).fetchone()
            except Exception:
                bad.append(index)
        return bad

    def _write(self, events: Iterable[Any]) -> int:
        latest: dict[tuple[str, str], tuple[Any, ...]] = {}
        points: list[tuple[tuple[str, str], float, float]] = []
        for event in events:
            row = _row(event)
            key, when, metric = (row[0], row[1]), row[4], row[3]
            previous = latest.get(key)
            if previous is None or when >= previous[4]:
                latest[key] = row
            if metric is not None:
                points.append((key, when, metric))
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.executemany(_UPSERT_SERIES, latest.values())
        ids = self._seriesIds(latest)
        db.executemany(
            "INSERT OR REPLACE INTO points (series, time, metric) VALUES (?, ?, ?)",
            [(ids[key], when, metric) for key, when, metric in points],
        )
        db.execute("COMMIT")
        return len(points)

    def _seriesIds(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        ids = self._ids
        for key in keys:
            if key not in ids:
                row = self.db.execute(
                    "SELECT id FROM series WHERE host = ? AND service = ?", key
                ).fetchone()
                ids[key] = row[0]
        return ids

    def cleanup(self, before: float) -> tuple[int, int]:
        """Remove points older than ``before``, then series left with no point
        and no news since then.  Returns (points, series) removed."""
        return tuple(self._run(self._cleanup, before))

    def _cleanup(self, before: float) -> tuple[int, int]:
        db = self.db
        ids = [row[0] for row in db.execute("SELECT id FROM series")]
        points = 0
        db.execute("BEGIN IMMEDIATE")
        for series in ids:  # one range walk of the primary key per series
            points += db.execute(
                "DELETE FROM points WHERE series = ? AND time < ?", (series, before)
            ).rowcount
        removed = db.execute(
            "DELETE FROM series WHERE time < ? "
            "AND NOT EXISTS (SELECT 1 FROM points WHERE points.series = series.id)",
            (before,),
        ).rowcount
        db.execute("COMMIT")
        if removed:
            self._ids.clear()
        return points, removed

    # -- reading -------------------------------------------------------------------

    def services(self) -> list[dict[str, Any]]:
        """Every series' host, service and last state, metric, time, description, ttl."""
        return list(self._run(self._services))

    def _services(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT host, service, state, metric, time, description, ttl FROM series "
            "ORDER BY host, service"
        )
        names = ("host", "service", "state", "metric", "time", "description", "ttl")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def series(
        self, host: str, service: str, since: float, until: float, points: int
    ) -> list[tuple[float, float]] | None:
        """The points of one series in [since, until], at most ``points`` of them.

        Up to ``points`` raw points are returned as they are.  Beyond that
        the range is cut into ``points`` equal buckets, and each bucket that
        holds points gives their mean time and mean metric.  None if there
        is no such series.
        """
        return self._run(self._series, host, service, since, until, points)

    def _series(
        self, host: str, service: str, since: float, until: float, points: int
    ) -> list[tuple[float, float]] | None:
        db = self.db
        row = db.execute(
            "SELECT id FROM series WHERE host = ? AND service = ?", (host, service)
        ).fetchone()
        if row is None:
            return None
        where = {"series": row[0], "since": since, "until": until}
        db.execute("BEGIN")  # one snapshot for the count and the rows
        try:
            count = db.execute(
                "SELECT COUNT(*) FROM points "
                "WHERE series = :series AND time >= :since AND time <= :until",
                where,
            ).fetchone()[0]
            if count <= points:
                rows = db.execute(
                    "SELECT time, metric FROM points "
                    "WHERE series = :series AND time >= :since AND time <= :until ORDER BY time",
                    where,
                ).fetchall()
            else:
                width = (until - since) / points
                if not math.isfinite(width):  # the range is wider than a float
                    width = until / points - since / points
                bucketed = {**where, "width": width, "last": points - 1}
                rows = []
                for t, v, bucket in db.execute(_BUCKETED, bucketed).fetchall():
                    if v is None or not math.isfinite(v):
                        found = db.execute(_BUCKET_METRICS, {**bucketed, "bucket": bucket})
                        v = _mean([metric for (metric,) in found])
                    rows.append((t, v))
        finally:
            db.execute("COMMIT")
        return [(t, v) for t, v in rows]


def _row(event: Any) -> tuple[Any, ...]:
    """The series row of an event: host, service, state, metric, time, description, ttl."""
    return (
        event.hostname,
        event.service,
        event.state,
        finiteNumber(event.metric),
        float(event.time),
        event.description,
        event.ttl,
    )
