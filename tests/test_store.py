"""The Store output: batched writes on its thread, reads, restarts, retention, damage."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from duct.configuration import ConfigFile, ConfigurationError
from duct.objects import Event
from duct.outputs.store import Store
from duct.outputs.store_db import StoreDatabase, StoreError
from duct.testing import FakeDuct, configure

T0 = 1_800_000_000.0
DAY = 86400.0
DEADLINE = 10.0


def event(service: str, metric: Any, when: float, host: str = "web1", state: str = "ok") -> Event:
    return Event(state, service, f"{service} is {metric}", metric, 60.0, hostname=host, evtime=when)


async def until(reactor: Any, check: Callable[[], bool], what: str, clock: Clock) -> None:
    """Wait on the real reactor (bounded) for work done on the store's threads.

    Calls due now on ``clock`` run meanwhile (the writer's next batch), but
    its time does not move.
    """
    waited = 0.0
    while not check():
        if waited > DEADLINE:
            raise AssertionError(f"gave up waiting for {what}")
        clock.advance(0)
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


async def drain(store: Store, clock: Clock, reactor: Any) -> None:
    """Flush the store: the writer's timers run on ``clock``, its writes on a thread."""
    d = store.flush()
    done: list[object] = []
    d.addBoth(done.append)
    while not done:
        clock.advance(0)
        await deferLater(reactor, 0.01, lambda: None)
    assert store.buffer.depth == 0


class Stores:
    """Builds started stores on a Clock (the reactor runs their threads); stops them after."""

    def __init__(self, tmp_path: Path, reactor: Any) -> None:
        self.tmp_path = tmp_path
        self.reactor = reactor
        self.clock = Clock()
        self.clock.advance(T0)
        self.running: list[Store] = []

    async def start(self, **config: Any) -> Store:
        duct = FakeDuct(self.clock)
        duct.reactor = self.reactor
        config.setdefault("path", str(self.tmp_path / "store.sqlite"))
        store = Store(configure(Store, config), duct)
        self.running.append(store)
        await store.start()
        return store

    async def stop(self, store: Store) -> None:
        self.running.remove(store)
        await store.stop()


@pytest_twisted.async_yield_fixture
async def stores(tmp_path: Path, reactor: Any) -> AsyncIterator[Stores]:
    made = Stores(tmp_path, reactor)
    try:
        yield made
    finally:
        for store in list(made.running):
            await made.stop(store)


async def query(store: Store, work: Callable[[StoreDatabase], Any]) -> Any:
    return await store.query(work)


# -- writing and reading --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_writes_go_in_batches_and_a_partial_batch_waits_for_flush_interval(
    stores: Stores, reactor: Any
) -> None:
    store = await stores.start(batch_size=3, flush_interval=5.0)
    store.eventsReceived([event("load", i, T0 + i) for i in range(7)])
    stores.clock.advance(0)
    await until(reactor, lambda: store.pointsWritten == 6, "two full batches", stores.clock)
    await deferLater(reactor, 0.05, lambda: None)
    assert store.pointsWritten == 6 and store.buffer.depth == 1  # the seventh waits

    stores.clock.advance(5.0)
    await until(reactor, lambda: store.pointsWritten == 7, "the partial batch", stores.clock)
    points = await query(store, lambda db: db.series("web1", "load", T0, T0 + 10, 300))
    assert points == [(T0 + i, float(i)) for i in range(7)]
    assert store.sent == 7


@pytest_twisted.ensureDeferred
async def test_services_keep_the_last_state_metric_time_and_description(
    stores: Stores, reactor: Any
) -> None:
    store = await stores.start()
    store.eventsReceived(
        [
            event("cpu", 0.5, T0 + 2, state="warning"),
            event("cpu", 0.2, T0 + 1),  # older: arrives later, changes nothing
            event("cpu", 0.1, T0, host="web2"),
            Event("critical", "backup", "failed", None, 300.0, hostname="web1", evtime=T0),
        ]
    )
    await drain(store, stores.clock, reactor)
    rows = await query(store, StoreDatabase.services)
    assert [(r["host"], r["service"], r["state"], r["metric"], r["time"]) for r in rows] == [
        ("web1", "backup", "critical", None, T0),
        ("web1", "cpu", "warning", 0.5, T0 + 2),
        ("web2", "cpu", "ok", 0.1, T0),
    ]
    assert rows[1]["description"] == "cpu is 0.5" and rows[0]["ttl"] == 300.0
    # The state-only event added no point; the others did.
    assert await query(store, lambda db: db.series("web1", "backup", 0, T0 + 9, 10)) == []
    assert store.pointsWritten == 3


