"""Apache httpd: workers, connections and traffic, from mod_status's ``?auto`` page."""

from __future__ import annotations

from duct.lib.http import HTTP_CLIENT_OPTIONS
from duct.objects import Event, Source
from duct.options import Option

FIELDS = (  # (service, mod_status key, type), named as the original duct names them
    ("conns.active", "ConnsTotal", int),
    ("conns.writing", "ConnsAsyncWriting", int),
    ("conns.closing", "ConnsAsyncClosing", int),
    ("conns.keep_alive", "ConnsAsyncKeepAlive", int),
    ("accesses", "Total Accesses", int),
    ("uptime", "Uptime", int),
    ("cpu_load", "CPULoad", float),
    ("total_kbytes", "Total kBytes", int),
    ("request_rate", "ReqPerSec", float),
    ("bytes_rate", "BytesPerSec", float),
    ("bytes_req", "BytesPerReq", float),
    ("workers.busy", "BusyWorkers", int),
    ("workers.idle", "IdleWorkers", int),
)


def parseStatus(page: str) -> dict[str, str]:
    """The ``Key: value`` lines of a ``?auto`` page."""
    fields = {}
    for line in page.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


class Apache(Source):
    """Workers, connections and traffic from Apache's mod_status page at ``url`` (``?auto``).

    ``{service}.workers.busy``, ``.workers.idle``, ``.conns.active``,
    ``.conns.writing``, ``.conns.closing``, ``.conns.keep_alive``,
    ``.accesses``, ``.total_kbytes``, ``.uptime``, ``.cpu_load``,
    ``.request_rate``, ``.bytes_rate`` and ``.bytes_req``, as mod_status
    reports them (a field it does not report is 0), and ``{service}.state``:
    ok, or critical when the server cannot be reached, answers an error or
    nothing within ``timeout``, or with a page that is not mod_status's.
    """

    sync = True
    options = (
        Option("url", "string", "http://localhost/server-status?auto", "URL of mod_status, ?auto"),
        Option("stats_url", "string", None, "the same as url, under its older name"),
        *HTTP_CLIENT_OPTIONS,
    )

    async def get(self) -> list[Event]:
        url = self.config["stats_url"] or self.config["url"]
        try:
            page = (await self.http.getBody(url)).decode("latin-1")
        except Exception as e:
            return [self.createEvent("critical", f"Connection failed: {e}", 0, "state")]
        fields = parseStatus(page)
        if "Total Accesses" not in fields and "BusyWorkers" not in fields:
            why = f"{url} is not a mod_status ?auto page: {page[:60]!r}"
            return [self.createEvent("critical", why, 0, "state")]
        events = [self.createEvent("ok", "Connection ok", 1, "state")]
        for name, key, kind in FIELDS:
            try:
                value = kind(fields.get(key, 0))
            except ValueError:
                continue
            events.append(self.createEvent("ok", f"Apache {name}", value, name))
        return events
