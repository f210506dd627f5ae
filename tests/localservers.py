"""What the tests that start real servers share: free ports, and Debian binaries.

A server the suite runs against (nginx, sshd, prometheus, ...) is a
Debian package.  `debianBinary` finds its binary, installing the package
first when the tests run as root, as ``scripts/test-deps.sh`` does for
``make test``; `freePort` gives it a port on 127.0.0.1, and `waitUntil`
waits for it to be ready while watching that it has not exited.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable


def freePort(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 free right now, for TCP or (``SOCK_DGRAM``) UDP."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def debianBinary(path: str, package: str) -> str | None:
    """``path`` if it exists, after installing ``package`` with apt-get as root if need be."""
    if os.path.exists(path):
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
        return path if os.path.exists(path) else None
    return None


def waitUntil(
    ready: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    process: subprocess.Popen[bytes] | None = None,
    pid: int | None = None,
) -> None:
    """Return once ``ready()`` is true, for a server starting in a process of its own.

    Between tries it waits on that process for up to 50 ms (``process``, a
    child, or ``pid``, any process, through a pidfd), so that a server that
    exits is reported at once instead of timing out.  RuntimeError when it
    exits or ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(pid) if pid is not None else None
    try:
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not ready within {timeout:g}s")
            if process is not None:
                try:
                    code = process.wait(0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise RuntimeError(f"{what}: exited with status {code}")
            if pidfd is not None and select.select([pidfd], [], [], 0.05)[0]:
                raise RuntimeError(f"{what}: its process {pid} exited")
    finally:
        if pidfd is not None:
            os.close(pidfd)


def processExit(pid: int, timeout: float) -> bool:
    """Wait for process ``pid`` (a child or not) to end; False if it outlives ``timeout``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def answers(port: int, greeting: bytes = b"", timeout: float = 1.0) -> bool:
    """Whether 127.0.0.1:``port`` accepts a connection (and first sends ``greeting``)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return not greeting or s.recv(100).startswith(greeting)
    except OSError:
        return False
