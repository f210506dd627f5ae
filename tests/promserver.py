"""A real Prometheus for the tests: Debian's prometheus under a temporary directory.

`startPrometheus` writes a configuration scraping ``targets`` every
second, starts prometheus on a free port of 127.0.0.1 (with the remote
write receiver on ``/api/v1/write`` when ``receiver``), and returns once
it says it is ready.  `PrometheusServer.stop` and ``server.start`` take it
away and bring it back on the same port with the same data.  Queries go
through `test_prometheus.Prometheus`, on the reactor.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localservers import freePort
from serverprocess import ServerProcess

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: duct
    static_configs: [{{targets: [{targets}]}}]
"""


def findPrometheus() -> str | None:
    return shutil.which("prometheus")


@dataclass
class PrometheusServer:
    root: Path
    port: int
    server: ServerProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def writeURL(self) -> str:
        return f"{self.url}/api/v1/write"

    def stop(self) -> None:
        self.server.stop()


def startPrometheus(
    binary: str, root: Path, targets: Sequence[str] = (), receiver: bool = False
) -> PrometheusServer:
    port = freePort()
    config = root / "prometheus.yml"
    config.write_text(CONFIG.format(targets=", ".join(f'"{t}"' for t in targets)))
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    if receiver:
        command.append("--web.enable-remote-write-receiver")  # the flag since 2.33
    server = ServerProcess(command, "Server is ready to receive web requests", root / "log")
    server.start()
    return PrometheusServer(root, port, server)
