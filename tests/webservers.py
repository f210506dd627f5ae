"""Real web servers for the tests: Debian's apache2, haproxy and prometheus-node-exporter.

Each runs in the foreground on free ports of 127.0.0.1, with its
configuration, pid file, logs and sockets under a temporary directory.
`start` returns once the server accepts connections (its port, polled),
and `stop` terminates it and waits.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localservers import answers, debianBinary, freePort, waitUntil

APACHE = "/usr/sbin/apache2"
HAPROXY = "/usr/sbin/haproxy"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
MODULES = "/usr/lib/apache2/modules"
DEADLINE = 60.0


@dataclass
class Server:
    """A server process, its directory and its ports."""

    root: Path
    command: list[str]
    ports: list[int]
    process: subprocess.Popen[bytes] | None = None
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cleanup: list[Path] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.ports[0]

    def output(self) -> str:
        return (self.root / "output.log").read_text(errors="replace")

    def start(self) -> None:
        with (self.root / "output.log").open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        waitForPort(self.port, self.process, self.output)

    def stop(self) -> None:
        for process in [self.process, *self.helpers]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


def waitForPort(port: int, process: subprocess.Popen[bytes], output: object) -> None:
    try:
        waitUntil(lambda: answers(port), f"the server on port {port}", DEADLINE, process=process)
    except RuntimeError as e:
        process.kill()
        text = output() if callable(output) else ""
        raise RuntimeError(f"{e}:\n{text[-3000:]}") from None


APACHE_CONFIG = """\
ServerRoot {root}
ServerName 127.0.0.1
PidFile {root}/apache2.pid
Listen 127.0.0.1:{port}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule status_module {modules}/mod_status.so
ExtendedStatus On
ErrorLog {root}/error.log
DocumentRoot {htdocs}
StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
{user}
<Location /server-status>
    SetHandler server-status
</Location>
"""


def findApache() -> str | None:
    return debianBinary(APACHE, "apache2")


def apache(binary: str, root: Path) -> Server:
    """Debian's apache2 with mod_status at ``/server-status``, in the foreground."""
    port = freePort()
    # apache's workers run as nobody, who may not enter pytest's temporary directories
    htdocs = Path(tempfile.mkdtemp(prefix="duct-apache-"))
    htdocs.chmod(0o755)
    (htdocs / "index.html").write_text("hello\n")
    (htdocs / "index.html").chmod(0o644)
    user = "User nobody\nGroup nogroup" if _root() else ""
    config = root / "apache2.conf"
    text = APACHE_CONFIG.format(root=root, port=port, modules=MODULES, user=user, htdocs=htdocs)
    config.write_text(text)
    server = Server(root, [binary, "-f", str(config), "-DFOREGROUND"], [port])
    server.cleanup.append(htdocs)
    return server


HAPROXY_CONFIG = """\
global
    stats socket {root}/sock mode 600 level user
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:{port}
    stats enable
    stats uri /haproxy?stats
    default_backend app
backend app
    option httpchk GET /
    server up 127.0.0.1:{up} check inter 300 fall 1 rise 1
    server down 127.0.0.1:{down} check inter 300 fall 1 rise 1
backend dead
    server gone 127.0.0.1:{down} check inter 300 fall 1 rise 1
"""


def findHAProxy() -> str | None:
    return debianBinary(HAPROXY, "haproxy")


def haproxy(binary: str, root: Path) -> Server:
    """Debian's haproxy: a frontend with stats, a backend ``app`` with a server up
    (a twisted.web) and one down, and a backend ``dead`` with no server up."""
    port, up, down = freePort(), freePort(), freePort()
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("hello\n")
    listen = f"tcp:{up}:interface=127.0.0.1"
    command = [
        sys.executable,
        "-m",
        "twisted",
        "web",
        "--listen",
        listen,
        "--path",
        str(root / "www"),
    ]
    web = _run(command, root / "web.log")
    waitForPort(up, web, lambda: (root / "web.log").read_text())
    config = root / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(root=root, port=port, up=up, down=down))
    server = Server(root, [binary, "-f", str(config), "-db"], [port, up, down], helpers=[web])
    return server


def findNodeExporter() -> str | None:
    return debianBinary(NODE_EXPORTER, "prometheus-node-exporter")


def nodeExporter(binary: str, root: Path) -> Server:
    port = freePort()
    command = [binary, f"--web.listen-address=127.0.0.1:{port}"]
    return Server(root, command, [port])


def _run(command: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def _root() -> bool:
    import os

    return os.geteuid() == 0
