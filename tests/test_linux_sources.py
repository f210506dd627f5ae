"""Tests for duct.sources.linux.basic: the psutil host metrics."""

from __future__ import annotations

import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from duct.aggregators import Counter64
from duct.objects import Event, Source
from duct.sources.linux.basic import CPU, DiskFree, DiskIO, LoadAverage, Memory, Network
from duct.testing import SourceHarness, configure

CPU_FIELDS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)
CpuTimes = namedtuple("CpuTimes", CPU_FIELDS)
VirtualMemory = namedtuple("VirtualMemory", "total available percent used free")
DiskCounters = namedtuple(
    "DiskCounters", "read_count write_count read_bytes write_bytes read_time write_time"
)
Partition = namedtuple("Partition", "device mountpoint fstype opts")
Usage = namedtuple("Usage", "total used free percent")
NetCounters = namedtuple(
    "NetCounters",
    "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout",
)


def cpuTimes(**values: float) -> Any:
    return CpuTimes(**{field: float(values.get(field, 0.0)) for field in CPU_FIELDS})


def cpuSequence(*totals: Any, cores: list[list[Any]] | None = None) -> Callable[..., Any]:
    """A stand-in for ``psutil.cpu_times``: ``totals`` in turn, and ``cores`` with percpu."""
    machine: Iterator[Any] = iter(totals)
    perCore: Iterator[list[Any]] = iter(cores or [[] for _ in totals])
    return lambda percpu=False: next(perCore) if percpu else next(machine)


def pollNow(harness: SourceHarness) -> list[Event]:
    """Poll once; these sources are synchronous, so the result is there at once."""
    results: list[list[Event]] = []
    harness.poll().addCallback(results.append)
    assert len(results) == 1, "poll did not finish synchronously"
    return results[0]


def byService(events: list[Event]) -> dict[str, Event]:
    services = [event.service for event in events]
    assert len(services) == len(set(services)), f"duplicate services: {services}"
    return {event.service: event for event in events}


def metrics(events: list[Event]) -> dict[str, float | None]:
    return {service: event.metric for service, event in byService(events).items()}


def sequence(*values: Any) -> Callable[..., Any]:
    """A stand-in for a psutil function returning ``values`` in turn."""
    it: Iterator[Any] = iter(values)
    return lambda *args, **kwargs: next(it)


# -- configuration -------------------------------------------------------------


@pytest.mark.parametrize("cls", [CPU, Memory, LoadAverage])
def test_unknown_key_is_rejected(cls: type[Source]) -> None:
    with pytest.raises(ValueError, match="bogus: unknown key"):
        configure(cls, {"service": "x", "interval": 1, "bogus": True})


def test_cpu_accepts_base_options() -> None:
    config = configure(CPU, {"service": "cpu", "interval": 1, "ttl": 30})
    assert config["ttl"] == 30
    assert config["source"] == "duct.sources.linux.basic.CPU"


@pytest.mark.parametrize(
    ("cls", "key"), [(DiskIO, "devices"), (DiskFree, "disks"), (Network, "interfaces")]
)
def test_filter_option_must_be_strings(cls: type[Source], key: str) -> None:
    with pytest.raises(ValueError, match=f"{key}: expected a string or a list of strings"):
        configure(cls, {"service": "x", key: 5})


def test_docstrings_name_services() -> None:
    for cls in (CPU, Memory, LoadAverage, DiskIO, DiskFree, Network):
        assert cls.__doc__ and "{service}" in cls.__doc__, cls


# -- against the real machine ---------------------------------------------------


