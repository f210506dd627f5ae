"""duct.sources.linux.procfs: the /proc and df parsers, on text captured from a real machine.

``tests/procfs/`` holds /proc/stat, /proc/meminfo, /proc/loadavg,
/proc/diskstats, /proc/net/dev, /proc/filesystems and the output of
``df -P -T -B1``, as one Linux machine gave them.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from duct.sources.linux import procfs

CAPTURED = Path(__file__).parent / "procfs"


def captured(name: str) -> str:
    return (CAPTURED / name).read_text()


def test_cpu_times_are_the_ticks_of_the_machine_wide_line() -> None:
    times = procfs.cpuTimes(captured("stat"))
    assert list(times) == list(procfs.CPU_FIELDS)
    assert (times["user"], times["idle"], times["steal"], times["guest_nice"]) == (
        890001, 1219930, 1741, 0,
    )  # fmt: skip


def test_an_older_kernel_has_fewer_cpu_columns_and_no_cpu_line_is_an_error() -> None:
    assert list(procfs.cpuTimes("cpu  1 2 3 4 5 6 7\nintr 0\n")) == list(procfs.CPU_FIELDS[:7])
    with pytest.raises(ValueError, match="no cpu line"):
        procfs.cpuTimes("intr 0\n")


def test_cpu_lines_are_the_machine_and_each_core() -> None:
    lines = procfs.cpuLines(captured("stat"))
    cores = [name for name in lines if name != "cpu"]
    assert lines["cpu"] == procfs.cpuTimes(captured("stat"))
    assert cores == [f"cpu{n}" for n in range(len(cores))] and cores
    assert all(list(times) == list(procfs.CPU_FIELDS) for times in lines.values())
    with pytest.raises(ValueError, match="no cpu line"):
        procfs.cpuLines("cpu0 1 2 3 4\n")


def test_memory_is_total_and_available_in_bytes() -> None:
    total, available = procfs.memory(captured("meminfo"))
    assert (total, available) == (24731184 * 1024, 24246192 * 1024)


def test_memory_without_memavailable_counts_free_buffers_and_cache() -> None:
    old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n"
    assert procfs.memory(old) == (1000 * 1024, 310 * 1024)
    with pytest.raises(ValueError, match="MemTotal"):
        procfs.memory("MemFree: 1 kB\n")


def test_load_average() -> None:
    assert procfs.loadAverage(captured("loadavg")) == (1.17, 1.06, 0.80)
    with pytest.raises(ValueError):
        procfs.loadAverage("")


def test_disk_counters_are_psutils_with_bytes_from_sectors() -> None:
    disks = procfs.diskCounters(captured("diskstats"))
    assert disks["vda"] == procfs.DiskCounters(
        read_count=74186, read_bytes=7477810 * 512, read_time=18607,
        write_count=357197, write_bytes=22522264 * 512, write_time=113189,
    )  # fmt: skip
    assert {"loop0", "zram0"} <= set(disks)
    partition = procfs.diskCounters("   8       1 sda1 10 20 30 40\n")  # Linux 2.6 layout
    assert partition["sda1"] == procfs.DiskCounters(10, 20 * 512, 0, 30, 40 * 512, 0)


def test_network_counters_take_received_columns_first() -> None:
    interfaces = procfs.netCounters(captured("net_dev"))
    assert sorted(interfaces) == ["eth0", "ifb0", "ifb1", "lo"]
    assert interfaces["eth0"] == procfs.NetCounters(
        bytes_sent=4215746, packets_sent=42866, errout=0,
        bytes_recv=1784512945, packets_recv=61382, errin=0,
    )  # fmt: skip


def test_device_filesystems_leave_out_nodev_but_zfs() -> None:
    kinds = procfs.deviceFilesystems(captured("filesystems"))
    assert {"ext4", "xfs", "btrfs"} <= kinds
    assert not kinds & {"proc", "tmpfs", "sysfs", "devtmpfs"}
    assert procfs.deviceFilesystems("nodev\tzfs\nnodev\tproc\n") == {"zfs"}


def test_df_lines_are_mounts_in_bytes() -> None:
    mounts = procfs.mounts(captured("df.txt"))
    assert [m.mountpoint for m in mounts] == ["/dev", "/dev/shm", "/", "/sys/fs/cgroup"]
    root = mounts[2]
    assert root == procfs.Mount("/dev/vda", "ext4", 270553174016, 27108872192, 81835421696, "/")
    assert procfs.usedPercent(root.used, root.free) == 24.9
    spaced = procfs.mounts("header\n/dev/sdb1 vfat 100 25 75 25% /media/my disk\n")
    assert spaced[0].mountpoint == "/media/my disk"


def test_the_parsers_agree_with_psutil_on_this_machine() -> None:
    total, _ = procfs.memory(Path("/proc/meminfo").read_text())
    assert total == psutil.virtual_memory().total
    assert set(procfs.netCounters(Path("/proc/net/dev").read_text())) == set(
        psutil.net_io_counters(pernic=True)
    )
    assert set(procfs.diskCounters(Path("/proc/diskstats").read_text())) == set(
        psutil.disk_io_counters(perdisk=True) or {}
    )
