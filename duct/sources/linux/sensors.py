"""Hardware sensors: hwmon in sysfs, lm-sensors' ``sensors -u``, and SMART attributes.

Each source runs its commands through `Source.run`, so each works over
SSH too, and reports ``{service}.state``: 1, ``ok``, when it read
something; 0, ``warning``, when there was nothing to read (no sensor, no
disk); 0, ``critical``, with the reason, when the command failed or took
longer than ``timeout``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from twisted.python.failure import Failure

from duct.lib.commands import CommandOutput
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason

HWMON_FILES = ("name", "temp*_input", "temp*_label", "fan*_input", "fan*_label")


def _lastLine(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _firstLine(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


class _Sensing(Source):
    """What the three sources share: running a command, and the state event."""

    ssh = True
    sync = True

    async def attempt(self, argv: list[str], prefix: str = "") -> CommandOutput | Event:
        """The command's output, or the critical event of a command that did not run."""
        try:
            return await self.run(argv)
        except Exception:
            return self.state("critical", f"{argv[0]}: {failureReason(Failure())}", prefix)

    def state(self, state: str, description: str, prefix: str = "") -> Event:
        """``{service}[.prefix].state``: 1 when ``ok``, else 0."""
        name = f"{prefix}.state" if prefix else "state"
        return self.createEvent(state, description, 1 if state == "ok" else 0, name)


def hwmonReadings(listing: str) -> dict[str, dict[str, float]]:
    """``{adapter: {sensor: value}}`` from ``grep -H . FILE...`` over hwmon devices.

    Temperatures are in °C (sysfs gives m°C), fans in RPM.  A sensor is
    named by its label, lowercased with spaces as ``_``, or by its file's
    name (``temp1``) when it has no label.
    """
    devices: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        path, sep, content = line.partition(":")
        parts = path.rsplit("/", 2)
        if not sep or len(parts) != 3:
            continue
        devices.setdefault(parts[1], {})[parts[2]] = content.strip()
    readings: dict[str, dict[str, float]] = {}
    for device, files in sorted(devices.items()):
        adapter = files.get("name") or device
        for name, raw in sorted(files.items()):
            sensor, _, kind = name.partition("_")
            if kind != "input":
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            label = files.get(f"{sensor}_label") or sensor
            scale = 1000.0 if sensor.startswith("temp") else 1.0
            readings.setdefault(adapter, {})[label.lower().replace(" ", "_")] = value / scale
    return readings


class Sensors(_Sensing):
    """Temperatures (°C) and fan speeds (RPM) of the kernel's hwmon devices.

    ``{service}.{adapter}.{sensor}``: the adapter is the device's ``name``
    (``coretemp``, ``nvme``, ...), the sensor its label, lowercased with
    spaces as ``_`` (``package_id_0``), else its file's name (``temp1``).
    """

    options = (Option("hwmon", "string", "/sys/class/hwmon", "directory of the hwmon devices"),)

    async def get(self) -> list[Event]:
        root = self.config["hwmon"].rstrip("/")
        patterns: list[str] = []
        for name in HWMON_FILES:
            patterns += ["-o", "-name", name] if patterns else ["-name", name]
        argv = ["find", "-L", root, "-mindepth", "2", "-maxdepth", "2", "-type", "f",
                "(", *patterns, ")", "-exec", "grep", "-H", ".", "{}", "+"]  # fmt: skip
        outcome = await self.attempt(argv)
        if isinstance(outcome, Event):
            return [outcome]
        code, out, err = outcome
        readings = hwmonReadings(out)
        if not readings:
            why = _lastLine(err) if code else f"no temperature or fan sensor in {root}"
            return [self.state("warning", f"no sensors: {why}")]
        events = [self.createEvent("ok", f"Sensor {adapter}:{sensor} - {value}", value,
                                   f"{adapter}.{sensor}")
                  for adapter, sensors in readings.items()
                  for sensor, value in sensors.items()]  # fmt: skip
        return [*events, self.state("ok", f"{len(events)} sensors")]


def lmSensorsReadings(raw: str) -> dict[str, dict[str, float]]:
    """``{chip: {feature label: input value}}`` from ``sensors -u``."""
    readings: dict[str, dict[str, float]] = {}
    chip = feature = None
    for line in raw.splitlines():
        if not line.strip():
            chip = feature = None
            continue
        if not line[0].isspace():
            if chip is None:
                chip, feature = line.strip(), None
            elif line.startswith("Adapter:"):
                continue
            elif line.rstrip().endswith(":"):
                feature = line.rstrip()[:-1]
            continue
        name, _, value = line.strip().partition(":")
        if chip is None or feature is None or not name.endswith("_input"):
            continue
        try:
            readings.setdefault(chip, {})[feature] = float(value)
        except ValueError:
            continue
    return readings


