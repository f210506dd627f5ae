"""Redis: list (queue) lengths, and the server's own figures from ``INFO``.

Both speak RESP to ``host:port`` themselves (`duct.lib.resp`); `Queues`
runs ``redis-cli`` instead when it checks a remote host with ``use_ssh``.
A server that refuses, does not answer within ``timeout`` or answers with
an error gives one ``critical`` ``{service}.state`` event.
"""

from __future__ import annotations

from typing import Any

from duct.aggregators import Counter
from duct.lib.resp import RESPClient, parseInfo
from duct.lib.tcpclient import connectWithin, reason, tcpEndpoint, within
from duct.objects import Event, Source
from duct.options import Option

CONNECTION_OPTIONS = (
    Option("host", "string", "127.0.0.1", "Redis host"),
    Option("port", "integer", 6379, "Redis port", minimum=1),
    Option("password", "string", None, "password for AUTH (default: none)"),
    Option("username", "string", None, "ACL user for AUTH, with password (Redis 6 and later)"),
    Option("timeout", "number", 10.0, "seconds to connect and get every reply", above=0),
)


class _RedisSource(Source):
    """What both Redis sources share: a connection, AUTH and SELECT, the state event."""

    sync = True

    def endpoint(self) -> Any:
        """Where the server is; a test may put a recorded server here."""
        config = self.config
        return tcpEndpoint(self.duct.reactor, config["host"], config["port"],
                           float(config["timeout"]))  # fmt: skip

    @property
    def where(self) -> str:
        return f"{self.config['host']}:{self.config['port']}"

    async def ask(self, commands: list[tuple[str | int, ...]], db: int = 0) -> list[Any]:
        """Connect, authenticate, select ``db``, send ``commands``; their replies."""
        timeout = float(self.config["timeout"])
        client = await connectWithin(self.endpoint(), RESPClient(), timeout, self.clock,
                                     self.where)  # fmt: skip
        try:
            first: list[tuple[str | int, ...]] = []
            if self.config["password"]:
                user = self.config["username"]
                first.append(("AUTH", user, self.config["password"]) if user
                             else ("AUTH", self.config["password"]))  # fmt: skip
            if db:
                first.append(("SELECT", db))
            sent = [client.command(*c) for c in first + commands]
            replies = []
            for d in sent:
                replies.append(await within(d, timeout, self.clock, f"Redis at {self.where}"))
            return replies[len(first) :]
        finally:
            client.close()

    def failed(self, error: BaseException) -> Event:
        return self.createEvent("critical", f"Connection error: {reason(error)}", 0, "state")


class Queues(_RedisSource):
    """The length of a Redis list used as a queue: ``LLEN queue`` in database ``db``.

    ``{service}``: the queue length; ``{service}.rate``: its change per second.
    With ``queues``, each named list instead gives ``{service}.{name}`` and
    ``{service}.{name}.rate``.  With ``use_ssh``, ``redis-cli`` (``clipath``)
    runs on the remote host.
    """

    options = (
        Option("queue", "string", "celery", "queue (list) name"),
        Option("queues", "strings", None, "several queue names, each its own service"),
        Option("db", "integer", 0, "database number", minimum=0),
        Option("clipath", "string", "/usr/bin/redis-cli", "path to redis-cli, with use_ssh"),
        *CONNECTION_OPTIONS,
    )

    async def get(self) -> list[Event]:
        names = list(self.config["queues"] or [self.config["queue"]])
        try:
            if self.useSSH:
                lengths = [await self._cli(name) for name in names]
            else:
                replies = await self.ask([("LLEN", name) for name in names], self.config["db"])
                lengths = [int(n) for n in replies]
        except Exception as e:
            return [self.failed(e)]
        events = []
        for name, length in zip(names, lengths, strict=True):
            prefix = name if self.config["queues"] else None
            rate = f"{name}.rate" if prefix else "rate"
            events += [self.createEvent("ok", f"{name} queue length", length, prefix),
                       self.createEvent("ok", "Queue rate", length, rate,
                                        aggregation=Counter)]  # fmt: skip
        return events

    async def _cli(self, name: str) -> int:
        config = self.config
        argv = [config["clipath"], "-h", config["host"], "-p", str(config["port"]),
                "-n", str(config["db"]), "llen", name]  # fmt: skip
        code, out, err = await self.run(argv)
        if code != 0:
            raise RuntimeError(f"{config['clipath']} exited {code}: {err.strip()!r}")
        return int(out.split()[-1])


