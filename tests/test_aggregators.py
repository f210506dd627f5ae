"""Aggregation functions: (previous, current, seconds) -> new metric or None."""

from __future__ import annotations

import pytest

from duct.aggregators import Counter, Counter32, Counter64, Delta, Rate

# -- Counter -------------------------------------------------------------------------


def test_counter_rate() -> None:
    assert Counter(100, 160, 10) == 6.0
    assert Counter(0.5, 2.0, 0.5) == 3.0


def test_counter_unchanged_is_zero_rate() -> None:
    result = Counter(100, 100, 10)
    assert result == 0.0
    assert result is not None


def test_counter_reset_yields_nothing() -> None:
    assert Counter(1000, 10, 10) is None
    assert Counter(1, 0, 1) is None


@pytest.mark.parametrize("seconds", [0, 0.0, -1, -0.001])
def test_counter_zero_or_negative_time_yields_nothing(seconds: float) -> None:
    assert Counter(100, 200, seconds) is None


# -- wrapping counters -------------------------------------------------------------


def test_counter32_without_wrap() -> None:
    assert Counter32(10, 40, 3) == 10.0


def test_counter32_wraps_exactly() -> None:
    # 10 before the top, then 5 past zero: 15 increments.
    assert Counter32(2**32 - 10, 5, 1) == 15.0
    assert Counter32(2**32 - 1, 0, 1) == 1.0
    assert Counter32(4_294_967_000, 704, 2) == (4_294_967_296 - 4_294_967_000 + 704) / 2
    assert Counter32(4_294_967_000, 704, 2) == 500.0


def test_counter32_previous_beyond_its_range_yields_nothing() -> None:
    # A value at or above 2**32 cannot be a 32-bit counter that wrapped.
    assert Counter32(2**32, 5, 1) is None
    assert Counter32(2**40, 5, 1) is None


@pytest.mark.parametrize("seconds", [0, -5])
def test_counter32_zero_time_yields_nothing(seconds: float) -> None:
    assert Counter32(2**32 - 10, 5, seconds) is None
    assert Counter32(1, 5, seconds) is None


def test_counter64_wraps_exactly() -> None:
    assert Counter64(2**64 - 10, 5, 1) == 15.0
    assert Counter64(2**64 - 1, 0, 1) == 1.0
    # Large ints keep full precision: exactly 3000 increments over 3 seconds.
    assert Counter64(18_446_744_073_709_550_616, 2000, 3) == 1000.0
    # Values past 2**32 are ordinary for a 64-bit counter.
    assert Counter64(2**32 + 100, 2**32 + 600, 5) == 100.0


def test_counter64_decrease_from_low_value_is_a_reset() -> None:
    # An interface re-created or a host rebooted: no spike of ~1.8e19/s.
    assert Counter64(100, 50, 1) is None
    assert Counter64(2**63 - 1, 0, 1) is None
    # From the top half of the range, it is a wrap.
    assert Counter64(2**63 + 5, 5, 1) == float(2**64 - 2**63)


def test_counter64_previous_beyond_its_range_yields_nothing() -> None:
    assert Counter64(2**64, 1, 1) is None


def test_counter64_zero_time_yields_nothing() -> None:
    assert Counter64(2**64 - 10, 5, 0) is None


def test_wrapping_counters_are_named() -> None:
    assert Counter32.__name__ == "Counter32"
    assert Counter64.__name__ == "Counter64"
    assert Counter32.__doc__ and "2**32" in Counter32.__doc__
    assert Counter64.__doc__ and "2**64" in Counter64.__doc__


# -- Rate and Delta -------------------------------------------------------------------


def test_rate_may_be_negative() -> None:
    assert Rate(100, 40, 6) == -10.0
    assert Rate(40, 100, 6) == 10.0
    assert Rate(5, 5, 1) == 0.0


@pytest.mark.parametrize("seconds", [0, -1])
def test_rate_zero_time_yields_nothing(seconds: float) -> None:
    assert Rate(1, 2, seconds) is None


def test_delta_is_the_difference() -> None:
    assert Delta(10, 25, 5) == 15
    assert Delta(25, 10, 5) == -15
    assert Delta(3, 3, 5) == 0
    # The time between samples does not matter to Delta.
    assert Delta(10, 25, 0) == 15
    assert Delta(10, 25, 1000) == 15