def test_cpu_real() -> None:
    harness = SourceHarness(CPU, {"service": "cpu", "interval": 1})
    assert pollNow(harness) == []
    # Two polls in a row may see no tick of the kernel's clock in between;
    # keep polling (no sleeping) until one does.
    deadline = time.monotonic() + 10
    events: list[Event] = []
    # A core may tick while the machine-wide total does not: poll until it does.
    while not any(e.service == "cpu" for e in events) and time.monotonic() < deadline:
        events = pollNow(harness)
    found = metrics(events)
    fields = psutil.cpu_times()._fields
    prefixes = ["cpu"] + [f"cpu.core{n}" for n in range(len(psutil.cpu_times(percpu=True)))]
    machine = {"cpu"} | {f"cpu.{field}" for field in fields}
    assert machine <= set(found)
    # A core whose clock did not tick between the polls is left out.
    assert set(found) <= {
        p for prefix in prefixes for p in [prefix, *(f"{prefix}.{f}" for f in fields)]
    }
    for service, value in found.items():
        assert value is not None and 0.0 <= value <= 1.0, service
    assert events[0].service == "cpu"
    assert events[0].description is not None and events[0].description.startswith("CPU ")
    assert all(event.hostname == "test.example" and event.state == "ok" for event in events)


def test_memory_real() -> None:
    harness = SourceHarness(Memory, {"service": "memory", "interval": 1})
    found = metrics(pollNow(harness))
    assert set(found) == {"memory", "memory.used", "memory.available", "memory.total"}
    total, used, available = found["memory.total"], found["memory.used"], found["memory.available"]
    assert total is not None and used is not None and available is not None
    assert total > 0
    assert 0 <= available <= total
    assert used + available == pytest.approx(total)
    assert found["memory"] == pytest.approx(used / total)
    assert 0.0 <= (found["memory"] or 0.0) <= 1.0


def test_load_average_real() -> None:
    harness = SourceHarness(LoadAverage, {"service": "load", "interval": 1})
    found = metrics(pollNow(harness))
    assert set(found) == {"load", "load.5min", "load.15min"}
    assert all(value is not None and value >= 0 for value in found.values())


def test_diskio_real() -> None:
    harness = SourceHarness(DiskIO, {"service": "diskio", "interval": 1})
    first = pollNow(harness)
    second = pollNow(harness)
    names = {
        name
        for name in (psutil.disk_io_counters(perdisk=True) or {})
        if not name.startswith(("loop", "ram"))
    }
    counters = {"reads", "read_bytes", "writes", "write_bytes"}
    assert {e.service for e in first} == {
        f"diskio./dev/{name}.{field}" for name in names for field in counters
    }
    for event in first:
        assert event.aggregation is Counter64
        assert event.metric is not None and event.metric >= 0
    for event in second:
        assert "loop" not in event.service and "/dev/ram" not in event.service
        assert event.metric is not None and event.metric >= 0
        if event.service.endswith("_latency"):
            assert event.aggregation is None
        else:
            assert event.aggregation is Counter64


def test_diskfree_real() -> None:
    harness = SourceHarness(DiskFree, {"service": "disk", "interval": 1})
    events = pollNow(harness)
    found = byService(events)
    assert len(events) % 4 == 0
    devices = [
        e.service[len("disk.") :]
        for e in events
        if not e.service.endswith((".bytes", ".free", ".used"))
    ]
    assert len(devices) * 4 == len(events)
    for device in devices:
        percent = found[f"disk.{device}"].metric
        assert percent is not None and 0 <= percent <= 100
        assert found[f"disk.{device}.used"].metric == percent  # the original's name
        assert (found[f"disk.{device}.bytes"].metric or 0) >= 0
        assert (found[f"disk.{device}.free"].metric or 0) >= 0
    expected = set()
    for partition in psutil.disk_partitions(all=False):
        if partition.fstype in ("tmpfs", "devtmpfs", "squashfs", "overlay"):
            continue
        try:
            psutil.disk_usage(partition.mountpoint)
        except OSError:
            continue
        expected.add(partition.device)
    assert set(devices) == expected


def test_network_real() -> None:
    harness = SourceHarness(Network, {"service": "net", "interval": 1})
    events = pollNow(harness)
    fields = {"tx_bytes", "tx_packets", "tx_errors", "rx_bytes", "rx_packets", "rx_errors"}
    nics = set(psutil.net_io_counters(pernic=True))
    assert "lo" in nics
    assert {e.service for e in events} == {f"net.{nic}.{field}" for nic in nics for field in fields}
    for event in events:
        assert event.aggregation is Counter64
        assert event.metric is not None and event.metric >= 0


# -- deterministic, with psutil replaced ----------------------------------------