INFO_GAUGES = (
    ("used_memory", "memory.used", "bytes of memory in use"),
    ("used_memory_rss", "memory.rss", "resident memory, bytes"),
    ("used_memory_peak", "memory.peak", "peak memory, bytes"),
    ("mem_fragmentation_ratio", "memory.fragmentation", "memory fragmentation ratio"),
    ("connected_clients", "clients.connected", "connected clients"),
    ("blocked_clients", "clients.blocked", "clients blocked in a call"),
    ("instantaneous_ops_per_sec", "ops", "operations per second"),
    ("connected_slaves", "replication.replicas", "connected replicas"),
)
INFO_COUNTERS = (
    ("total_commands_processed", "commands", "commands per second"),
    ("total_connections_received", "connections", "connections per second"),
    ("keyspace_hits", "keyspace.hits", "keyspace hits per second"),
    ("keyspace_misses", "keyspace.misses", "keyspace misses per second"),
    ("expired_keys", "keys.expired", "keys expired per second"),
    ("evicted_keys", "keys.evicted", "keys evicted per second"),
)


class Redis(_RedisSource):
    """The server's figures from ``INFO``.

    ``{service}.memory.used``, ``.memory.rss``, ``.memory.peak`` (bytes),
    ``.memory.fragmentation``, ``.clients.connected``, ``.clients.blocked``,
    ``.ops`` (operations per second, as the server measures them),
    ``.keyspace.hit_ratio`` (hits over lookups since the start); per second:
    ``.commands``, ``.connections``, ``.keyspace.hits``, ``.keyspace.misses``,
    ``.keys.expired``, ``.keys.evicted``.  Replication: ``.replication.replicas``
    and ``.replication.lag``, in seconds: the largest replica lag on a
    primary, the time since the primary last spoke on a replica, whose link
    being down makes it ``critical``.  ``{service}.state`` is 1 when the
    server answered.
    """

    options = CONNECTION_OPTIONS

    async def get(self) -> list[Event]:
        try:
            [info] = await self.ask([("INFO",)])
        except Exception as e:
            return [self.failed(e)]
        return self.infoEvents(parseInfo(info.decode("utf-8", "replace")))

    def infoEvents(self, info: dict[str, str]) -> list[Event]:
        events = [self.createEvent("ok", "Connection ok", 1, "state")]
        for key, prefix, what in INFO_GAUGES:
            if key in info:
                events.append(self.createEvent("ok", f"{what}: {info[key]}", float(info[key]),
                                               prefix))  # fmt: skip
        for key, prefix, what in INFO_COUNTERS:
            if key in info:
                events.append(self.createEvent("ok", what, int(info[key]), prefix,
                                               aggregation=Counter))  # fmt: skip
        hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
        if hits + misses:
            ratio = hits / (hits + misses)
            events.append(self.createEvent("ok", f"keyspace hit ratio: {ratio:.3f}", ratio,
                                           "keyspace.hit_ratio"))  # fmt: skip
        lag = replicationLag(info)
        if lag is not None:
            down = info.get("role") == "slave" and info.get("master_link_status") != "up"
            state, why = ("critical", "link to the primary is down") if down else ("ok", "")
            events.append(self.createEvent(state, why or f"replication lag: {lag:g}s", lag,
                                           "replication.lag"))  # fmt: skip
        return events


def replicationLag(info: dict[str, str]) -> float | None:
    """Seconds behind: a replica's since its primary last spoke, a primary's worst replica."""
    if info.get("role") == "slave":
        return float(info.get("master_last_io_seconds_ago", -1))
    lags = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit():
            fields = dict(part.partition("=")[::2] for part in value.split(","))
            if "lag" in fields:
                lags.append(float(fields["lag"]))
    if info.get("role") == "master":
        return max(lags, default=0.0)
    return None
