"""Parsers of Linux ``/proc`` files and of ``df -P -T -B1``, for checks over SSH.

Locally the system sources ask psutil, which reads the same files; these
parsers read them as text fetched from another host, and give the numbers
psutil would give there, so a remote check reports what a local one does.
Each takes the whole text of its file and returns plain values.
"""

from __future__ import annotations

from typing import NamedTuple

DF_COMMAND = ("df", "-P", "-T", "-B1")
"""Every mounted filesystem with its type, sizes in bytes, one line each (POSIX layout)."""

CPU_FIELDS = (
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice",
)  # fmt: skip
"""The columns of the ``cpu`` line of /proc/stat, in order (older kernels have fewer)."""

SECTOR_SIZE = 512
"""Bytes per sector in /proc/diskstats, whatever the device's own sector size."""


class DiskCounters(NamedTuple):
    """One block device's counters, as ``psutil.disk_io_counters`` names them."""

    read_count: int
    read_bytes: int
    read_time: int
    write_count: int
    write_bytes: int
    write_time: int


class NetCounters(NamedTuple):
    """One interface's counters, as ``psutil.net_io_counters`` names them."""

    bytes_sent: int
    packets_sent: int
    errout: int
    bytes_recv: int
    packets_recv: int
    errin: int


class Mount(NamedTuple):
    """One line of ``df -P -T -B1``: sizes in bytes."""

    device: str
    fstype: str
    total: int
    used: int
    free: int
    mountpoint: str


def cpuTimes(stat: str) -> dict[str, int]:
    """The machine-wide ``cpu`` line of /proc/stat: clock ticks by field name."""
    for line in stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            return {name: int(value) for name, value in zip(CPU_FIELDS, parts[1:], strict=False)}
    raise ValueError("no cpu line in /proc/stat")


def cpuLines(stat: str) -> dict[str, dict[str, int]]:
    """Every ``cpu`` line of /proc/stat (``cpu``, ``cpu0``, ``cpu1``, ...): ticks by field."""
    lines = {
        parts[0]: {name: int(value) for name, value in zip(CPU_FIELDS, parts[1:], strict=False)}
        for parts in (line.split() for line in stat.splitlines())
        if parts and parts[0].startswith("cpu") and (parts[0] == "cpu" or parts[0][3:].isdigit())
    }
    if "cpu" not in lines:
        raise ValueError("no cpu line in /proc/stat")
    return lines


def memory(meminfo: str) -> tuple[int, int]:
    """``(total, available)`` bytes from /proc/meminfo.

    Available is ``MemAvailable`` (kernel 3.14 and later); before that,
    free memory plus buffers and page cache.
    """
    values: dict[str, int] = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[name.strip()] = int(fields[0]) * 1024
    if "MemTotal" not in values:
        raise ValueError("no MemTotal in /proc/meminfo")
    total = values["MemTotal"]
    available = values.get("MemAvailable")
    if not available:
        available = (
            values.get("MemFree", 0)
            + values.get("Buffers", 0)
            + values.get("Cached", 0)
            + values.get("SReclaimable", 0)
        )
    return total, min(max(available, 0), total)


def loadAverage(loadavg: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages from /proc/loadavg."""
    fields = loadavg.split()
    if len(fields) < 3:
        raise ValueError(f"not /proc/loadavg: {loadavg[:40]!r}")
    return float(fields[0]), float(fields[1]), float(fields[2])


def diskCounters(diskstats: str) -> dict[str, DiskCounters]:
    """Counters per device from /proc/diskstats (partitions too), bytes from sectors."""
    disks: dict[str, DiskCounters] = {}
    for line in diskstats.splitlines():
        fields = line.split()
        if len(fields) == 7:  # a partition, on Linux 2.6: reads, sectors, writes, sectors
            name = fields[2]
            reads, rsectors, writes, wsectors = map(int, fields[3:7])
            disks[name] = DiskCounters(
                reads, rsectors * SECTOR_SIZE, 0, writes, wsectors * SECTOR_SIZE, 0
            )
            continue
        if len(fields) == 15:  # Linux 2.4: no minor-number column shift
            name, numbers = fields[3], fields[4:15]
            reads = int(fields[2])
            values = [reads, *map(int, numbers)]
        elif len(fields) >= 14:
            name = fields[2]
            values = [int(value) for value in fields[3:14]]
        else:
            continue
        reads, _merged, rsectors, rtime, writes, _wmerged, wsectors, wtime = values[:8]
        disks[name] = DiskCounters(
            reads, rsectors * SECTOR_SIZE, rtime, writes, wsectors * SECTOR_SIZE, wtime
        )
    return disks


def netCounters(netdev: str) -> dict[str, NetCounters]:
    """Counters per interface from /proc/net/dev (received columns first, then sent)."""
    interfaces: dict[str, NetCounters] = {}
    for line in netdev.splitlines():
        name, colon, rest = line.partition(":")
        fields = rest.split()
        if not colon or len(fields) < 16 or not fields[0].isdigit():
            continue  # the two header lines
        received, sent = [int(v) for v in fields[:8]], [int(v) for v in fields[8:16]]
        interfaces[name.strip()] = NetCounters(
            bytes_sent=sent[0],
            packets_sent=sent[1],
            errout=sent[2],
            bytes_recv=received[0],
            packets_recv=received[1],
            errin=received[2],
        )
    return interfaces


def deviceFilesystems(filesystems: str) -> set[str]:
    """The filesystem types of /proc/filesystems that live on a device (not ``nodev``).

    ZFS is listed as ``nodev`` but holds disks, so it is kept, as psutil does.
    """
    kinds: set[str] = set()
    for line in filesystems.splitlines():
        fields = line.split()
        if len(fields) == 1:
            kinds.add(fields[0])
        elif len(fields) == 2 and fields[0] == "nodev" and fields[1] == "zfs":
            kinds.add("zfs")
    return kinds


def mounts(df: str) -> list[Mount]:
    """The filesystems ``df -P -T -B1`` lists, in its order (the header line skipped)."""
    found: list[Mount] = []
    for line in df.splitlines()[1:]:
        fields = line.split(None, 6)
        if len(fields) < 7 or not fields[2].isdigit():
            continue
        device, fstype, total, used, free, _capacity, mountpoint = fields
        found.append(Mount(device, fstype, int(total), int(used), int(free), mountpoint))
    return found


def usedPercent(used: int, free: int) -> float:
    """Used space in percent of what the user can have, rounded as psutil's ``disk_usage``."""
    room = used + free
    return round(used / room * 100, 1) if room else 0.0
