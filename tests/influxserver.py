"""A real InfluxDB for the tests: Debian's influxd (1.6) under a temporary directory.

`startInflux` writes a configuration with every directory under ``root``,
the HTTP API on a free port of 127.0.0.1 and reporting, monitoring and
continuous queries off, starts influxd, returns once it listens, and
creates the database ``duct``.  `Influx.query` reads back what was stored.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localservers import freePort
from serverprocess import ServerProcess

CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""


def findInflux() -> str | None:
    return shutil.which("influxd") or (
        "/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None
    )


@dataclass
class Influx:
    root: Path
    port: int
    server: ServerProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, q: str, db: str = "duct") -> list[dict[str, Any]]:
        """The series of the first statement of ``q`` (blocking: call off the reactor's turn)."""
        data = urllib.parse.urlencode({"q": q, "db": db, "epoch": "u"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data, timeout=10) as response:
            body = json.load(response)
        result = body["results"][0]
        if "error" in result:
            raise AssertionError(f"{q}: {result['error']}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def rows(self, q: str, db: str = "duct") -> list[dict[str, Any]]:
        """Every row of the first statement's series, each a dict of column to value."""
        return [
            dict(zip(series["columns"], values, strict=True))
            for series in self.query(q, db)
            for values in series["values"]
        ]

    def write(self, body: str, db: str = "duct") -> None:
        """Write line protocol directly (to set up a conflict, say)."""
        url = f"{self.url}/write?db={db}&precision=u"
        urllib.request.urlopen(url, body.encode(), timeout=10).close()


def startInflux(binary: str, root: Path) -> Influx:
    port, rpc = freePort(), freePort()
    conf = root / "influxdb.conf"
    conf.write_text(CONFIG.format(root=root, port=port, rpc=rpc))
    server = ServerProcess([binary, "-config", str(conf)], "Listening on HTTP", root / "log")
    server.start()
    influx = Influx(root, port, server)
    influx.query("CREATE DATABASE duct")
    return influx
