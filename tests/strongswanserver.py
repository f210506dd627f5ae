"""A real strongSwan for the tests: Debian's charon with a private config, and no peer.

`startCharon` writes a strongswan.conf that keeps charon's sockets,
ports and log under ``root``, loads three connections with swanctl and
brings one up.  No other host is needed: ``office`` (127.0.0.1) dials
``branch`` (127.0.0.2), and the same charon answers as ``branch``, so
both IKE SAs are ESTABLISHED.  They are childless (IKE only), so nothing
is installed in the kernel.  ``nowhere`` points at a documentation
address and stays down.  ``ipsec`` is a wrapper that runs Debian's
``ipsec`` with this config, as the source runs it.

charon keeps a fixed pid file (/var/run/charon.pid): one charon runs per
machine, so this must run as root, with no system strongSwan running.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort, waitUntil
from spawn import stopProcess

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = ("random nonce kdf openssl pem pkcs1 x509 revocation constraints pubkey "
           "socket-default kernel-netlink stroke vici updown")  # fmt: skip

CONNECTIONS = """\
connections {{
    office {{
        version = 2
        local_addrs = 127.0.0.1
        remote_addrs = 127.0.0.2
        remote_port = {port}
        childless = force
        local {{
            auth = psk
            id = office
        }}
        remote {{
            auth = psk
            id = branch
        }}
    }}
    branch {{
        version = 2
        local_addrs = 127.0.0.2
        remote_addrs = 127.0.0.1
        childless = allow
        local {{
            auth = psk
            id = branch
        }}
        remote {{
            auth = psk
            id = office
        }}
    }}
    nowhere {{
        local_addrs = 127.0.0.1
        remote_addrs = 192.0.2.99
        local {{
            auth = psk
        }}
        remote {{
            auth = psk
        }}
        children {{
            lan {{
                local_ts = 10.1.0.0/16
                remote_ts = 10.2.0.0/16
            }}
        }}
    }}
}}
secrets {{
    ike-test {{
        id-office = office
        id-branch = branch
        secret = "duct-test-psk"
    }}
}}
"""


@dataclass
class Charon:
    root: Path
    process: subprocess.Popen[bytes]
    ipsec: Path
    """A wrapper running Debian's ipsec with this charon's config."""

    def log(self) -> str:
        path = self.root / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def swanctl(self, *args: str) -> str:
        env = {**os.environ, "STRONGSWAN_CONF": str(self.root / "strongswan.conf")}
        done = subprocess.run(["swanctl", *args], env=env, capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"swanctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def stop(self) -> None:
        stopProcess(self.process)


def findCharon() -> str | None:
    if debianBinary("/usr/sbin/swanctl", "strongswan-swanctl") is None:
        return None
    if debianBinary("/usr/sbin/ipsec", "strongswan-starter") is None:
        return None
    return debianBinary(CHARON, "strongswan-charon")


def startCharon(binary: str, root: Path) -> Charon:
    """Start charon, load the connections and bring ``office`` up."""
    port, natPort = freePort(socket.SOCK_DGRAM), freePort(socket.SOCK_DGRAM)
    conf = root / "strongswan.conf"
    conf.write_text(f"""\
charon {{
    load = {PLUGINS}
    port = {port}
    port_nat_t = {natPort}
    install_routes = no
    install_virtual_ip = no
    plugins {{
        stroke {{
            socket = unix://{root}/charon.ctl
        }}
        vici {{
            socket = unix://{root}/charon.vici
        }}
    }}
    filelog {{
        log {{
            path = {root}/charon.log
            default = 1
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
swanctl {{
    socket = unix://{root}/charon.vici
}}
""")
    (root / "swanctl.conf").write_text(CONNECTIONS.format(port=port))
    ipsec = root / "ipsec"
    ipsec.write_text(f'#!/bin/sh\nSTRONGSWAN_CONF={conf} exec /usr/sbin/ipsec "$@"\n')
    ipsec.chmod(0o755)
    env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    charon = Charon(root, process, ipsec)
    try:
        waitUntil(lambda: (root / "charon.vici").exists(), "charon", 30, process=process)
        charon.swanctl("--load-all", "--file", str(root / "swanctl.conf"))
        charon.swanctl("--initiate", "--ike", "office", "--timeout", "20")
    except RuntimeError as e:
        charon.stop()
        raise RuntimeError(f"{e}: {charon.log()}") from None
    return charon
