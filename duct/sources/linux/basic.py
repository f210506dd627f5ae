"""Basic host metrics: CPU, memory, load, disks and network.

Here, every source polls synchronously through psutil, which reads a few
kernel counters and returns in well under a millisecond.  With
``use_ssh``, the same sources read the remote host's ``/proc`` files (and
run ``df``) over SSH, parse them with `duct.sources.linux.procfs`, and emit
the same services, with the remote host as their hostname.  Counters that
only grow are emitted raw with ``aggregation=Counter64``; the pipeline
turns them into per-second rates using the previous sample of the same
host and service.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import psutil

from duct.aggregators import Counter64
from duct.objects import Event
from duct.options import Option
from duct.sources.linux import procfs
from duct.sources.linux.system import SystemSource
from duct.stats import counter

# Time the kernel already counts in user and nice (psutil leaves it out of
# the total for the same reason).
_CPU_DOUBLE_COUNTED = ("guest", "guest_nice")

_SKIPPED_FSTYPES = frozenset({"tmpfs", "devtmpfs", "squashfs", "overlay"})
_SKIPPED_DISK_PREFIXES = ("loop", "ram")


def _deviceName(name: str) -> str:
    """``/dev/sda`` and ``sda`` both become ``sda``."""
    return name[len("/dev/") :] if name.startswith("/dev/") else name


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


class CPU(SystemSource):
    """CPU utilisation, from the change in ``psutil.cpu_times()`` between polls.

    Emits nothing on the first poll (there is no previous sample), then:

    - ``{service}``: busy fraction (0..1), all time but idle and iowait;
    - ``{service}.{field}``: the fraction of time spent in each field psutil
      reports (on Linux ``user``, ``nice``, ``system``, ``idle``, ``iowait``,
      ``irq``, ``softirq``, ``steal``, ``guest``, ``guest_nice``);
    - ``{service}.core{N}`` and ``{service}.core{N}.{field}``: the same for
      each core, numbered from 0 as the kernel does (``cpu0`` is ``core0``),
      as the original duct names them.

    ``guest`` and ``guest_nice`` are already part of ``user`` and ``nice``,
    so they are left out of the total, as psutil's ``cpu_percent`` does.
    Over SSH, the same come from the remote ``/proc/stat``.
    """

    options = ()
    # The fields add up to all of the time, but for guest time, counted twice.
    graphs = {
        "*": "full-stack",
        "guest": "line",
        "guest_nice": "line",
        "core*": "line",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._previous: dict[str, dict[str, float]] | None = None

    def localSample(self) -> dict[str, dict[str, float]]:
        sample = {"": _times(psutil.cpu_times())}
        for number, times in enumerate(psutil.cpu_times(percpu=True)):
            sample[f"core{number}"] = _times(times)
        return sample

    async def remoteSample(self) -> dict[str, dict[str, float]]:
        lines = procfs.cpuLines(await self._text("/proc/stat"))
        return {
            "" if name == "cpu" else f"core{name[3:]}": {k: float(v) for k, v in times.items()}
            for name, times in lines.items()
        }

    def events(self, current: dict[str, dict[str, float]]) -> list[Event] | None:
        previous, self._previous = self._previous, current
        if previous is None:
            return None
        events: list[Event] = []
        for prefix, times in current.items():
            if prefix in previous:
                events += self._usage(prefix, previous[prefix], times)
        return events or None

    def _usage(
        self, prefix: str, previous: dict[str, float], current: dict[str, float]
    ) -> list[Event]:
        """The busy fraction and each field's, for the machine (prefix "") or one core."""
        fields = [field for field in current if field in previous]
        deltas = {field: max(current[field] - previous[field], 0.0) for field in fields}
        total = sum(delta for field, delta in deltas.items() if field not in _CPU_DOUBLE_COUNTED)
        if total <= 0:
            return []
        idle = deltas.get("idle", 0.0) + deltas.get("iowait", 0.0)
        busy = min(max((total - idle) / total, 0.0), 1.0)
        label = f"CPU {prefix} " if prefix else "CPU "
        events = [self.createEvent("ok", f"{label}{_percent(busy)}", busy, prefix=prefix or None)]
        for field in fields:
            fraction = min(deltas[field] / total, 1.0)
            events.append(
                self.createEvent(
                    "ok",
                    f"{label}{field} {_percent(fraction)}",
                    fraction,
                    prefix=f"{prefix}.{field}" if prefix else field,
                )
            )
        return events


