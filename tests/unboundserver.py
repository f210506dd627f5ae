"""A real unbound for the tests: Debian's, answering a local zone on a free port.

`startUnbound` writes an unbound.conf with every path under ``root``, a
control socket there without certificates, and a static zone
``duct.test.`` (``a.duct.test`` is 127.0.0.1), so that no query leaves
the machine.  It returns once unbound-control reaches the server.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort, waitUntil
from spawn import stopProcess

UNBOUND = "/usr/sbin/unbound"
UNBOUND_CONTROL = "/usr/sbin/unbound-control"

CONFIG = """\
server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{root}"
    pidfile: "{root}/unbound.pid"
    use-syslog: no
    logfile: "{root}/unbound.log"
    module-config: "iterator"
    local-zone: "duct.test." static
    local-data: "a.duct.test. A 127.0.0.1"
remote-control:
    control-enable: yes
    control-use-cert: no
    control-interface: "{root}/control.sock"
"""


@dataclass
class UnboundServer:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def conf(self) -> str:
        return str(self.root / "unbound.conf")

    def query(self) -> bytes:
        """Ask for ``a.duct.test`` A once; the answer's bytes."""
        question = (
            bytes.fromhex("123401000001000000000000") + b"\x01a\x04duct\x04test\x00\x00\x01\x00\x01"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(question, ("127.0.0.1", self.port))
            return s.recv(512)

    def log(self) -> str:
        return (self.root / "unbound.log").read_text(errors="replace")

    def stop(self) -> None:
        stopProcess(self.process)


def findUnbound() -> str | None:
    if debianBinary(UNBOUND, "unbound") is None or not Path(UNBOUND_CONTROL).exists():
        return None
    return UNBOUND


def startUnbound(binary: str, root: Path) -> UnboundServer:
    """Start unbound in the foreground under ``root``; unbound-control reaches it on return."""
    port = freePort(socket.SOCK_DGRAM)
    conf = root / "unbound.conf"
    conf.write_text(CONFIG.format(root=root, port=port))
    with (root / "stderr").open("wb") as stderr:
        process = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=stderr)  # fmt: skip
    server = UnboundServer(root, port, process)
    status = [UNBOUND_CONTROL, "-c", str(conf), "status"]
    try:
        waitUntil(lambda: subprocess.run(status, capture_output=True).returncode == 0,
                  "unbound", 30, process=process)  # fmt: skip
    except RuntimeError as e:
        server.stop()
        raise RuntimeError(f"{e}: {(root / 'stderr').read_text()}{server.log()}") from None
    return server
