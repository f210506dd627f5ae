"""PostgreSQL: activity per database, connections by state, and replication lag."""

from __future__ import annotations

from typing import Any

from duct.aggregators import Counter64
from duct.objects import Event
from duct.options import Option
from duct.sources.database.pool import DatabaseSource

COLUMNS = (
    ("xact_commit", "commits"),
    ("xact_rollback", "rollbacks"),
    ("blks_read", "disk.read"),
    ("blks_hit", "disk.cache"),
    ("tup_returned", "returned"),
    ("tup_fetched", "selects"),
    ("tup_inserted", "inserts"),
    ("tup_updated", "updates"),
    ("tup_deleted", "deletes"),
)
DATABASES = "SELECT datname,numbackends,{} FROM pg_stat_database".format(
    ",".join(column for column, _ in COLUMNS)
)
CONNECTIONS = (
    "SELECT state, count(*) FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' GROUP BY state"
)
STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
          "fastpath function call", "disabled")  # fmt: skip
REPLICATION = (
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery()"
    " THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
    " ELSE (SELECT max(extract(epoch FROM replay_lag))::float8 FROM pg_stat_replication) END,"
    " (SELECT count(*) FROM pg_stat_replication)"
)


class PostgreSQL(DatabaseSource):
    """Reads PostgreSQL metrics, through psycopg (version 3) in a thread.

    Per database, from ``pg_stat_database``: ``{service}.{database}.threads``
    (backends now) and, per second, ``.commits``, ``.rollbacks``,
    ``.disk.read``, ``.disk.cache``, ``.returned``, ``.selects``,
    ``.inserts``, ``.updates``, ``.deletes``.  ``{service}.connections.{state}``:
    client connections by state (``active``, ``idle``,
    ``idle_in_transaction``, ...).  ``{service}.replication.lag``: seconds
    since the last replayed transaction on a standby, the worst replica's
    replay lag on a primary; ``.replication.replicas``: replicas connected.
    ``{service}.state`` is 1 when every query answered, else 0 and
    ``critical`` with the reason.
    """

    driver = "psycopg"
    package = "psycopg[binary]"
    options = (
        Option("host", "string", "127.0.0.1", "Database host (or a socket directory)"),
        Option("port", "integer", 5432, "Database port", minimum=1),
        Option("user", "string", "postgres", "Username"),
        Option("password", "string", "", "Password"),
        Option("database", "string", "postgres", "database to connect to"),
        Option("timeout", "number", 10.0, "seconds to connect and for each query", above=0),
    )

    def connectArgs(self) -> dict[str, Any]:
        config = self.config
        timeout = float(config["timeout"])
        args = {"host": config["host"], "port": config["port"], "user": config["user"],
                "dbname": config["database"], "connect_timeout": max(1, round(timeout)),
                "application_name": "duct", "autocommit": True,
                "options": f"-c statement_timeout={int(timeout * 1000)}"}  # fmt: skip
        if config["password"]:
            args["password"] = config["password"]
        return args

    async def read(self) -> list[Event]:
        events = []
        for row in await self.query(DATABASES):
            database, threads = row[0], row[1]
            if database is None or database in ("template0", "template1"):
                continue
            events.append(self.createEvent("ok", f"threads: {threads}", threads,
                                           f"{database}.threads"))  # fmt: skip
            for (_, name), value in zip(COLUMNS, row[2:], strict=True):
                prefix = f"{database}.{name}"
                events.append(self.createEvent("ok", f"{name}: {value}", value, prefix,
                                               aggregation=Counter64))  # fmt: skip
        counts = {state: 0 for state in STATES}
        for state, count in await self.query(CONNECTIONS):
            counts[state or "unknown"] = int(count)
        for state, count in counts.items():
            name = state.replace(" (aborted)", "_aborted").replace(" ", "_")
            events.append(self.createEvent("ok", f"{state} connections: {count}", count,
                                           f"connections.{name}"))  # fmt: skip
        [(standby, lag, replicas)] = await self.query(REPLICATION)
        events.append(self.createEvent("ok", f"replicas: {replicas}", replicas,
                                       "replication.replicas"))  # fmt: skip
        if lag is not None or not standby:
            lag = float(lag or 0.0)
            role = "standby" if standby else "primary"
            events.append(self.createEvent("ok", f"{role}, replication lag: {lag:.3f}s", lag,
                                           "replication.lag"))  # fmt: skip
        return events