@pytest_twisted.ensureDeferred
async def test_metrics_that_are_not_finite_numbers_update_the_state_but_add_no_point(
    stores: Stores, reactor: Any
) -> None:
    store = await stores.start()
    store.eventsReceived(
        [
            event("ratio", 1.0, T0),
            event("ratio", math.nan, T0 + 1),
            event("ratio", math.inf, T0 + 2),
        ]
    )
    await drain(store, stores.clock, reactor)
    rows = await query(store, StoreDatabase.services)
    assert rows[0]["time"] == T0 + 2 and rows[0]["metric"] is None
    assert await query(store, lambda db: db.series("web1", "ratio", 0, T0 + 9, 10)) == [(T0, 1.0)]


@pytest_twisted.ensureDeferred
async def test_an_event_delivered_twice_is_one_point(stores: Stores, reactor: Any) -> None:
    store = await stores.start()
    store.eventsReceived([event("load", 1.0, T0)])
    await drain(store, stores.clock, reactor)
    store.eventsReceived([event("load", 1.0, T0), event("load", 2.0, T0 + 1)])
    await drain(store, stores.clock, reactor)
    points = await query(store, lambda db: db.series("web1", "load", 0, T0 + 9, 10))
    assert points == [(T0, 1.0), (T0 + 1, 2.0)]


@pytest_twisted.ensureDeferred
async def test_the_store_survives_a_restart(stores: Stores, reactor: Any) -> None:
    store = await stores.start()
    store.eventsReceived([event("load", float(i), T0 + i) for i in range(5)])
    await drain(store, stores.clock, reactor)
    await stores.stop(store)
    assert store._writePool is None and store._readPool is None  # threads stopped

    again = await stores.start()
    rows = await query(again, StoreDatabase.services)
    assert [(r["service"], r["metric"]) for r in rows] == [("load", 4.0)]
    again.eventsReceived([event("load", 9.0, T0 + 5)])
    await drain(again, stores.clock, reactor)
    points = await query(again, lambda db: db.series("web1", "load", T0, T0 + 9, 300))
    assert [v for _, v in points] == [0.0, 1.0, 2.0, 3.0, 4.0, 9.0]


def test_the_default_path_is_under_the_state_directory(tmp_path: Path) -> None:
    duct = FakeDuct()
    duct.config = {"state_dir": str(tmp_path)}
    store = Store(configure(Store, {"name": "history"}), duct)
    assert store.path == str(tmp_path / "store" / "history.sqlite")
    assert store.retention == 7 * DAY


# -- downsampling ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_series_are_averaged_into_at_most_points_buckets(
    stores: Stores, reactor: Any
) -> None:
    store = await stores.start(batch_size=1000)
    values = {T0 + i: float(i % 7) * 1.5 + i for i in range(1000)}
    store.eventsReceived([event("load", v, t) for t, v in values.items()])
    await drain(store, stores.clock, reactor)

    since, until_ = T0, T0 + 999
    for points in (1, 7, 10, 300, 999):
        got = await query(store, lambda db, p=points: db.series("web1", "load", since, until_, p))
        assert 0 < len(got) <= points
        # The same buckets, worked out here: [since + i*w, since + (i+1)*w), the
        # last one closed at `until`.
        width = (until_ - since) / points
        buckets: dict[int, list[tuple[float, float]]] = {}
        for t, v in values.items():
            buckets.setdefault(min(int((t - since) / width), points - 1), []).append((t, v))
        expected = [
            (sum(t for t, _ in b) / len(b), sum(v for _, v in b) / len(b))
            for _, b in sorted(buckets.items())
        ]
        assert len(got) == len(expected)
        for (t, v), (et, ev) in zip(got, expected, strict=True):
            assert t == pytest.approx(et) and v == pytest.approx(ev)

    # No more points than asked for: the raw points, unchanged.
    raw = await query(store, lambda db: db.series("web1", "load", T0 + 10, T0 + 19, 10))
    assert raw == [(t, v) for t, v in values.items() if T0 + 10 <= t <= T0 + 19]
    assert await query(store, lambda db: db.series("web1", "nothing", T0, T0 + 9, 10)) is None


# -- retention -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_retention_removes_old_points_and_silent_series_on_the_clock(
    stores: Stores, reactor: Any
) -> None:
    store = await stores.start(retention="7d", cleanup_interval="1h")
    await store.lastCleanup  # one cleanup at start
    assert store.cleanups == 1
    store.eventsReceived(
        [
            event("old", 1.0, T0 - 10 * DAY),  # a series silent for 10 days
            event("load", 1.0, T0 - 8 * DAY),
            event("load", 2.0, T0 - 2 * DAY),
            event("load", 3.0, T0),
        ]
    )
    await drain(store, stores.clock, reactor)

    stores.clock.advance(3599)
    assert store.cleanups == 1  # not yet an hour
    stores.clock.advance(1)
    await store.lastCleanup
    assert store.cleanups == 2
    assert (store.pointsRemoved, store.seriesRemoved) == (2, 1)
    rows = await query(store, StoreDatabase.services)
    assert [r["service"] for r in rows] == ["load"]
    points = await query(store, lambda db: db.series("web1", "load", 0, T0 + 10 * DAY, 10))
    assert points == [(T0 - 2 * DAY, 2.0), (T0, 3.0)]

    # Six days on, the point of two days ago is past the retention too.
    for _ in range(6 * 24):
        stores.clock.advance(3600)
        await store.lastCleanup
    assert store.cleanups == 2 + 6 * 24
    points = await query(store, lambda db: db.series("web1", "load", 0, T0 + 10 * DAY, 10))
    assert points == [(T0, 3.0)]


