"""A real uWSGI Emperor for the tests: Debian's uwsgi, with one Python vassal, on free ports.

`startEmperor` writes a vassal (``app.ini``, a WSGI app on an HTTP
socket) under ``root`` and runs ``uwsgi --emperor`` on that directory
with ``--emperor-stats`` on a free port of 127.0.0.1; it returns once
the stats server answers with the vassal accepting requests.
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort, waitUntil
from spawn import stopProcess

UWSGI = "/usr/bin/uwsgi"
PYTHON_PLUGIN = "/usr/lib/uwsgi/plugins/python3_plugin.so"

VASSAL = """\
[uwsgi]
plugins = python3
http-socket = 127.0.0.1:{port}
wsgi-file = {root}/app.py
master = true
processes = 1
logto = {root}/vassal.log
"""

APP = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"duct"]
"""


@dataclass
class EmperorServer:
    root: Path
    statsPort: int
    process: subprocess.Popen[bytes]

    def stats(self) -> dict:
        """The stats, as the Emperor sends them to anyone who connects."""
        with socket.create_connection(("127.0.0.1", self.statsPort), timeout=5) as s:
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return json.loads(b"".join(chunks))

    def log(self) -> str:
        return (self.root / "uwsgi.log").read_text(errors="replace")

    def stop(self) -> None:
        stopProcess(self.process)  # the Emperor stops its vassals on SIGTERM


def findUwsgi() -> str | None:
    binary = debianBinary(UWSGI, "uwsgi")
    if binary is None or debianBinary(PYTHON_PLUGIN, "uwsgi-plugin-python3") is None:
        return None
    return binary


def startEmperor(binary: str, root: Path) -> EmperorServer:
    """Run the Emperor with one vassal under ``root``; it is accepting once this returns."""
    vassals = root / "vassals"
    vassals.mkdir()
    (root / "app.py").write_text(APP)
    (vassals / "app.ini").write_text(VASSAL.format(port=freePort(), root=root))
    statsPort = freePort()
    argv = [binary, "--emperor", str(vassals), "--emperor-stats", f"127.0.0.1:{statsPort}",
            "--logto", str(root / "uwsgi.log")]  # fmt: skip
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)  # fmt: skip
    server = EmperorServer(root, statsPort, process)

    def accepting() -> bool:
        try:
            return any(v.get("accepting") for v in server.stats().get("vassals", []))
        except (OSError, ValueError):
            return False

    try:
        waitUntil(accepting, "uwsgi emperor", 60, process=process)
    except RuntimeError as e:
        server.stop()
        raise RuntimeError(
            f"{e}: {server.log() if (root / 'uwsgi.log').exists() else ''}"
        ) from None
    return server
