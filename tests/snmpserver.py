"""A real snmpd for the tests: Debian's net-snmp agent on a free UDP port of 127.0.0.1.

`startSNMPD` writes an snmpd.conf with a v2c read community and a v3 user
(SHA authentication, AES privacy, authPriv required), makes it answer
for an ADSL line as a router would (`ADSL_LINE`: net-snmp's own agent
has no ADSL-LINE-MIB, so ``override`` lines give its objects), keeps its
persistent state under ``root``, and returns once the agent answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort, waitUntil
from spawn import stopProcess

SNMPD = "/usr/sbin/snmpd"
COMMUNITY = "duct-community"
USER, AUTH_KEY, PRIV_KEY = "duct", "duct-auth-passphrase", "duct-priv-passphrase"

ADSL_LINE_INDEX, ADSL_CHANNEL_INDEX = 15, 16
"""ifIndex of the ADSL line and of its interleaved channel, as on a Cisco 837."""
ADSL_LINE = {
    "1.3.6.1.2.1.10.94.1.1.3.1.4": ("integer", 61),  # adslAturCurrSnrMgn: 6.1 dB
    "1.3.6.1.2.1.10.94.1.1.3.1.5": ("integer", 315),  # adslAturCurrAtn: 31.5 dB
    "1.3.6.1.2.1.10.94.1.1.3.1.7": ("integer", 124),  # adslAturCurrOutputPwr: 12.4 dBm
}
ADSL_CHANNEL = {
    "1.3.6.1.2.1.10.94.1.1.4.1.2": ("unsigned", 8128000),  # adslAtucChanCurrTxRate
    "1.3.6.1.2.1.10.94.1.1.5.1.2": ("unsigned", 832000),  # adslAturChanCurrTxRate
}
OVERRIDES = "".join(
    [
        f"override {oid}.{ADSL_LINE_INDEX} {kind} {value}\n"
        for oid, (kind, value) in ADSL_LINE.items()
    ]
    + [
        f"override {oid}.{ADSL_CHANNEL_INDEX} {kind} {value}\n"
        for oid, (kind, value) in ADSL_CHANNEL.items()
    ]
)

CONFIG = f"""\
rocommunity {COMMUNITY} 127.0.0.1
createUser {USER} SHA "{AUTH_KEY}" AES "{PRIV_KEY}"
rouser {USER} priv
{OVERRIDES}"""


@dataclass
class SNMPAgent:
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.root / "snmpd.log").read_text(errors="replace")

    def stop(self) -> None:
        stopProcess(self.process)


def findSNMPD() -> str | None:
    return debianBinary(SNMPD, "snmpd")


def startSNMPD(binary: str, root: Path) -> SNMPAgent:
    """Start snmpd in the foreground; it answers requests once this returns."""
    port = freePort(socket.SOCK_DGRAM)
    conf = root / "snmpd.conf"
    conf.write_text(CONFIG)
    (root / "persist").mkdir()
    # No MIBs: the agent needs none, and loading Debian's partial set only logs noise.
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(root / "persist"), "MIBS": "",
           "MIBDIRS": str(root / "no-mibs")}  # fmt: skip
    command = [binary, "-f", "-Lf", str(root / "snmpd.log"), "-C", "-c", str(conf),
               "-p", str(root / "snmpd.pid"), f"udp:127.0.0.1:{port}"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    server = SNMPAgent(root, port, process)

    def started() -> bool:
        return (root / "snmpd.log").exists() and "NET-SNMP version" in server.log()

    try:
        waitUntil(started, "snmpd", 30, process=process)
    except RuntimeError as e:
        server.stop()
        raise RuntimeError(f"{e}: {server.log()}") from None
    return server
