"""A real carbon-cache for the tests: Debian's graphite-carbon under a temporary directory.

`startCarbon` writes a ``carbon.conf`` (every directory under the root,
free ports for the line, pickle and cache-query receivers) and a
``storage-schemas.conf`` keeping one point a second for a day, starts
``carbon-cache --nodaemon`` and returns once carbon says both receivers
listen.  `Carbon.points` reads back what carbon stored, from its whisper
files.  `Carbon.stop` and `Carbon.start` stop and restart it on the same
ports and store.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort
from spawn import startLogged, stopProcess

CARBON_CACHE = "/usr/bin/carbon-cache"

CONFIG = """\
[cache]
STORAGE_DIR = {root}/storage/
LOCAL_DATA_DIR = {root}/storage/whisper/
CONF_DIR = {root}/
LOG_DIR = {root}/log/
PID_DIR = {root}/
DATABASE = whisper
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 100000
MAX_CREATES_PER_MINUTE = 100000
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query}
ENABLE_UDP_LISTENER = False
USE_FLOW_CONTROL = True
WHISPER_AUTOFLUSH = True
"""

SCHEMAS = """\
[default]
pattern = .*
retentions = 1s:1d
"""


def findCarbon() -> str | None:
    """carbon-cache; installed with apt-get first when running as root."""
    return debianBinary(CARBON_CACHE, "graphite-carbon")


@dataclass
class Carbon:
    binary: str
    root: Path
    line: int
    pickle: int
    query: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def store(self) -> Path:
        return self.root / "storage" / "whisper"

    def port(self, protocol: str) -> int:
        return self.pickle if protocol == "pickle" else self.line

    def start(self) -> None:
        """Start carbon-cache; return once both receivers listen."""
        command = [self.binary, f"--config={self.root / 'carbon.conf'}", "--nodaemon", "start"]
        wanted = [f"starting on {self.line}", f"starting on {self.pickle}"]
        self.process = startLogged(command, self.root, wanted, self.root / "console.log")

    def stop(self) -> None:
        """Stop carbon-cache (it writes its cache out first) and wait for it to exit."""
        process, self.process = self.process, None
        if process is not None:
            stopProcess(process)

    def points(self, path: str, since: float, until: float | None = None) -> dict[int, float]:
        """What carbon stored for ``path`` since ``since``: timestamp -> value."""
        import whisper

        file = self.store.joinpath(*path.split(".")).with_suffix(".wsp")
        if not file.exists():
            return {}
        now = time.time()
        fetched = whisper.fetch(str(file), since - 1, until or now + 1, now=now + 1)
        if fetched is None:
            return {}
        (start, _, step), values = fetched
        return {start + i * step: v for i, v in enumerate(values) if v is not None}

    def paths(self) -> list[str]:
        """Every path carbon has a file for."""
        return sorted(
            ".".join(file.relative_to(self.store).with_suffix("").parts)
            for file in self.store.rglob("*.wsp")
        )


def startCarbon(binary: str, root: Path) -> Carbon:
    """Configure a carbon-cache under ``root`` on free ports and start it."""
    carbon = Carbon(binary, root, freePort(), freePort(), freePort())
    (root / "carbon.conf").write_text(
        CONFIG.format(root=root, line=carbon.line, pickle=carbon.pickle, query=carbon.query)
    )
    (root / "storage-schemas.conf").write_text(SCHEMAS)
    carbon.start()
    return carbon
