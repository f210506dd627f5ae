"""What the tests that start real servers share: free ports, and Debian binaries.

A server the suite runs against (nginx, sshd, prometheus, ...) is a
Debian package.  `debianBinary` finds its binary, installing the package
first when the tests run as root, as ``scripts/test-deps.sh`` does for
``make test``; `freePort` gives it a port on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess


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
