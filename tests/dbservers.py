"""Real Redis, memcached, PostgreSQL and MariaDB for the tests: Debian's, under tmp.

Each ``start*`` starts one server on a free port of 127.0.0.1 with all of
its files in a new temporary directory, and returns once it answers;
``stop()`` ends it and removes the directory.  The servers that refuse to
run as root (postgres, mariadbd, memcached) run as their package's user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from localservers import answers, debianBinary, freePort, waitUntil
from spawn import stopProcess

REDIS = "/usr/bin/redis-server"
MEMCACHED = "/usr/bin/memcached"
POSTGRES_BIN = "/usr/lib/postgresql/15/bin"
MARIADBD = "/usr/sbin/mariadbd"


@dataclass
class Server:
    name: str
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    version: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stopProcess(self.process)
        shutil.rmtree(self.root, ignore_errors=True)


def ownedTemp(prefix: str, user: str | None) -> Path:
    """A new directory under /tmp (not the 0700 pytest one), owned by ``user`` when root."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if user and os.geteuid() == 0:
        shutil.chown(root, user, user)
    return root


def asUser(user: str, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if os.geteuid() == 0 else argv


def waitForPort(server: Server, timeout: float = 60.0) -> Server:
    """Return once ``server`` accepts a TCP connection; RuntimeError if it exits first."""
    try:
        waitUntil(lambda: answers(server.port), server.name, timeout, process=server.process)
    except RuntimeError as e:
        server.stop()
        raise RuntimeError(f"{e}: {server.log()[-2000:]}") from None
    return server


def spawn(name: str, root: Path, port: int, argv: list[str]) -> Server:
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server's for its life
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    return Server(name, root, port, process)


def findRedis() -> str | None:
    return debianBinary(REDIS, "redis-server")


def startRedis(binary: str) -> Server:
    root, port = ownedTemp("duct-redis-", None), freePort()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root),
            "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
    server = waitForPort(spawn("redis-server", root, port, argv))
    done = subprocess.run([binary, "--version"], capture_output=True, text=True)
    server.version = done.stdout.split()[2].removeprefix("v=")
    return server


def findMemcached() -> str | None:
    return debianBinary(MEMCACHED, "memcached")


def startMemcached(binary: str) -> Server:
    root, port = ownedTemp("duct-memcached-", None), freePort()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16"]
    if os.geteuid() == 0:
        argv += ["-u", "memcache"]
    server = waitForPort(spawn("memcached", root, port, argv))
    server.version = subprocess.run([binary, "-V"], capture_output=True, text=True).stdout.split()[
        1
    ]
    return server


def findPostgres() -> str | None:
    return debianBinary(f"{POSTGRES_BIN}/postgres", "postgresql")


def startPostgres(binary: str) -> Server:
    """initdb, then postgres with its socket and data under a directory the postgres user owns."""
    bin = Path(binary).parent
    root, port = ownedTemp("duct-postgres-", "postgres"), freePort()
    data = root / "data"
    init = [str(bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N"]
    subprocess.run(asUser("postgres", init), check=True, capture_output=True, timeout=120)
    argv = asUser("postgres", [binary, "-D", str(data), "-p", str(port), "-k", str(root),
                               "-h", "127.0.0.1", "-c", "fsync=off"])  # fmt: skip
    server = waitForPort(spawn("postgres", root, port, argv))
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    server.version = version.split()[2]
    ready = [str(bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    waitUntil(lambda: subprocess.run(ready).returncode == 0, "postgres", process=server.process)
    return server


def findMariaDB() -> str | None:
    return debianBinary(MARIADBD, "mariadb-server")


def startMariaDB(binary: str) -> Server:
    """mariadb-install-db, mariadbd, then a user ``duct`` (password ``duct``) for TCP."""
    user = "mysql" if os.geteuid() == 0 else None
    root, port = ownedTemp("duct-mariadb-", user), freePort()
    data, sock = root / "data", root / "sock"
    install = ["mariadb-install-db", f"--datadir={data}", "--skip-test-db",
               "--auth-root-authentication-method=socket"]  # fmt: skip
    install += [f"--user={user}"] if user else []
    subprocess.run(install, check=True, capture_output=True, timeout=120)
    argv = [binary, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
            "--bind-address=127.0.0.1", f"--pid-file={root}/mariadbd.pid", "--skip-log-bin",
            "--innodb-buffer-pool-size=16M", "--skip-name-resolve"]  # fmt: skip
    if user:
        argv.append(f"--user={user}")
    server = waitForPort(spawn("mariadbd", root, port, argv))
    sql = "CREATE USER duct@'127.0.0.1' IDENTIFIED BY 'duct';"
    subprocess.run(["mariadb", f"--socket={sock}", "-u", "root", "-e", sql], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    server.version = version.split("Ver ")[1].split("-")[0]
    server.extra["socket"] = str(sock)
    return server
