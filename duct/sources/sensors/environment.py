"""environment: pressure and temperature from an MPL115A2 on an I2C bus (Linux i2c-dev).

The conversion follows the sensor's datasheet: the four compensation
coefficients are read once from registers 0x04 to 0x0B, each conversion
is started by writing register 0x12, and the 10-bit pressure and
temperature readings are compensated with them.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from duct.lib.sshconfig import DEFAULT_TIMEOUT
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason

I2C_SLAVE = 0x0703
"""The i2c-dev ioctl that chooses the device the next reads and writes go to."""
PADC_MSB, A0_MSB, CONVERT = 0x00, 0x04, 0x12
CONVERSION_TIME = 0.003
"""Seconds a conversion takes at most (the datasheet's 3 ms)."""

T = TypeVar("T")


class Bus(Protocol):
    def transfer(self, write: bytes, read: int) -> bytes:
        """Write ``write`` to the device, then read ``read`` bytes from it (blocking)."""


class I2CBus:
    """One device on a Linux I2C bus, through ``/dev/i2c-N``; opened for each transfer."""

    def __init__(self, path: str, address: int) -> None:
        self.path = path
        self.address = address

    def transfer(self, write: bytes, read: int) -> bytes:
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.ioctl(fd, I2C_SLAVE, self.address)
            os.write(fd, write)
            return os.read(fd, read) if read else b""
        finally:
            os.close(fd)


def signed16(msb: int, lsb: int) -> int:
    value = (msb << 8) | lsb
    return value - 0x10000 if value & 0x8000 else value


@dataclass(frozen=True)
class Coefficients:
    """a0, b1, b2 and c12, as the datasheet scales them from their registers."""

    a0: float
    b1: float
    b2: float
    c12: float

    @classmethod
    def fromRegisters(cls, data: bytes) -> Coefficients:
        """From the 8 bytes of registers 0x04 to 0x0B, most significant byte first."""
        if len(data) != 8:
            raise ValueError(f"expected 8 bytes of coefficients, got {len(data)}")
        a0, b1, b2, c12 = (signed16(data[i], data[i + 1]) for i in range(0, 8, 2))
        return cls(a0 / 8.0, b1 / 8192.0, b2 / 16384.0, c12 / 16777216.0)


def compensate(
    coefficients: Coefficients, data: bytes, altitude: float = 0.0
) -> tuple[float, float]:
    """(pressure in hPa at sea level, temperature in °C) from registers 0x00 to 0x03."""
    if len(data) != 4:
        raise ValueError(f"expected 4 bytes of readings, got {len(data)}")
    padc = ((data[0] << 8) | data[1]) >> 6
    tadc = ((data[2] << 8) | data[3]) >> 6
    c = coefficients
    pcomp = c.a0 + (c.b1 + c.c12 * tadc) * padc + c.b2 * tadc
    hpa = pcomp * (1150.0 - 500.0) / 1023.0 + 500.0
    hpa /= (1.0 - altitude / 44330.0) ** 5.255
    return hpa, 25.0 - (tadc - 512.0) / 5.35


class MPL115(Source):
    """Air pressure and temperature from an MPL115A2 at ``address`` on I2C bus ``smbus``.

    ``{service}.hpa``: the pressure in hPa, brought to sea level from
    ``altitude`` metres; ``{service}.temp``: the temperature in °C, both
    rounded to 2 places.  ``{service}.state``: 1, ``ok``; 0, ``critical``,
    with the reason, when the bus cannot be opened, or the device does not
    answer or takes longer than ``timeout``.
    """

    sync = True
    options = (
        Option("address", "integer", 0x60, "I2C address of the sensor", minimum=0),
        Option(
            "smbus", "integer", 1, "I2C bus number: the sensor is on /dev/i2c-<smbus>", minimum=0
        ),  # fmt: skip
        Option("altitude", "number", 0.0, "metres above sea level, to correct the pressure"),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        device = f"/dev/i2c-{self.config['smbus']}"
        self.bus: Bus = I2CBus(device, self.config["address"])
        self.coefficients: Coefficients | None = None

    def blocking(self, call: Callable[[], T]) -> Deferred[T]:
        """Run ``call`` on the reactor's thread pool (at once under a test's Clock)."""
        reactor = self.duct.reactor
        getThreadPool = getattr(reactor, "getThreadPool", None)
        if getThreadPool is None:
            return maybeDeferred(call)
        return deferToThreadPool(reactor, getThreadPool(), call)

    async def read(self) -> tuple[float, float]:
        if self.coefficients is None:
            data = await self.blocking(lambda: self.bus.transfer(bytes([A0_MSB]), 8))
            self.coefficients = Coefficients.fromRegisters(data)
        await self.blocking(lambda: self.bus.transfer(bytes([CONVERT, 0x01]), 0))
        await deferLater(self.clock, CONVERSION_TIME, lambda: None)
        data = await self.blocking(lambda: self.bus.transfer(bytes([PADC_MSB]), 4))
        return compensate(self.coefficients, data, float(self.config["altitude"]))

    async def get(self) -> list[Event]:
        where = f"MPL115 at {self.config['address']:#04x} on i2c-{self.config['smbus']}"
        limit = self.config["timeout"] or DEFAULT_TIMEOUT

        def silent(result: object, seconds: float) -> Any:
            raise TimeoutError(f"no answer in {seconds:g}s")

        try:
            reading = Deferred.fromCoroutine(self.read())
            hpa, temp = await reading.addTimeout(limit, self.clock, onTimeoutCancel=silent)
        except Exception:
            return [self.createEvent("critical", f"{where}: {failureReason(Failure())}", 0,
                                     "state")]  # fmt: skip
        return [
            self.createEvent("ok", "HPA", round(hpa, 2), "hpa"),
            self.createEvent("ok", "Temperature", round(temp, 2), "temp"),
            self.createEvent("ok", where, 1, "state"),
        ]