def test_cpu_fractions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        psutil,
        "cpu_times",
        cpuSequence(
            cpuTimes(user=10, system=5, idle=80, iowait=5),
            cpuTimes(user=30, system=15, idle=140, iowait=15),
        ),
    )
    harness = SourceHarness(CPU, {"service": "cpu", "interval": 1})
    assert pollNow(harness) == []
    events = pollNow(harness)
    assert events[0].service == "cpu"
    assert events[0].description == "CPU 30%"
    assert metrics(events) == pytest.approx(
        {
            "cpu": 0.3,
            "cpu.user": 0.2,
            "cpu.nice": 0.0,
            "cpu.system": 0.1,
            "cpu.idle": 0.6,
            "cpu.iowait": 0.1,
            "cpu.irq": 0.0,
            "cpu.softirq": 0.0,
            "cpu.steal": 0.0,
            "cpu.guest": 0.0,
            "cpu.guest_nice": 0.0,
        }
    )
    assert [e.service for e in events[1:]] == [f"cpu.{field}" for field in CPU_FIELDS]


def test_cpu_per_core_services_are_the_originals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        psutil,
        "cpu_times",
        cpuSequence(
            cpuTimes(idle=200),
            cpuTimes(user=50, idle=350),
            cores=[
                [cpuTimes(idle=100), cpuTimes(idle=100)],
                [cpuTimes(user=50, idle=150), cpuTimes(idle=200)],
            ],
        ),
    )
    harness = SourceHarness(CPU, {"service": "cpu", "interval": 1})
    assert pollNow(harness) == []
    found = metrics(pollNow(harness))
    assert found["cpu"] == pytest.approx(0.25)
    assert found["cpu.core0"] == pytest.approx(0.5)
    assert found["cpu.core0.user"] == pytest.approx(0.5)
    assert found["cpu.core1"] == pytest.approx(0.0)
    assert found["cpu.core1.idle"] == pytest.approx(1.0)
    assert {s for s in found if s.startswith("cpu.core0.")} == {
        f"cpu.core0.{field}" for field in CPU_FIELDS
    }


def test_cpu_guest_time_is_not_counted_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel counts guest time inside user time already.
    monkeypatch.setattr(
        psutil,
        "cpu_times",
        cpuSequence(cpuTimes(), cpuTimes(user=50, idle=50, guest=25)),
    )
    harness = SourceHarness(CPU, {"service": "cpu", "interval": 1})
    pollNow(harness)
    found = metrics(pollNow(harness))
    assert found["cpu"] == pytest.approx(0.5)
    assert found["cpu.user"] == pytest.approx(0.5)
    assert found["cpu.guest"] == pytest.approx(0.25)


def test_cpu_no_time_passed_emits_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    same = cpuTimes(user=10, idle=90)
    monkeypatch.setattr(psutil, "cpu_times", cpuSequence(same, same))
    harness = SourceHarness(CPU, {"service": "cpu", "interval": 1})
    assert pollNow(harness) == []
    assert pollNow(harness) == []
    assert harness.source.errors == 0


def test_cpu_polls_on_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        psutil,
        "cpu_times",
        cpuSequence(cpuTimes(idle=100), cpuTimes(user=10, idle=190), cpuTimes(user=10, idle=290)),
    )
    harness = SourceHarness(CPU, {"service": "cpu", "interval": 5})
    harness.start()
    assert harness.events == []
    harness.clock.advance(5)
    assert harness.events[0].metric == pytest.approx(0.1)
    assert harness.events[0].time == 5
    harness.clock.advance(5)
    assert [e.metric for e in harness.events if e.service == "cpu"] == pytest.approx([0.1, 0.0])
    harness.stop()


def test_memory_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: VirtualMemory(1000, 250, 75.0, 700, 100))
    harness = SourceHarness(Memory, {"service": "memory", "interval": 1})
    events = pollNow(harness)
    assert metrics(events) == {
        "memory": 0.75,
        "memory.used": 750,
        "memory.available": 250,
        "memory.total": 1000,
    }
    assert events[0].description == "Memory 75%"