class LMSensors(_Sensing):
    """Every chip's readings from lm-sensors' ``sensors -u``.

    ``{service}.{chip}.{feature}``: the chip as ``sensors`` names it
    (``coretemp-isa-0000``), the feature by its label (``Core 0``), its
    value as ``sensors`` computes it (°C, RPM, V, W...).
    """

    options = (Option("executable", "string", "sensors", "the sensors command of lm-sensors"),)

    async def get(self) -> list[Event]:
        outcome = await self.attempt([self.config["executable"], "-u"])
        if isinstance(outcome, Event):
            return [outcome]
        code, out, err = outcome
        readings = lmSensorsReadings(out)
        if not readings:
            why = _firstLine(err) or _firstLine(out) or f"exit status {code}"
            if code and "No sensors found" not in err:
                return [self.state("critical", f"sensors: {why}")]
            return [self.state("warning", f"no sensors: {why}")]
        events = [self.createEvent("ok", f"Sensor {chip}:{feature} - {value}", value,
                                   f"{chip}.{feature}")
                  for chip, features in readings.items()
                  for feature, value in features.items()]  # fmt: skip
        return [*events, self.state("ok", f"{len(events)} sensors")]


SMART_DISK_FAILING = 0x08
"""smartctl's exit status bit 3: the disk's own health check says it is failing."""
SMART_UNREADABLE = 0x03
"""Bits 0 and 1: the command line was refused, or the device could not be opened."""


def scanned(listing: str) -> Iterator[tuple[str, list[str]]]:
    """``(device, its -d arguments)`` from ``smartctl --scan``."""
    for line in listing.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0].startswith("/dev"):
            kind = words[words.index("-d") + 1 : words.index("-d") + 2] if "-d" in words else []
            yield words[0], ["-d", *kind] if kind else []


def smartAttributes(table: str) -> dict[str, int]:
    """Raw values by attribute name (``_`` as spaces) from ``smartctl -A``'s ATA table."""
    attributes: dict[str, int] = {}
    inTable = False
    for line in table.splitlines():
        text = line.strip()
        if text.startswith("ID#"):
            inTable = True
            continue
        if not inTable or not text:
            inTable = inTable and bool(text)
            continue
        fields = text.split(None, 9)
        match = re.match(r"\d+", fields[9]) if len(fields) == 10 else None
        if match:
            attributes[fields[1].replace("_", " ")] = int(match.group())
    return attributes


def smartctlReason(output: str) -> str:
    """What smartctl said went wrong: its lines after the banner, joined."""
    lines = [line.strip() for line in output.splitlines()]
    banner = ("smartctl ", "Copyright", "Use smartctl -h", "=== START")
    return "; ".join(line for line in lines if line and not line.startswith(banner))


class SMART(_Sensing):
    """SMART attributes (``smartctl -A``) of the disks ``smartctl --scan`` finds, or ``devices``.

    ``{service}.{device}.{attribute}``: each attribute's raw value (the
    leading number), named as smartctl names it with spaces for ``_``
    (``/dev/sda.Reallocated Sector Ct``).  ``{service}.{device}.state``:
    1, ``ok``; 0, ``critical``, with smartctl's reason, when SMART cannot
    be read from the device or the disk says it is failing.
    """

    options = (
        Option("executable", "string", "smartctl", "the smartctl command of smartmontools"),
        Option(
            "devices",
            "strings",
            None,
            'devices to read, each with its smartctl -d if need be ("/dev/sda -d sat");'
            " default: what smartctl --scan finds",
        ),  # fmt: skip
    )

    async def get(self) -> list[Event]:
        smartctl = self.config["executable"]
        given = [entry.split() for entry in self.config["devices"] or [] if entry.strip()]
        devices = [(words[0], words[1:]) for words in given]
        if not devices:
            outcome = await self.attempt([smartctl, "--scan"])
            if isinstance(outcome, Event):
                return [outcome]
            code, out, err = outcome
            if code:
                why = smartctlReason(out) or _lastLine(err) or f"exit status {code}"
                return [self.state("critical", f"smartctl --scan: {why}")]
            devices = list(scanned(out))
            if not devices:
                return [self.state("warning", "no disks: smartctl --scan found none")]
        events: list[Event] = []
        for device, kind in devices:
            events += await self.disk(smartctl, device, kind)
        return [*events, self.state("ok", f"{len(devices)} disks")]

    async def disk(self, smartctl: str, device: str, kind: list[str]) -> list[Event]:
        outcome = await self.attempt([smartctl, "-A", *kind, device], device)
        if isinstance(outcome, Event):
            return [outcome]
        code, out, err = outcome
        attributes = smartAttributes(out)
        events = [self.createEvent("ok", f"Attribute {device}:{name} - {value}", value,
                                   f"{device}.{name}")
                  for name, value in attributes.items()]  # fmt: skip
        if code & SMART_UNREADABLE or (code and not attributes):
            why = smartctlReason(out) or _lastLine(err) or f"exit status {code}"
            state, description = "critical", f"{device}: {why}"
        elif code & SMART_DISK_FAILING:
            state, description = "critical", f"{device}: SMART says the disk is failing"
        else:
            state, description = "ok", f"{device}: {len(attributes)} attributes"
        return [*events, self.state(state, description, device)]
