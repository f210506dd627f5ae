"""nginx: connections and requests, from its stub_status page."""

import re
from urllib.parse import urlsplit

from duct.aggregators import Counter
from duct.lib.http import HTTP_CLIENT_OPTIONS
from duct.objects import Event, Source
from duct.options import Option

NAMES = ("active", "accepts", "handled", "requests", "reading", "writing", "waiting")
PAGE = re.compile(r"Active connections: (\d+)\D+(\d+) (\d+) (\d+)\D+(\d+)\D+(\d+)\D+(\d+)")


class Nginx(Source):
    """Connections and requests from nginx's ``stub_status`` page at ``url``.

    ``{service}.active``, ``.reading``, ``.writing``, ``.waiting``: connections now;
    ``.accepts``, ``.handled``, ``.requests``: per second.  Attributes ``server`` and
    ``port`` name the nginx.  A page that does not parse fails the poll."""

    sync = True
    options = (
        Option("url", "string", "http://localhost/nginx_status", "URL of the stub_status page"),
        Option("stats_url", "string", None, "the same as url, under its older name"),
        *HTTP_CLIENT_OPTIONS,
    )

    async def get(self) -> list[Event]:
        url = self.config["stats_url"] or self.config["url"]
        page = (await self.http.getBody(url)).decode("latin-1")
        if (found := PAGE.search(page)) is None:
            raise ValueError(f"{url} is not a stub_status page: {page[:60]!r}")
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        where = {"server": parts.hostname or "", "port": str(port)}
        return [self.createEvent("ok", f"nginx {name}", int(value), name, None,
                                 Counter if name in NAMES[1:4] else None, attributes=where)
                for name, value in zip(NAMES, found.groups(), strict=True)]  # fmt: skip


from duct.sources.nginxlog import NginxLog, NginxLogMetrics  # noqa: E402  (its access log)

__all__ = ["Nginx", "NginxLog", "NginxLogMetrics"]