def _times(times: Any) -> dict[str, float]:
    return {field: getattr(times, field) for field in times._fields}


class Memory(SystemSource):
    """Memory use, from ``psutil.virtual_memory()``.

    - ``{service}``: used fraction (0..1), ``(total - available) / total``;
    - ``{service}.used``: bytes in use (``total - available``);
    - ``{service}.available``: bytes available to new programs;
    - ``{service}.total``: bytes of physical memory.
    """

    options = ()
    graphs = {"*": "stack", "total": "line"}  # used + available = total

    def localSample(self) -> tuple[float, float]:
        memory = psutil.virtual_memory()
        return float(memory.total), float(memory.available)

    async def remoteSample(self) -> tuple[float, float]:
        total, available = procfs.memory(await self._text("/proc/meminfo"))
        return float(total), float(available)

    def events(self, sample: tuple[float, float]) -> list[Event]:
        total, available = sample
        used = max(total - available, 0.0)
        fraction = used / total if total > 0 else 0.0
        return [
            self.createEvent("ok", f"Memory {_percent(fraction)}", fraction),
            self.createEvent("ok", "Memory used (bytes)", used, prefix="used"),
            self.createEvent("ok", "Memory available (bytes)", available, prefix="available"),
            self.createEvent("ok", "Memory total (bytes)", total, prefix="total"),
        ]


class LoadAverage(SystemSource):
    """System load averages, from ``psutil.getloadavg()``.

    - ``{service}``: the 1-minute load average;
    - ``{service}.5min``: the 5-minute load average;
    - ``{service}.15min``: the 15-minute load average.
    """

    options = ()

    def localSample(self) -> tuple[float, float, float]:
        one, five, fifteen = psutil.getloadavg()
        return one, five, fifteen

    async def remoteSample(self) -> tuple[float, float, float]:
        return procfs.loadAverage(await self._text("/proc/loadavg"))

    def events(self, sample: tuple[float, float, float]) -> list[Event]:
        one, five, fifteen = sample
        return [
            self.createEvent("ok", f"Load average {one:.2f}", one),
            self.createEvent("ok", f"5 minute load average {five:.2f}", five, prefix="5min"),
            self.createEvent(
                "ok", f"15 minute load average {fifteen:.2f}", fifteen, prefix="15min"
            ),
        ]


class _DiskSample(NamedTuple):
    reads: int
    writes: int
    readTime: int
    writeTime: int


