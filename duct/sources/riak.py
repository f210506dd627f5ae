"""riak: a Riak node's GET and PUT rates, from its HTTP ``/stats``."""

from __future__ import annotations

from typing import Any

from duct.lib.http import HTTP_CLIENT_OPTIONS
from duct.objects import Event, Source
from duct.options import Option

RATES = (  # (stats key, service, description): Riak counts these over the last minute
    ("node_gets", "gets_per_second", "GETs per second for past minute"),
    ("node_puts", "puts_per_second", "PUTs per second for past minute"),
)


class RiakStats(Source):
    """GETs and PUTs per second that a Riak node coordinated, from ``url`` (its ``/stats``).

    ``{service}.gets_per_second`` and ``.puts_per_second``: Riak's
    ``node_gets`` and ``node_puts``, counts over the last minute, divided
    by 60.  ``{service}.state``: 1, ``ok``; 0, ``critical``, with the
    reason, when the node cannot be reached, answers an error or other
    than its stats, or nothing within ``timeout``.
    """

    sync = True
    options = (
        Option("url", "string", None, "Riak's stats URL (default http://{hostname}:8098/stats)"),
        Option("useragent", "string", "Duct Riak stats checker", "User-Agent of the requests"),
        *HTTP_CLIENT_OPTIONS,
    )

    async def get(self) -> list[Event]:
        url = self.config["url"] or f"http://{self.hostname}:8098/stats"
        headers = {"User-Agent": self.config["useragent"], **(self.config["headers"] or {})}
        try:
            stats: Any = await self.http.getJson(url, headers=headers)
        except Exception as e:
            return [self.createEvent("critical", f"Riak stats {url}: {e}", 0, "state")]
        counts: dict[str, float] = {}
        for key, _, _ in RATES:
            value = stats.get(key) if isinstance(stats, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                counts[key] = value
        if len(counts) < len(RATES):
            why = f"Riak stats {url}: no node_gets and node_puts in the answer"
            return [self.createEvent("critical", why, 0, "state")]
        events = [self.createEvent("ok", text, counts[key] / 60.0, name)
                  for key, name, text in RATES]  # fmt: skip
        return [*events, self.createEvent("ok", f"Riak stats {url}", 1, "state")]
