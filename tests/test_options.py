"""Declared options: checks, and defaults filled once in the base classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from duct.options import Option, OptionError, withDefaults
from duct.outputs.file import JSONLines
from duct.outputs.store import Store
from duct.sources.linux.basic import DiskFree
from duct.sources.riemann import DEFAULT_MAX_FRAME, RiemannTCP, RiemannUDP
from duct.testing import FakeDuct


def test_above_is_an_exclusive_minimum() -> None:
    rate = Option("maxrate", "number", None, "events per second", above=0)
    assert rate.check(0.5) == 0.5
    with pytest.raises(OptionError, match="more than 0"):
        rate.check(0)
    with pytest.raises(OptionError, match="more than 0"):
        rate.check(-1.0)
    assert rate.check(None) is None  # unset stays unset


def test_with_defaults_fills_absent_and_none_keys_and_keeps_zero() -> None:
    filled = withDefaults(RiemannUDP, {"service": "u", "port": 0, "interface": None})
    assert filled["port"] == 0
    assert filled["interface"] == "127.0.0.1"
    assert filled["max_waiting"] == 1000


def test_plugins_built_from_a_raw_config_take_the_declared_defaults(tmp_path: Path) -> None:
    duct = FakeDuct()
    duct.config = {"state_dir": str(tmp_path)}
    queue = lambda events: None  # noqa: E731

    udp = RiemannUDP({"service": "u"}, queue, duct)
    assert (udp.interface, udp.portNumber, udp.maxWaiting) == ("127.0.0.1", 5555, 1000)
    tcp = RiemannTCP({"service": "t", "max_frame": None}, queue, duct)
    assert (tcp.listen, tcp.maxFrame) == ("tcp:5555:interface=127.0.0.1", DEFAULT_MAX_FRAME)
    assert DiskFree({"service": "df"}, queue, duct).disks is None

    assert JSONLines({"path": None}, duct).path == "-"
    store = Store({"name": "s"}, duct)
    assert store.path == str(tmp_path / "store" / "s.sqlite")
    assert (store.retention, store.cleanupInterval) == (7 * 86400.0, 600.0)
