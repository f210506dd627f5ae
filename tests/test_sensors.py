"""duct.sources.linux.sensors: hwmon, lm-sensors and SMART, on recorded and real outputs.

This machine is a VM: it has no hwmon device, ``sensors`` finds no chip
and its disk has no SMART.  The real commands run here give those
answers; the readings themselves are tested on outputs recorded in the
formats ``sensors -u`` and ``smartctl -A`` print, and on an hwmon tree
laid out as the kernel lays one out.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest_twisted

from duct.lib.commands import CommandOutput
from duct.lib.process import ProcessTimeout
from duct.sources.linux.sensors import SMART, LMSensors, Sensors, lmSensorsReadings, scanned
from duct.testing import FakeDuct, SourceHarness

DATA = Path(__file__).parent / "data"
SENSORS_U = (DATA / "sensors-u.txt").read_text()
SMART_A = (DATA / "smartctl-A-sda.txt").read_text()
SCAN = (DATA / "smartctl-scan.txt").read_text()
NVME_A = "smartctl 7.3\n\n=== START OF SMART DATA SECTION ===\nTemperature: 36 Celsius\n"
NO_SENSORS = ("No sensors found!\nMake sure you loaded all the kernel drivers you need.\n"
              "Try sensors-detect to find out which these are.\n")  # fmt: skip


def byService(events: list[Any]) -> dict[str, Any]:
    return {e.service: e for e in events}


def hwmonTree(root: Path) -> None:
    """Two devices as the kernel shows them: coretemp with labels, acpitz without."""
    files = {
        "hwmon0/name": "acpitz\n",
        "hwmon0/temp1_input": "27800\n",
        "hwmon1/name": "coretemp\n",
        "hwmon1/temp1_input": "47000\n",
        "hwmon1/temp1_label": "Package id 0\n",
        "hwmon1/temp1_max": "84000\n",
        "hwmon1/temp2_input": "45000\n",
        "hwmon1/temp2_label": "Core 0\n",
        "hwmon2/name": "nct6775\n",
        "hwmon2/fan2_input": "1171\n",
        "hwmon2/in0_input": "880\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest_twisted.ensureDeferred
async def test_hwmon_temperatures_in_degrees_and_fans_in_rpm(reactor: Any, tmp_path: Path) -> None:
    hwmonTree(tmp_path)
    config = {"service": "sensors", "hwmon": str(tmp_path)}
    harness = SourceHarness(Sensors, config, duct=FakeDuct(reactor=reactor))
    events = byService(await harness.poll())
    assert {name: e.metric for name, e in events.items()} == {
        "sensors.acpitz.temp1": 27.8,
        "sensors.coretemp.package_id_0": 47.0,
        "sensors.coretemp.core_0": 45.0,
        "sensors.nct6775.fan2": 1171.0,
        "sensors.state": 1,
    }
    assert events["sensors.coretemp.core_0"].description == "Sensor coretemp:core_0 - 45.0"


@pytest_twisted.ensureDeferred
async def test_no_hwmon_device_is_a_warning(reactor: Any, tmp_path: Path) -> None:
    harness = SourceHarness(Sensors, {"service": "sensors", "hwmon": str(tmp_path / "none")},
                            duct=FakeDuct(reactor=reactor))  # fmt: skip
    [state] = await harness.poll()
    assert (state.service, state.state, state.metric) == ("sensors.state", "warning", 0)
    assert "No such file or directory" in state.description
    (tmp_path / "empty").mkdir()
    harness = SourceHarness(Sensors, {"service": "sensors", "hwmon": str(tmp_path / "empty")},
                            duct=FakeDuct(reactor=reactor))  # fmt: skip
    [state] = await harness.poll()
    assert state.description == f"no sensors: no temperature or fan sensor in {tmp_path}/empty"


@pytest_twisted.ensureDeferred
async def test_this_machines_hwmon(reactor: Any) -> None:
    harness = SourceHarness(Sensors, {"service": "sensors"}, duct=FakeDuct(reactor=reactor))
    events = byService(await harness.poll())
    hasSensors = any(Path("/sys/class/hwmon").glob("*/*_input"))
    assert events["sensors.state"].state == ("ok" if hasSensors else "warning")


def test_sensors_u_readings_by_chip_and_label() -> None:
    readings = lmSensorsReadings(SENSORS_U)
    assert readings == {
        "coretemp-isa-0000": {"Package id 0": 47.0, "Core 0": 45.0, "Core 1": 44.0},
        "nct6775-isa-0290": {"Vcore": 0.88, "fan2": 1171.0, "SYSTIN": 33.0},
        "nvme-pci-0100": {"Composite": 38.85},
    }


def test_lm_sensors_events_and_failures() -> None:
    harness = SourceHarness(LMSensors, {"service": "lm", "interval": 10})
    asked = harness.answerCommands(CommandOutput(0, SENSORS_U, ""),
                      CommandOutput(1, "", "Error: File /etc/sensors3.conf, line 3: parse error\n"),
                      ProcessTimeout("sensors timed out after 10s"))  # fmt: skip
    harness.start()
    events = byService(harness.events)
    assert events["lm.coretemp-isa-0000.Core 1"].metric == 44.0
    assert events["lm.nvme-pci-0100.Composite"].description == (
        "Sensor nvme-pci-0100:Composite - 38.85")  # fmt: skip
    assert (events["lm.state"].state, events["lm.state"].metric) == ("ok", 1)
    harness.advance(10)
    harness.advance(10)
    broken, slow = harness.events[-2:]
    assert (broken.service, broken.state) == ("lm.state", "critical")
    assert broken.description == "sensors: Error: File /etc/sensors3.conf, line 3: parse error"
    assert (slow.state, slow.description) == ("critical", "sensors: sensors timed out after 10s")
    assert asked == [["sensors", "-u"]] * 3
    assert harness.errors == []


@pytest_twisted.ensureDeferred
async def test_the_real_sensors_command(reactor: Any) -> None:
    sensors = shutil.which("sensors")
    assert sensors, "lm-sensors is not installed (scripts/test-deps.sh)"
    harness = SourceHarness(LMSensors, {"service": "lm", "executable": sensors},
                            duct=FakeDuct(reactor=reactor))  # fmt: skip
    events = byService(await harness.poll())
    if any(Path("/sys/class/hwmon").glob("*")):
        assert events["lm.state"].state == "ok", events["lm.state"].description
    else:
        assert events == {"lm.state": events["lm.state"]}
        assert (events["lm.state"].state, events["lm.state"].description) == (
            "warning", "no sensors: No sensors found!")  # fmt: skip
    harness = SourceHarness(LMSensors, {"service": "lm", "executable": "/nonexistent/sensors"},
                            duct=FakeDuct(reactor=reactor))  # fmt: skip
    [state] = await harness.poll()
    assert state.state == "critical" and "/nonexistent/sensors" in state.description


def test_no_chip_is_a_warning() -> None:
    harness = SourceHarness(LMSensors, {"service": "lm"})
    harness.answerCommands(CommandOutput(1, "", NO_SENSORS))
    harness.start()
    [state] = harness.events
    assert (state.state, state.description) == ("warning", "no sensors: No sensors found!")


def test_smart_attributes_of_the_scanned_disks() -> None:
    harness = SourceHarness(SMART, {"service": "smart"})
    asked = harness.answerCommands(CommandOutput(0, SCAN, ""), CommandOutput(0, SMART_A, ""),
                      CommandOutput(0, NVME_A, ""))  # fmt: skip
    harness.start()
    events = byService(harness.events)
    assert events["smart./dev/sda.Reallocated Sector Ct"].metric == 0
    assert events["smart./dev/sda.Current Pending Sector"].metric == 8
    assert events["smart./dev/sda.Power On Hours"].metric == 9784
    assert events["smart./dev/sda.Temperature Celsius"].description == (
        "Attribute /dev/sda:Temperature Celsius - 36")  # fmt: skip
    assert len([name for name in events if name.startswith("smart./dev/sda.")]) == 13
    assert events["smart./dev/sda.state"].state == "ok"
    assert events["smart./dev/nvme0.state"].description == "/dev/nvme0: 0 attributes"
    assert events["smart.state"].description == "2 disks"
    assert asked == [["smartctl", "--scan"], ["smartctl", "-A", "-d", "scsi", "/dev/sda"],
                     ["smartctl", "-A", "-d", "nvme", "/dev/nvme0"]]  # fmt: skip
    assert list(scanned("# no devices\n")) == []


def test_a_failing_disk_and_an_unreadable_one_are_critical() -> None:
    harness = SourceHarness(SMART, {"service": "smart", "devices": ["/dev/sda", "/dev/sdb"]})
    denied = ("smartctl 7.3\nCopyright (C) 2002-22\n\n"
              "Smartctl open device: /dev/sdb failed: Permission denied\n")  # fmt: skip
    harness.answerCommands(CommandOutput(8, SMART_A, ""), CommandOutput(2, denied, ""))
    harness.start()
    events = byService(harness.events)
    assert events["smart./dev/sda.Spin Up Time"].metric == 6083  # still read
    assert events["smart./dev/sda.state"].state == "critical"
    assert "failing" in events["smart./dev/sda.state"].description
    unreadable = events["smart./dev/sdb.state"]
    assert unreadable.state == "critical"
    assert (
        unreadable.description
        == "/dev/sdb: Smartctl open device: /dev/sdb failed: Permission denied"
    )


@pytest_twisted.ensureDeferred
async def test_the_real_smartctl_here(reactor: Any, tmp_path: Path) -> None:
    smartctl = shutil.which("smartctl")
    assert smartctl, "smartmontools is not installed (scripts/test-deps.sh)"
    duct = FakeDuct(reactor=reactor)
    scan = byService(await SourceHarness(SMART, {"service": "smart"}, duct=duct).poll())
    found = subprocess.run([smartctl, "--scan"], capture_output=True, text=True, check=False)
    if not found.stdout.strip():  # a VM's virtual disks are not listed
        assert [(e.state, e.description) for e in scan.values()] == [
            ("warning", "no disks: smartctl --scan found none")]  # fmt: skip
    else:
        assert scan["smart.state"].state == "ok"
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)

    async def read(device: str) -> Any:
        config = {"service": "smart", "devices": [device]}
        return byService(await SourceHarness(SMART, config, duct=duct).poll())

    untyped = (await read(str(image)))[f"smart.{image}.state"]
    assert (untyped.state, untyped.metric) == ("critical", 0)
    assert untyped.description.startswith(f"{image}: {image}: Unable to detect device type")
    asATA = (await read(f"{image} -d sat"))[f"smart.{image}.state"]
    assert asATA.state == "critical"
    assert "A mandatory SMART command failed" in asATA.description, asATA.description
