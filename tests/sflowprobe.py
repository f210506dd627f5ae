"""A real sFlow agent for the tests: Debian's pmacctd with its sfprobe plugin, on ``lo``.

pmacctd captures with libpcap the packets to and from one port of
127.0.0.1 (UDP and TCP) and exports each one, sampled 1 in 1, as an sFlow
v5 flow sample to a collector on 127.0.0.1, tagged with ifIndex 7; every
20 seconds it also sends that interface's counters.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from localservers import debianBinary, freePort
from serverprocess import ServerProcess

PMACCTD = "/usr/sbin/pmacctd"
IFINDEX = 7
SUBAGENT = 1402


@dataclass
class SFlowProbe:
    process: ServerProcess
    collectorPort: int
    """Where the collector under test must listen, UDP on 127.0.0.1."""
    trafficPort: int
    """The port whose traffic is sampled, UDP and TCP on 127.0.0.1."""

    def stop(self) -> None:
        self.process.stop()


def findPmacctd() -> str | None:
    return debianBinary(PMACCTD, "pmacct")


def startProbe(binary: str, root: Path) -> SFlowProbe:
    collector, traffic = freePort(socket.SOCK_DGRAM), freePort()
    conf = root / "pmacctd.conf"
    conf.write_text(
        "daemonize: false\n"
        "pcap_interface: lo\n"
        f"pcap_filter: port {traffic}\n"
        "plugins: sfprobe[probe]\n"
        f"sfprobe_receiver[probe]: 127.0.0.1:{collector}\n"
        f"sfprobe_agentsubid[probe]: {SUBAGENT}\n"
        f"sfprobe_ifindex[probe]: {IFINDEX}\n"
        "sampling_rate[probe]: 1\n"
    )
    process = ServerProcess([binary, "-f", str(conf)], "Exporting flows to", root / "pmacctd.log")
    process.start()
    return SFlowProbe(process, collector, traffic)