class DiskIO(SystemSource):
    """Disk I/O per block device, from ``psutil.disk_io_counters(perdisk=True)``.

    For each device ``{name}`` (``loop*`` and ``ram*`` devices are skipped
    unless listed in ``devices``):

    - ``{service}./dev/{name}.reads``, ``.read_bytes``, ``.writes``,
      ``.write_bytes``: raw counters with ``aggregation=Counter64``, which
      the pipeline turns into operations and bytes per second;
    - ``{service}./dev/{name}.read_latency``, ``.write_latency``: average
      milliseconds per operation since the previous poll, emitted only when
      operations of that kind completed in between.
    """

    options = (
        Option(
            "devices",
            "strings",
            None,
            'devices to report, as "sda" or "/dev/sda" (default: all but loop and ram)',
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        devices = self.config["devices"]
        self.devices: set[str] | None = (
            {_deviceName(device) for device in devices} if devices is not None else None
        )
        self._previous: dict[str, _DiskSample] = {}

    def _wanted(self, name: str) -> bool:
        if self.devices is not None:
            return name in self.devices
        return not name.startswith(_SKIPPED_DISK_PREFIXES)

    def localSample(self) -> dict[str, Any]:
        return dict(psutil.disk_io_counters(perdisk=True) or {})

    async def remoteSample(self) -> dict[str, Any]:
        return dict(procfs.diskCounters(await self._text("/proc/diskstats")))

    def events(self, counters: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        seen: dict[str, _DiskSample] = {}
        for name, io in sorted(counters.items()):
            if not self._wanted(name):
                continue
            device = f"/dev/{name}"
            for field, metric, description in (
                ("reads", io.read_count, "Read operations"),
                ("read_bytes", io.read_bytes, "Bytes read"),
                ("writes", io.write_count, "Write operations"),
                ("write_bytes", io.write_bytes, "Bytes written"),
            ):
                events.append(
                    self.createEvent(
                        "ok",
                        f"{description} on {device}",
                        metric,
                        prefix=f"{device}.{field}",
                        aggregation=Counter64,
                    )
                )

            sample = _DiskSample(io.read_count, io.write_count, io.read_time, io.write_time)
            seen[name] = sample
            previous = self._previous.get(name)
            if previous is None:
                continue
            for field, ops, spent in (
                (
                    "read_latency",
                    sample.reads - previous.reads,
                    sample.readTime - previous.readTime,
                ),
                (
                    "write_latency",
                    sample.writes - previous.writes,
                    sample.writeTime - previous.writeTime,
                ),
            ):
                if ops > 0 and spent >= 0:
                    latency = spent / ops
                    events.append(
                        self.createEvent(
                            "ok",
                            f"{latency:.2f} ms per operation on {device}",
                            latency,
                            prefix=f"{device}.{field}",
                        )
                    )
        # Forget devices that went away, so a returning one starts afresh.
        self._previous = seen
        return events


class _Usage(NamedTuple):
    device: str
    mountpoint: str
    percent: float
    used: float
    free: float


class DiskFree(SystemSource):
    """Disk space per mounted device, from ``psutil.disk_partitions()`` (over SSH, ``df``).

    Pseudo filesystems (tmpfs, devtmpfs, squashfs, overlay) are skipped, and
    so is a mount whose usage cannot be read (counted in ``unreadable``).  A
    device mounted more than once is reported once, from its first mount.
    For each device ``{device}`` (for example ``/dev/sda1``):

    - ``{service}.{device}.used`` (the original duct's name) and
      ``{service}.{device}``: used percent, 0..100, as psutil reports it;
    - ``{service}.{device}.bytes``: used space in kB;
    - ``{service}.{device}.free``: free space in kB.
    """

    options = (
        Option(
            "disks",
            "strings",
            None,
            'devices to report, as "sda1" or "/dev/sda1" (default: all)',
        ),
    )
    graphs = {"": "bar"}
    stats = (
        counter("unreadable", "unreadable", "unreadable_mounts",
                "mounts whose usage could not be read"),
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        disks = self.config["disks"]
        self.disks: set[str] | None = (
            {_deviceName(disk) for disk in disks} if disks is not None else None
        )
        self.unreadable = 0

    def _wanted(self, device: str) -> bool:
        return self.disks is None or _deviceName(device) in self.disks

    def _candidate(self, device: str, fstype: str, reported: set[str]) -> bool:
        """Whether a mount is one to report: a real filesystem, wanted, not seen yet."""
        if fstype in _SKIPPED_FSTYPES or device in reported or not self._wanted(device):
            return False
        reported.add(device)
        return True

    def localSample(self) -> list[_Usage]:
        usages: list[_Usage] = []
        reported: set[str] = set()
        for partition in psutil.disk_partitions(all=False):
            if not self._candidate(partition.device, partition.fstype, reported):
                continue
            try:
                usage = psutil.disk_usage(partition.mountpoint)
            except OSError as e:  # PermissionError included
                reported.discard(partition.device)  # a later mount of it may be readable
                self._unreadable(partition.mountpoint, e)
                continue
            usages.append(
                _Usage(
                    partition.device, partition.mountpoint, usage.percent, usage.used, usage.free
                )
            )
        return usages

    async def remoteSample(self) -> list[_Usage]:
        df = await self.run(procfs.DF_COMMAND)
        if df.code != 0:  # df exits 1 when it cannot read a mount, and lists the others
            for line in df.stderr.splitlines():
                self._unreadable("(remote)", line.strip())
            if not df.stdout.strip():
                raise RuntimeError(f"df failed with status {df.code}: {df.stderr.strip()}")
        try:
            kinds: set[str] | None = procfs.deviceFilesystems(await self._text("/proc/filesystems"))
        except OSError:
            kinds = None  # no /proc there: every filesystem df lists
        usages: list[_Usage] = []
        reported: set[str] = set()
        for mount in procfs.mounts(df.stdout):
            if kinds is not None and mount.fstype not in kinds:
                continue
            if self._candidate(mount.device, mount.fstype, reported):
                percent = procfs.usedPercent(mount.used, mount.free)
                usages.append(
                    _Usage(mount.device, mount.mountpoint, percent, mount.used, mount.free)
                )
        return usages

    def _unreadable(self, mount: str, error: Any) -> None:
        self.unreadable += 1
        self.log.debug(
            "{source}: cannot read usage of {mount}: {error}",
            source=self.service,
            mount=mount,
            error=error,
        )

    def events(self, usages: list[_Usage]) -> list[Event]:
        events: list[Event] = []
        for device, mountpoint, percent, used, free in usages:
            events.extend(
                [
                    self.createEvent(
                        "ok", f"Disk usage {percent}% on {mountpoint}", percent, prefix=device
                    ),
                    self.createEvent(
                        "ok",
                        f"Disk usage {percent}% on {mountpoint}",
                        percent,
                        prefix=f"{device}.used",
                    ),
                    self.createEvent(
                        "ok", f"Used kB on {device}", used / 1024, prefix=f"{device}.bytes"
                    ),
                    self.createEvent(
                        "ok", f"Free kB on {device}", free / 1024, prefix=f"{device}.free"
                    ),
                ]
            )
        return events


class Network(SystemSource):
    """Network traffic per interface, from ``psutil.net_io_counters(pernic=True)``.

    For each interface ``{iface}``, raw counters with ``aggregation=Counter64``
    (the pipeline turns them into per-second rates):

    - ``{service}.{iface}.tx_bytes``, ``.tx_packets``, ``.tx_errors``: sent;
    - ``{service}.{iface}.rx_bytes``, ``.rx_packets``, ``.rx_errors``: received.
    """

    options = (Option("interfaces", "strings", None, "interfaces to report (default: all)"),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        interfaces = self.config["interfaces"]
        self.interfaces: set[str] | None = set(interfaces) if interfaces is not None else None

    def localSample(self) -> dict[str, Any]:
        return dict(psutil.net_io_counters(pernic=True) or {})

    async def remoteSample(self) -> dict[str, Any]:
        return dict(procfs.netCounters(await self._text("/proc/net/dev")))

    def events(self, counters: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        for iface, io in sorted(counters.items()):
            if self.interfaces is not None and iface not in self.interfaces:
                continue
            for field, metric, description in (
                ("tx_bytes", io.bytes_sent, "Bytes sent"),
                ("tx_packets", io.packets_sent, "Packets sent"),
                ("tx_errors", io.errout, "Send errors"),
                ("rx_bytes", io.bytes_recv, "Bytes received"),
                ("rx_packets", io.packets_recv, "Packets received"),
                ("rx_errors", io.errin, "Receive errors"),
            ):
                events.append(
                    self.createEvent(
                        "ok",
                        f"{description} on {iface}",
                        metric,
                        prefix=f"{iface}.{field}",
                        aggregation=Counter64,
                    )
                )
        return events


__all__ = ["CPU", "DiskFree", "DiskIO", "LoadAverage", "Memory", "Network"]
