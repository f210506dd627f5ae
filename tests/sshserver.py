"""A real OpenSSH server for the tests: Debian's /usr/sbin/sshd under a temporary directory.

`startSSHD` makes a throwaway host key and user key with ssh-keygen,
writes a configuration that takes only that user key (for the user the
tests run as), starts ``sshd -D -e`` on a free port of 127.0.0.1 and
returns once it accepts connections.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from localservers import debianBinary, freePort

SSHD_BINARY = "/usr/sbin/sshd"

CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers {user}
MaxStartups 100
MaxSessions 100
LogLevel INFO
"""


@dataclass
class SSHD:
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    user: str

    @property
    def hostKey(self) -> str:
        """The server's public host key, as ``type base64``."""
        return " ".join((self.root / "host_key.pub").read_text().split()[:2])

    @property
    def userKeyFile(self) -> str:
        return str(self.root / "user_key")

    @property
    def userKey(self) -> str:
        return (self.root / "user_key").read_text()

    def knownHosts(self, path: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> str:
        """Write a known_hosts file listing this server under ``hosts``; return its path."""
        lines = [f"[{host}]:{self.port} {self.hostKey}\n" for host in hosts]
        path.write_text("".join(lines))
        return str(path)

    def options(self, knownHosts: str) -> dict[str, object]:
        """The ``ssh_*`` options that log in to this server."""
        return {
            "use_ssh": True,
            "ssh_port": self.port,
            "ssh_username": self.user,
            "ssh_keyfile": self.userKeyFile,
            "ssh_knownhosts_file": knownHosts,
        }

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")


def findSSHD() -> str | None:
    """The sshd binary; installed with apt-get first when running as root."""
    return debianBinary(SSHD_BINARY, "openssh-server")


def keygen(path: Path) -> None:
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "duct-test", "-f", str(path)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def _copy(stream: IO[bytes], path: Path) -> None:
    """Write what sshd still logs to ``path``, so that its stderr pipe never fills."""
    with open(path, "ab") as log:
        for line in stream:
            log.write(line)
            log.flush()


def startSSHD(binary: str, root: Path) -> SSHD:
    """Start sshd under ``root`` for the current user; it accepts connections once this returns."""
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    keygen(root / "host_key")
    keygen(root / "user_key")
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    port, user = freePort(), getpass.getuser()
    conf = root / "sshd_config"
    conf.write_text(CONFIG.format(port=port, root=root, user=user))
    checked = subprocess.run([binary, "-t", "-f", str(conf)], capture_output=True, text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"sshd refuses its configuration: {checked.stderr}")
    command = [binary, "-D", "-e", "-f", str(conf)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    # With -e, sshd logs to stderr; "Server listening" comes once it has bound its port.
    early: list[bytes] = []
    for line in process.stderr:
        early.append(line)
        if b"Server listening" in line:
            break
    else:
        process.wait(timeout=30)
        raise RuntimeError(f"sshd did not start: {b''.join(early).decode(errors='replace')}")
    (root / "sshd.log").write_bytes(b"".join(early))
    threading.Thread(target=_copy, args=(process.stderr, root / "sshd.log"), daemon=True).start()
    return SSHD(root, port, process, user)


def stopSSHD(server: SSHD) -> None:
    """Stop sshd (its connection processes end with it) and wait for it to exit."""
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
