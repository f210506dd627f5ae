"""unbound: the resolver's statistics, from ``unbound-control stats_noreset``."""

from __future__ import annotations

from twisted.python.failure import Failure

from duct.aggregators import Counter
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason

COUNTED = ("num.", "unwanted.", "histogram.", "requestlist.overwritten", "requestlist.exceeded")
"""Keys (or parts of keys) that count since unbound started; the rest are gauges."""


def counts(key: str) -> bool:
    """Whether ``key`` is a counter, which becomes a per-second rate."""
    return any(key.startswith(part) or f".{part}" in key for part in COUNTED)


class Stats(Source):
    """Every statistic ``unbound-control stats_noreset`` prints, here or over SSH.

    ``{service}.{key}``, for each numeric ``key=value`` line
    (``total.num.queries``, ``mem.cache.rrset``, ...).  Counters (``num``,
    ``unwanted``, ``histogram`` and the ``requestlist`` overflows) are
    per-second rates; the counters are never reset, so several readers may
    poll the same unbound.  ``{service}.state``: 1, ``ok``, when
    unbound-control answered; 0, ``critical``, with the reason, when it
    failed or took longer than ``timeout``.
    """

    ssh = True
    sync = True
    options = (
        Option("executable", "string", "/usr/sbin/unbound-control", "path to unbound-control"),
        Option("config", "string", None, "unbound.conf that unbound-control reads (its -c)"),
        Option("server", "string", None, "control address, host[@port] or a socket (its -s)"),
    )

    def command(self) -> list[str]:
        argv = [self.config["executable"]]
        if self.config["config"]:
            argv += ["-c", self.config["config"]]
        if self.config["server"]:
            argv += ["-s", self.config["server"]]
        return [*argv, "stats_noreset"]

    async def get(self) -> list[Event]:
        try:
            code, out, err = await self.run(self.command())
        except Exception:
            why = failureReason(Failure())
            return [self.createEvent("critical", f"unbound-control: {why}", 0, "state")]
        if code != 0:
            why = (err.strip() or out.strip() or f"exit status {code}").splitlines()[-1]
            return [self.createEvent("critical", f"unbound-control: {why}", 0, "state")]
        events = []
        for line in out.splitlines():
            key, _, value = line.partition("=")
            try:
                metric = float(value)
            except ValueError:
                continue
            rate = Counter if counts(key) else None
            events.append(self.createEvent("ok", key, metric, key, None, rate))
        return [*events, self.createEvent("ok", "unbound-control", 1, "state")]