def test_load_average_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "getloadavg", lambda: (1.5, 0.75, 0.25))
    harness = SourceHarness(LoadAverage, {"service": "load", "interval": 1})
    assert metrics(pollNow(harness)) == {"load": 1.5, "load.5min": 0.75, "load.15min": 0.25}


def test_diskio_counters_and_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    samples = iter(
        [
            {"sda": DiskCounters(100, 50, 4096, 2048, 1000, 500)},
            # 10 reads took 40 ms; no writes completed.
            {"sda": DiskCounters(110, 50, 8192, 2048, 1040, 500)},
        ]
    )

    def counters(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return next(samples)

    monkeypatch.setattr(psutil, "disk_io_counters", counters)
    harness = SourceHarness(DiskIO, {"service": "diskio", "interval": 1})
    first = pollNow(harness)
    assert metrics(first) == {
        "diskio./dev/sda.reads": 100,
        "diskio./dev/sda.read_bytes": 4096,
        "diskio./dev/sda.writes": 50,
        "diskio./dev/sda.write_bytes": 2048,
    }
    assert all(event.aggregation is Counter64 for event in first)
    second = byService(pollNow(harness))
    assert second["diskio./dev/sda.read_latency"].metric == pytest.approx(4.0)
    assert second["diskio./dev/sda.read_latency"].aggregation is None
    assert "diskio./dev/sda.write_latency" not in second
    assert second["diskio./dev/sda.reads"].metric == 110
    assert calls == [{"perdisk": True}, {"perdisk": True}]


def test_diskio_write_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        psutil,
        "disk_io_counters",
        sequence(
            {"vda": DiskCounters(0, 0, 0, 0, 0, 0)},
            {"vda": DiskCounters(0, 4, 0, 16384, 0, 10)},
        ),
    )
    harness = SourceHarness(DiskIO, {"service": "diskio", "interval": 1})
    pollNow(harness)
    found = metrics(pollNow(harness))
    assert found["diskio./dev/vda.write_latency"] == pytest.approx(2.5)
    assert "diskio./dev/vda.read_latency" not in found


def test_diskio_skips_loop_and_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    zero = DiskCounters(0, 0, 0, 0, 0, 0)
    disks = {"loop0": zero, "ram1": zero, "sda": zero, "nvme0n1": zero}
    monkeypatch.setattr(psutil, "disk_io_counters", lambda **kw: disks)
    harness = SourceHarness(DiskIO, {"service": "diskio", "interval": 1})
    assert {e.service.split(".")[1] for e in pollNow(harness)} == {"/dev/sda", "/dev/nvme0n1"}


def test_diskio_devices_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    zero = DiskCounters(0, 0, 0, 0, 0, 0)
    disks = {"sda": zero, "sdb": zero, "sdc": zero, "loop0": zero}
    monkeypatch.setattr(psutil, "disk_io_counters", lambda **kw: disks)
    harness = SourceHarness(
        DiskIO, {"service": "diskio", "interval": 1, "devices": ["sda", "/dev/sdb", "loop0"]}
    )
    events = pollNow(harness)
    assert {e.service.split(".")[1] for e in events} == {"/dev/sda", "/dev/sdb", "/dev/loop0"}
    assert len(events) == 12


def test_diskio_no_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "disk_io_counters", lambda **kw: {})
    harness = SourceHarness(DiskIO, {"service": "diskio", "interval": 1})
    assert pollNow(harness) == []
    assert harness.source.errors == 0


