"""A real nginx for the tests: Debian's /usr/sbin/nginx under a temporary directory.

`startNginx` writes a minimal configuration (a ``stub_status`` location,
a page at ``/``, and every pid, log and temp path under the directory),
starts nginx on a free port of 127.0.0.1 and returns once it listens.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort

NGINX = "/usr/sbin/nginx"

CONFIG = """\
pid {root}/nginx.pid;
error_log {root}/error.log notice;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /nginx_status {{ stub_status; }}
        location / {{ return 200 "hello\\n"; }}
    }}
}}
"""


@dataclass
class Nginx:
    root: Path
    port: int
    pid: int

    @property
    def statusURL(self) -> str:
        return f"http://127.0.0.1:{self.port}/nginx_status"

    def log(self) -> str:
        return (self.root / "error.log").read_text(errors="replace")


def findNginx() -> str | None:
    """The nginx binary; installed with apt-get first when running as root."""
    return debianBinary(NGINX, "nginx")


def startNginx(binary: str, root: Path) -> Nginx:
    """Start nginx under ``root``; it listens once this returns.

    nginx opens its listening socket before it puts itself in the
    background, so the exit of the command that starts it says that it is
    ready, with no waiting in between.
    """
    port = freePort()
    conf = root / "nginx.conf"
    conf.write_text(CONFIG.format(root=root, port=port))
    command = [binary, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"nginx did not start: {done.stderr}")
    return Nginx(root, port, int((root / "nginx.pid").read_text()))


def stopNginx(binary: str, server: Nginx) -> None:
    """Stop nginx and wait for its master process to exit."""
    import psutil

    try:
        master = psutil.Process(server.pid)
    except psutil.NoSuchProcess:
        return
    conf = server.root / "nginx.conf"
    command = [binary, "-p", str(server.root), "-e", str(server.root / "error.log")]
    subprocess.run([*command, "-c", str(conf), "-s", "stop"], check=False, timeout=60)
    try:
        master.wait(timeout=30)
    except psutil.TimeoutExpired:
        master.kill()