@pytest_twisted.ensureDeferred
async def test_stop_ends_the_cleanup_timer(stores: Stores) -> None:
    store = await stores.start(cleanup_interval=60)
    await store.lastCleanup
    await stores.stop(store)
    stores.clock.advance(600)
    assert store.cleanups == 1 and not stores.clock.getDelayedCalls()


def test_retention_takes_seconds_or_a_duration_and_refuses_nonsense() -> None:
    base = {"output": "duct.outputs.store.Store"}
    config = ConfigFile.fromDict({"outputs": [{**base, "retention": "12h"}]})
    assert config.outputs[0].config["retention"] == 12 * 3600
    config = ConfigFile.fromDict({"outputs": [{**base, "retention": 86400}]})
    assert config.outputs[0].config["retention"] == 86400
    with pytest.raises(ConfigurationError) as info:
        ConfigFile.fromDict({"outputs": [{**base, "retention": "a week"}]})
    assert "outputs[0] (output: duct.outputs.store.Store): retention: expected seconds" in str(
        info.value
    )
    with pytest.raises(ConfigurationError, match="cleanup_interval: must be at least 1"):
        ConfigFile.fromDict({"outputs": [{**base, "cleanup_interval": "0s"}]})


# -- a file that cannot be used --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_damaged_file_is_a_clear_error_and_writes_resume_once_it_is_moved(
    stores: Stores, reactor: Any, tmp_path: Path, observe_errors: Any
) -> None:
    path = tmp_path / "store.sqlite"
    path.write_bytes(b"this is not a database, " * 200)
    store = await stores.start(retry_initial=1.0, retry_max=1.0)
    errors = observe_errors.take()
    assert len(errors) == 1
    assert str(path) in errors[0]["error"] and "move it aside" in errors[0]["error"]
    assert store.error is not None and store.connected is False  # /health sees it

    store.eventsReceived([event("load", 1.0, T0)])
    stores.clock.advance(1.0)  # flush_interval: the write fails, the event stays
    await until(reactor, lambda: store.failures == 1, "a failed write", stores.clock)
    assert store.buffer.depth == 1 and observe_errors.take() == []  # logged once only

    os.rename(path, tmp_path / "damaged.sqlite")
    stores.clock.advance(1.0)  # the retry opens a new file
    await until(reactor, lambda: store.pointsWritten == 1, "the write after the fix", stores.clock)
    assert store.error is None and store.connected and store.buffer.depth == 0


@pytest_twisted.ensureDeferred
async def test_a_path_that_cannot_be_created_is_an_error_not_a_crash(
    stores: Stores, reactor: Any, tmp_path: Path, observe_errors: Any
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    store = await stores.start(path=str(blocker / "store.sqlite"))
    [error] = observe_errors.take()
    assert "cannot open" in error["error"] and str(blocker) in error["error"]
    store.eventsReceived([event("load", 1.0, T0)])
    stores.clock.advance(1.0)
    await until(reactor, lambda: store.failures == 1, "a failed write", stores.clock)
    assert store.buffer.depth == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer duct"):
        StoreDatabase(str(path))


def test_a_reader_never_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite"
    with pytest.raises(StoreError):
        StoreDatabase(str(path), readOnly=True)
    assert not path.exists()


@pytest_twisted.ensureDeferred
async def test_queries_fail_cleanly_before_start_and_after_stop(stores: Stores) -> None:
    from duct.outputs.store_db import StoreUnavailable

    store = await stores.start()
    await stores.stop(store)
    with pytest.raises(StoreUnavailable):
        await store.query(StoreDatabase.services)
    never = Store(configure(Store, {"path": "unused"}), FakeDuct())
    d: Deferred[Any] = never.query(StoreDatabase.services)
    with pytest.raises(StoreUnavailable):
        await d


def test_durations_in_options() -> None:
    from duct.options import Option, OptionError

    option = Option("retention", "duration", 60.0, "", minimum=60)
    assert [option.check(v) for v in (90, 2.5e3, "90s", "30m", "12h", "7d", "2w", " 1.5H ")] == [
        90.0,
        2500.0,
        90.0,
        1800.0,
        43200.0,
        604800.0,
        1209600.0,
        5400.0,
    ]
    for bad in ("", "d", "7x", "seven days", "nan", "inf", True, [1]):
        with pytest.raises(OptionError):
            option.check(bad)
    with pytest.raises(OptionError, match="at least 60"):
        option.check("30s")
