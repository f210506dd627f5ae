"""A real OpenTSDB HTTP listener for the tests: Debian's victoria-metrics under a tmp root.

`startVictoriaMetrics` starts ``victoria-metrics`` on free ports of
127.0.0.1, with its store under the directory and ``/api/put`` on the
OpenTSDB HTTP listener, and returns once both listen.  `VictoriaMetrics.export`
reads back what it stored.  `stop` and `start` restart it on the same
ports and store.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localservers import debianBinary, freePort
from spawn import startLogged, stopProcess

VICTORIA_METRICS = "/usr/bin/victoria-metrics"


def findVictoriaMetrics() -> str | None:
    """victoria-metrics; installed with apt-get first when running as root."""
    return debianBinary(VICTORIA_METRICS, "victoria-metrics")


@dataclass
class VictoriaMetrics:
    binary: str
    root: Path
    httpPort: int
    putPort: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the OpenTSDB output points: the listener that takes /api/put."""
        return f"http://127.0.0.1:{self.putPort}"

    def start(self) -> None:
        command = [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.httpPort}",
            f"-opentsdbHTTPListenAddr=127.0.0.1:{self.putPort}",
            f"-storageDataPath={self.root / 'data'}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ]
        wanted = [
            f"starting http server at http://127.0.0.1:{self.httpPort}/",
            f'starting HTTP OpenTSDB server at "127.0.0.1:{self.putPort}"',
        ]
        self.process = startLogged(command, self.root, wanted, self.root / "vm.log")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stopProcess(process)

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every series matching ``match``, with its values and timestamps (ms)."""
        base = f"http://127.0.0.1:{self.httpPort}"
        urllib.request.urlopen(f"{base}/internal/force_flush", timeout=30).read()
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        body = urllib.request.urlopen(f"{base}/api/v1/export?{query}", timeout=30).read()
        return [json.loads(line) for line in body.splitlines() if line.strip()]


def startVictoriaMetrics(binary: str, root: Path) -> VictoriaMetrics:
    server = VictoriaMetrics(binary, root, freePort(), freePort())
    server.start()
    return server
