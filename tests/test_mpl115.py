"""duct.sources.sensors.environment.MPL115: the datasheet's worked example, and no bus here.

No I2C bus exists on this machine (a VM), so the sensor is played by
`Registers`, which answers the transfers an MPL115A2 answers, with the
register values of the datasheet's worked example: a0 = 0x3ECE
(2009.75), b1 = 0xB3F9 (-2.37585), b2 = 0xC517 (-0.92047), c12 = 0x33C8
(0.00079), Padc = 0x6680 (410) and Tadc = 0x7EC0 (507), which give
Pcomp = 733.2, that is 96.59 kPa.  The real i2c-dev path runs too, and
reports that there is no bus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from duct.sources.sensors.environment import MPL115, Coefficients, compensate
from duct.testing import FakeDuct, SourceHarness

COEFFICIENTS = bytes([0x3E, 0xCE, 0xB3, 0xF9, 0xC5, 0x17, 0x33, 0xC8])
READINGS = bytes([0x66, 0x80, 0x7E, 0xC0])


class Registers:
    """An MPL115A2's registers: a conversion must be started before the readings are read."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.converted = False
        self.silent = False

    def transfer(self, write: bytes, read: int) -> bytes:
        self.writes.append(write)
        if self.silent:
            raise OSError(121, "Remote I/O error")  # EREMOTEIO: nothing acknowledged
        if write == bytes([0x12, 0x01]):
            self.converted = True
            return b""
        if write == bytes([0x04]):
            return COEFFICIENTS[:read]
        if write == bytes([0x00]) and self.converted:
            self.converted = False
            return READINGS[:read]
        raise AssertionError(f"unexpected transfer {write!r}")


def test_the_datasheet_example() -> None:
    c = Coefficients.fromRegisters(COEFFICIENTS)
    assert (c.a0, round(c.b1, 5), round(c.b2, 5), round(c.c12, 5)) == (
        2009.75, -2.37585, -0.92047, 0.00079)  # fmt: skip
    hpa, temp = compensate(c, READINGS)
    assert round(hpa / 10, 2) == 96.59  # kPa
    assert round(temp, 2) == round(25 - (507 - 512) / 5.35, 2)
    higher, _ = compensate(c, READINGS, altitude=500.0)
    assert higher == pytest.approx(hpa / (1 - 500 / 44330) ** 5.255)
    with pytest.raises(ValueError):
        Coefficients.fromRegisters(COEFFICIENTS[:6])


def test_polls_wait_for_the_conversion_and_read_the_coefficients_once() -> None:
    harness = SourceHarness(MPL115, {"service": "air", "interval": 60, "altitude": 0})
    bus = harness.source.bus = Registers()
    harness.start()
    assert harness.events == []  # the conversion takes up to 3 ms
    harness.advance(0.003)
    events = {e.service: e for e in harness.events}
    assert (events["air.hpa"].metric, events["air.hpa"].description) == (965.87, "HPA")
    assert events["air.temp"].metric == 25.93
    assert events["air.state"].description == "MPL115 at 0x60 on i2c-1"
    harness.advance(60)
    harness.advance(0.003)
    assert [w.hex() for w in bus.writes] == ["04", "1201", "00", "1201", "00"]
    assert harness.errors == []


def test_a_device_that_does_not_answer_is_critical() -> None:
    harness = SourceHarness(MPL115, {"service": "air", "interval": 60, "timeout": 5})
    bus = harness.source.bus = Registers()
    bus.silent = True
    harness.start()
    [nack] = harness.events
    assert (nack.service, nack.state, nack.metric) == ("air.state", "critical", 0)
    assert "Remote I/O error" in nack.description
    harness.source.blocking = lambda call: Deferred()  # type: ignore[method-assign]
    harness.advance(60)
    assert harness.source.running
    harness.advance(5)
    silent = harness.events[-1]
    assert (silent.state, silent.description) == (
        "critical",
        "MPL115 at 0x60 on i2c-1: no answer in 5s",
    )
    assert harness.errors == [] and not harness.source.running


@pytest_twisted.ensureDeferred
async def test_no_i2c_bus_here_is_critical(reactor: Any) -> None:
    bus = 7
    harness = SourceHarness(MPL115, {"service": "air", "smbus": bus},
                            duct=FakeDuct(reactor=reactor))  # fmt: skip
    [state] = await harness.poll()
    assert (state.state, state.metric) == ("critical", 0)
    if not Path(f"/dev/i2c-{bus}").exists():
        why = f"[Errno 2] No such file or directory: '/dev/i2c-{bus}'"
        assert state.description == f"MPL115 at 0x60 on i2c-{bus}: {why}"