def fakeDisks(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    partitions = [
        Partition("/dev/sda1", "/", "ext4", "rw"),
        Partition("tmpfs", "/run", "tmpfs", "rw"),
        Partition("/dev/sdb1", "/secret", "xfs", "rw"),
        Partition("/dev/sdc1", "/data", "xfs", "rw"),
        Partition("/dev/sda1", "/srv/bind", "ext4", "rw"),
        Partition("overlay", "/merged", "overlay", "rw"),
    ]
    usage = {
        "/": Usage(100 * 1024, 40 * 1024, 60 * 1024, 40.0),
        "/run": Usage(1024, 0, 1024, 0.0),
        "/data": Usage(400 * 1024, 300 * 1024, 100 * 1024, 75.0),
        "/srv/bind": Usage(100 * 1024, 40 * 1024, 60 * 1024, 40.0),
    }
    calls: list[dict[str, Any]] = []

    def disk_partitions(**kwargs: Any) -> list[Any]:
        calls.append(kwargs)
        return partitions

    def disk_usage(path: str) -> Any:
        if path == "/secret":
            raise PermissionError(13, "Permission denied", path)
        if path not in usage:
            raise AssertionError(f"disk_usage called for skipped mount {path}")
        return usage[path]

    monkeypatch.setattr(psutil, "disk_partitions", disk_partitions)
    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    return calls


def test_diskfree_values_and_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fakeDisks(monkeypatch)
    harness = SourceHarness(DiskFree, {"service": "disk", "interval": 1})
    events = pollNow(harness)
    assert metrics(events) == {
        "disk./dev/sda1": 40.0,
        "disk./dev/sda1.bytes": 40,
        "disk./dev/sda1.free": 60,
        "disk./dev/sda1.used": 40.0,
        "disk./dev/sdc1": 75.0,
        "disk./dev/sdc1.bytes": 300,
        "disk./dev/sdc1.free": 100,
        "disk./dev/sdc1.used": 75.0,
    }
    assert calls == [{"all": False}]
    assert harness.source.unreadable == 1
    assert harness.source.errors == 0
    assert events[0].description == "Disk usage 40.0% on /"


def test_diskfree_disks_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    fakeDisks(monkeypatch)
    harness = SourceHarness(DiskFree, {"service": "disk", "interval": 1, "disks": "sdc1"})
    assert set(metrics(pollNow(harness))) == {
        "disk./dev/sdc1",
        "disk./dev/sdc1.bytes",
        "disk./dev/sdc1.free",
        "disk./dev/sdc1.used",
    }
    harness = SourceHarness(
        DiskFree, {"service": "disk", "interval": 1, "disks": ["/dev/sda1", "/dev/sdz9"]}
    )
    assert set(metrics(pollNow(harness))) == {
        "disk./dev/sda1",
        "disk./dev/sda1.bytes",
        "disk./dev/sda1.free",
        "disk./dev/sda1.used",
    }


def test_network_tx_rx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        psutil,
        "net_io_counters",
        lambda **kw: {"eth0": NetCounters(1000, 2000, 10, 20, 1, 2, 3, 4)},
    )
    harness = SourceHarness(Network, {"service": "network", "interval": 1})
    events = pollNow(harness)
    assert metrics(events) == {
        "network.eth0.tx_bytes": 1000,
        "network.eth0.tx_packets": 10,
        "network.eth0.tx_errors": 2,
        "network.eth0.rx_bytes": 2000,
        "network.eth0.rx_packets": 20,
        "network.eth0.rx_errors": 1,
    }
    assert all(event.aggregation is Counter64 for event in events)


def test_network_interfaces_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    zero = NetCounters(0, 0, 0, 0, 0, 0, 0, 0)
    monkeypatch.setattr(
        psutil, "net_io_counters", lambda **kw: {"eth0": zero, "eth1": zero, "lo": zero}
    )
    harness = SourceHarness(
        Network, {"service": "network", "interval": 1, "interfaces": "eth1, lo"}
    )
    assert {e.service.split(".")[1] for e in pollNow(harness)} == {"eth1", "lo"}


def test_counters_become_rates_with_counter64(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pipeline will do with two Network samples 10 seconds apart."""
    monkeypatch.setattr(
        psutil,
        "net_io_counters",
        sequence(
            {"eth0": NetCounters(1000, 0, 0, 0, 0, 0, 0, 0)},
            {"eth0": NetCounters(6000, 0, 0, 0, 0, 0, 0, 0)},
        ),
    )
    harness = SourceHarness(Network, {"service": "network", "interval": 10})
    first = byService(pollNow(harness))["network.eth0.tx_bytes"]
    harness.clock.advance(10)
    second = byService(pollNow(harness))["network.eth0.tx_bytes"]
    assert second.aggregation is not None
    rate = second.aggregation(first.metric or 0, second.metric or 0, second.time - first.time)
    assert rate == 500
