"""RabbitMQ: ready and unacknowledged messages per queue of a vhost."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from duct.lib.http import HTTP_CLIENT_OPTIONS
from duct.lib.tcpclient import reason
from duct.objects import Event, Source
from duct.options import Option

COLUMNS = ("name", "messages_ready", "messages_unacknowledged")


def parseListQueues(out: str) -> dict[str, tuple[int, int]]:
    """``name ready unack`` rows of ``rabbitmqctl list_queues``; banners and headers skipped."""
    queues = {}
    for line in out.splitlines():
        parts = line.rsplit(None, 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            queues[parts[0]] = (int(parts[1]), int(parts[2]))
    return queues


class Queues(Source):
    """Returns Queue information for a particular vhost.

    ``{service}.{queue}.ready`` and ``.unack``: ready and unacknowledged
    messages; ``.ready_rate`` and ``.unack_rate``: their change per second
    since the previous poll (from the second poll).  ``{service}.total.ready``,
    ``.total.unack``, ``.total.ready_rate``, ``.total.unack_rate``: the same
    over every queue.  The figures come from ``rabbitmqctl list_queues``
    (here, or on ``ssh_host`` with ``use_ssh``), or from the management
    HTTP API at ``management_url`` when it is set (with ``user`` and
    ``password``).  A failure gives ``{service}.state``, ``critical``.
    """

    sync = True
    options = (
        Option("vhost", "string", "/", "Vhost name"),
        Option("rabbitmqctl", "string", "/usr/sbin/rabbitmqctl", "path to rabbitmqctl"),
        Option("management_url", "string", None,
               "management API base URL, e.g. http://localhost:15672 (default: rabbitmqctl)"),
        *HTTP_CLIENT_OPTIONS,
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last: dict[str, tuple[int, int]] = {}
        self.lastTime: float | None = None

    async def queues(self) -> dict[str, tuple[int, int]]:
        vhost = self.config["vhost"]
        if self.config["management_url"]:
            base = self.config["management_url"].rstrip("/")
            url = f"{base}/api/queues/{quote(vhost, safe='')}?columns={','.join(COLUMNS)}"
            rows = await self.http.getJson(url)
            return {row["name"]: (int(row.get("messages_ready") or 0),
                                  int(row.get("messages_unacknowledged") or 0))
                    for row in rows}  # fmt: skip
        argv = [self.config["rabbitmqctl"], "-q", "list_queues", "-p", vhost, *COLUMNS]
        code, out, err = await self.run(argv)
        if code != 0:
            raise RuntimeError(f"rabbitmqctl exited {code}: {(err or out).strip()[-200:]}")
        return parseListQueues(out)

    async def get(self) -> list[Event]:
        try:
            queues = await self.queues()
        except Exception as e:
            error = reason(e)
            return [self.createEvent("critical", f"Error reading queues: {error}", 0, "state")]
        now = self.clock.seconds()
        elapsed = None if self.lastTime is None else now - self.lastTime
        events = []
        totals = {"ready": 0, "unack": 0}
        for name, (ready, unack) in sorted(queues.items()):
            totals["ready"] += ready
            totals["unack"] += unack
            previous = self.last.get(name)
            events += self.figures(name, name, ready, unack, previous, elapsed)
        previousTotals = None
        if self.last:
            previousTotals = (sum(r for r, _ in self.last.values()),
                              sum(u for _, u in self.last.values()))  # fmt: skip
        events += self.figures("total", "Total", totals["ready"], totals["unack"],
                               previousTotals, elapsed)  # fmt: skip
        self.last, self.lastTime = queues, now
        return events

    def figures(
        self,
        prefix: str,
        label: str,
        ready: int,
        unack: int,
        previous: tuple[int, int] | None,
        elapsed: float | None,
    ) -> list[Event]:
        events = [
            self.createEvent("ok", f"{label} unacknowledged messages: {unack}", unack,
                             f"{prefix}.unack"),
            self.createEvent("ok", f"{label} ready messages: {ready}", ready, f"{prefix}.ready"),
        ]  # fmt: skip
        if previous is not None and elapsed:
            readyRate = (ready - previous[0]) / elapsed
            unackRate = (unack - previous[1]) / elapsed
            events += [
                self.createEvent("ok", f"{label} unacknowledged rate: {unackRate:0.2f}",
                                 unackRate, f"{prefix}.unack_rate"),
                self.createEvent("ok", f"{label} ready rate: {readyRate:0.2f}", readyRate,
                                 f"{prefix}.ready_rate"),
            ]  # fmt: skip
        return events
