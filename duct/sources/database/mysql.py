"""MySQL and MariaDB: the server's global status, through PyMySQL in a thread."""

from __future__ import annotations

from typing import Any

from duct.aggregators import Counter64
from duct.objects import Event
from duct.options import Option
from duct.sources.database.pool import DatabaseSource

STATUS = "SHOW GLOBAL STATUS"
GAUGES = (
    ("Threads_connected", "threads.connected"),
    ("Threads_running", "threads.running"),
    ("Threads_cached", "threads.cached"),
    ("Max_used_connections", "connections.max_used"),
    ("Open_tables", "tables.open"),
    ("Innodb_buffer_pool_pages_total", "innodb.buffer_pool.pages.total"),
    ("Innodb_buffer_pool_pages_free", "innodb.buffer_pool.pages.free"),
    ("Innodb_buffer_pool_pages_data", "innodb.buffer_pool.pages.data"),
    ("Innodb_buffer_pool_pages_dirty", "innodb.buffer_pool.pages.dirty"),
    ("Innodb_buffer_pool_bytes_data", "innodb.buffer_pool.bytes.data"),
)
COUNTERS = (
    ("Connections", "connections"),
    ("Aborted_connects", "connections.aborted"),
    ("Questions", "questions"),
    ("Queries", "queries"),
    ("Slow_queries", "slow_queries"),
    ("Com_select", "commands.select"),
    ("Com_insert", "commands.insert"),
    ("Com_update", "commands.update"),
    ("Com_delete", "commands.delete"),
    ("Bytes_received", "bytes.received"),
    ("Bytes_sent", "bytes.sent"),
    ("Innodb_buffer_pool_read_requests", "innodb.buffer_pool.read_requests"),
    ("Innodb_buffer_pool_reads", "innodb.buffer_pool.reads"),
)


class MySQL(DatabaseSource):
    """Reads MySQL or MariaDB metrics from ``SHOW GLOBAL STATUS``.

    ``{service}.threads.connected``, ``.threads.running``, ``.threads.cached``,
    ``.connections.max_used``, ``.tables.open``, and the InnoDB buffer pool:
    ``.innodb.buffer_pool.pages.total``, ``.pages.free``, ``.pages.data``,
    ``.pages.dirty``, ``.bytes.data``, ``.used`` (the share of pages in use)
    and ``.hit_ratio`` (read requests served without a disk read, since the
    start).  Per second: ``.connections``, ``.connections.aborted``,
    ``.questions``, ``.queries``, ``.slow_queries``, ``.commands.select``
    (``insert``, ``update``, ``delete``), ``.bytes.received``, ``.bytes.sent``,
    ``.innodb.buffer_pool.read_requests`` and ``.reads``.  ``{service}.state``
    is 1 when the server answered, else 0 and ``critical``.
    """

    driver = "pymysql"
    package = "PyMySQL"
    options = (
        Option("host", "string", "127.0.0.1", "Database host"),
        Option("port", "integer", 3306, "Database port", minimum=1),
        Option("socket", "string", None, "Unix socket path, instead of host and port"),
        Option("user", "string", "root", "Username"),
        Option("password", "string", "", "Password"),
        Option("timeout", "number", 10.0, "seconds to connect and for each query", above=0),
    )

    def connectArgs(self) -> dict[str, Any]:
        config = self.config
        timeout = max(1, round(float(config["timeout"])))
        args = {"host": config["host"], "port": config["port"], "user": config["user"],
                "password": config["password"], "connect_timeout": timeout,
                "read_timeout": timeout, "write_timeout": timeout}  # fmt: skip
        if config["socket"]:
            args["unix_socket"] = config["socket"]
        return args

    async def read(self) -> list[Event]:
        status = {str(name): str(value) for name, value in await self.query(STATUS)}
        events = []
        for key, prefix in GAUGES:
            if key in status:
                value = int(status[key])
                events.append(self.createEvent("ok", f"{key}: {value}", value, prefix))
        for key, prefix in COUNTERS:
            if key in status:
                events.append(self.createEvent("ok", key.replace("_", " "), int(status[key]),
                                               prefix, aggregation=Counter64))  # fmt: skip
        total = int(status.get("Innodb_buffer_pool_pages_total", 0))
        if total:
            used = 1 - int(status.get("Innodb_buffer_pool_pages_free", 0)) / total
            events.append(self.createEvent("ok", f"buffer pool {used:.1%} used", used,
                                           "innodb.buffer_pool.used"))  # fmt: skip
        requests = int(status.get("Innodb_buffer_pool_read_requests", 0))
        if requests:
            ratio = 1 - int(status.get("Innodb_buffer_pool_reads", 0)) / requests
            events.append(self.createEvent("ok", f"buffer pool hit ratio {ratio:.4f}", ratio,
                                           "innodb.buffer_pool.hit_ratio"))  # fmt: skip
        return events
