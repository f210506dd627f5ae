"""PostgreSQL and MySQL sources: on recorded answers, and against Debian's real servers."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from dbservers import Server
from sqlreplay import RecordedQueries
from twisted.internet.defer import fail

from duct.sources.database.mysql import MySQL
from duct.sources.database.postgresql import CONNECTIONS, PostgreSQL
from duct.testing import SourceHarness, recordingService, waitFor


def harnessFor(cls: type, recording: str, **config: Any) -> tuple[SourceHarness, RecordedQueries]:
    harness = SourceHarness(cls, {"service": "db", "interval": 10, **config}, pipeline=True)
    queries = RecordedQueries(recording)
    harness.source.runQuery = queries  # type: ignore[method-assign]
    return harness, queries


def test_postgresql_per_database_with_the_original_names() -> None:
    harness, queries = harnessFor(PostgreSQL, "postgresql-15-queries.json")
    harness.start()
    harness.advance(10)
    assert harness.latest("db.postgres.threads").metric == 2
    assert harness.latest("db.postgres.commits").metric == 0.0  # a rate: nothing changed
    services = {e.service for e in harness.events}
    names = ("rollbacks", "disk.read", "disk.cache", "returned", "selects", "inserts", "updates")
    assert {f"db.postgres.{n}" for n in names} <= services
    assert not any(s.startswith(("db.template", "db.None")) for s in services)
    assert harness.latest("db.connections.active").metric == 1
    assert harness.latest("db.connections.idle_in_transaction").metric == 1
    assert harness.latest("db.connections.idle").metric == 0
    assert harness.latest("db.replication.lag").metric == 0.0
    assert harness.latest("db.replication.replicas").metric == 0
    state = harness.latest("db.state")
    assert (state.state, state.metric, state.description) == ("ok", 1, "Connection ok")
    assert harness.errors == []


def test_postgresql_failure_and_silence_are_critical() -> None:
    harness, queries = harnessFor(PostgreSQL, "postgresql-15-queries.json", timeout=5)
    queries.answers.pop(CONNECTIONS)
    harness.start()
    [state] = harness.events
    assert (state.service, state.state, state.metric) == ("db.state", "critical", 0)
    assert "not recorded" in state.description
    queries.hang = True
    harness.advance(10)
    assert len(harness.events) == 1  # the poll waits
    harness.advance(5)  # the query's timeout on the clock
    assert harness.latest("db.state").state == "critical"
    assert "no answer in 5s" in harness.latest("db.state").description
    assert harness.errors == []


def test_a_missing_driver_is_a_critical_state() -> None:
    harness = SourceHarness(MySQL, {"service": "db"})
    harness.source.driver = "no_such_driver_module"
    harness.start()
    assert "needs PyMySQL" in harness.latest("db.state").description


def test_mysql_global_status_from_a_recorded_mariadb() -> None:
    harness, queries = harnessFor(MySQL, "mariadb-10.11-status.json")
    harness.start()
    harness.advance(10)
    assert harness.latest("db.threads.connected").metric == 1
    assert harness.latest("db.connections").metric == 0.0  # a rate
    assert harness.latest("db.slow_queries").metric == 0.0
    assert harness.latest("db.innodb.buffer_pool.pages.total").metric == 1014
    assert harness.latest("db.innodb.buffer_pool.hit_ratio").metric == 1 - 318 / 1227
    assert 0 < harness.latest("db.innodb.buffer_pool.used").metric < 1
    assert {"db.queries", "db.questions", "db.threads.running"} <= {
        e.service for e in harness.events
    }
    assert harness.latest("db.state").metric == 1 and harness.errors == []


def test_mysql_error_is_critical() -> None:
    harness = SourceHarness(MySQL, {"service": "db"})
    harness.source.runQuery = lambda sql: fail(OSError("Can't connect to MySQL server"))  # type: ignore[method-assign]
    harness.start()
    state = harness.latest("db.state")
    assert state.state == "critical" and "Can't connect" in state.description


async def runAgainst(reactor: Any, source: dict[str, Any], ready: Any) -> tuple[Any, Any]:
    config = {
        "stagger": 0,
        "sources": [{"service": "db", "interval": 0.3, **source}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def latest(name: str) -> Any:
        return next((e for e in reversed(output.written) if e.service == name), None)

    service.startService()
    try:
        await waitFor(reactor, lambda: ready(latest), "events from the server", 60)
    finally:
        await service.stopService()
    return latest, service


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_postgresql(reactor: Any, postgres_server: Server) -> None:
    source = {"source": "duct.sources.database.postgresql.PostgreSQL",
              "port": postgres_server.port}  # fmt: skip
    latest, service = await runAgainst(
        reactor, source, lambda latest: latest("db.postgres.commits")
    )
    assert latest("db.state").metric == 1, latest("db.state").description
    assert latest("db.postgres.threads").metric >= 1  # duct's own connection
    assert latest("db.connections.active").metric >= 1
    assert latest("db.replication.lag").metric == 0.0
    assert service.sources[0].errors == 0, postgres_server.log()


@pytest_twisted.ensureDeferred
async def test_duct_reads_a_real_mariadb(reactor: Any, mariadb_server: Server) -> None:
    source = {"source": "duct.sources.database.mysql.MySQL", "port": mariadb_server.port,
              "user": "duct", "password": "duct"}  # fmt: skip
    latest, service = await runAgainst(reactor, source, lambda latest: latest("db.questions"))
    assert latest("db.state").metric == 1, latest("db.state").description
    assert latest("db.threads.connected").metric >= 1
    assert latest("db.innodb.buffer_pool.pages.total").metric > 0
    assert latest("db.questions").metric > 0  # SHOW GLOBAL STATUS itself, each poll
    assert service.sources[0].errors == 0


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_critical(reactor: Any, mariadb_server: Server) -> None:
    source = {"source": "duct.sources.database.mysql.MySQL", "port": mariadb_server.port,
              "user": "duct", "password": "wrong"}  # fmt: skip
    latest, _ = await runAgainst(reactor, source, lambda latest: latest("db.state"))
    state = latest("db.state")
    assert state.state == "critical" and "Access denied" in state.description
