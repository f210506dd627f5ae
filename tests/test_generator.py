"""duct.sources.generator.Function: values over polls, refused expressions, math errors."""

from __future__ import annotations

import math

import pytest

from duct.sources.generator import Function, compileFunction
from duct.testing import SourceHarness


def values(config: dict, polls: int) -> list:
    harness = SourceHarness(Function, {"service": "wave", "interval": 1, **config})
    harness.start()
    for _ in range(polls - 1):
        harness.advance(1)
    return harness.events


def test_sin_of_x_by_default_stepping_by_a_tenth() -> None:
    events = values({}, 3)
    assert [e.service for e in events] == ["wave"] * 3
    assert [e.metric for e in events] == pytest.approx([math.sin(0.1), math.sin(0.2),
                                                        math.sin(0.3)])  # fmt: skip
    assert {e.state for e in events} == {"ok"}
    assert events[2].description == "sin(x) at x=0.3"


def test_arithmetic_constants_and_every_function() -> None:
    text = "2 * pi * x ** 2 - e % 2 + abs(-x) / 4 + log(x, 2) + log(e) + +cos(x) + tanh(x)"
    events = values({"function": text, "dx": 0.5}, 2)
    x = 1.0
    expected = (2 * math.pi * x**2 - math.e % 2 + abs(-x) / 4 + math.log(x, 2) + math.log(math.e)
                + math.cos(x) + math.tanh(x))  # fmt: skip
    assert events[1].metric == pytest.approx(expected)
    f = compileFunction("sin(x)+tan(x)+sinh(x)+cosh(x)+asin(x)+acos(x)+atan(x)+asinh(x)"
                        "+atanh(x)+acosh(x+1)")  # fmt: skip
    x = 0.5
    assert f(x) == pytest.approx(math.sin(x) + math.tan(x) + math.sinh(x) + math.cosh(x)
                                 + math.asin(x) + math.acos(x) + math.atan(x) + math.asinh(x)
                                 + math.atanh(x) + math.acosh(x + 1))  # fmt: skip


def test_a_negative_dx_steps_down() -> None:
    events = values({"function": "x", "dx": -2}, 3)
    assert [e.metric for e in events] == [-2.0, -4.0, -6.0]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("__import__('os').system('true')", "calling \"__import__('os').system\" is not allowed"),
        ("open('/etc/passwd')", "calling 'open' is not allowed"),
        ("math.sin(x)", "calling 'math.sin' is not allowed"),
        ("sin(x).real", "'sin(x).real' is not allowed"),
        ("y + 1", "the name 'y' is not allowed"),
        ("'text'", "'text' is not allowed: only numbers"),
        ("True", "True is not allowed"),
        ("1j", "1j is not allowed"),
        ("[x]", "'[x]' is not allowed"),
        ("x if x else 1", "is not allowed"),
        ("x < 1", "'x < 1' is not allowed"),
        ("lambda: 1", "is not allowed"),
        ("x // 2", "the operator FloorDiv is not allowed"),
        ("x << 2", "the operator LShift is not allowed"),
        ("~x", "the operator Invert is not allowed"),
        ("sin(x, 2)", "sin() takes 1 argument(s), not 2"),
        ("log()", "log() takes 1 or 2 argument(s), not 0"),
        ("log(x, base=2)", "log() takes no keyword arguments"),
        ("x +", "not an expression"),
        ("x = 1", "not an expression"),
        ("-" * 60 + "x", "nested more than 50 deep"),
        ("x+" * 600 + "x", "longer than 1000 characters"),
    ],
)
def test_anything_else_is_a_problem_naming_the_function_key(text: str, says: str) -> None:
    problems = Function.optionProblems({"function": text})
    assert len(problems) == 1
    key, message = problems[0]
    assert key == "function"
    assert says in message
    with pytest.raises(ValueError, match="^function: "):
        SourceHarness(Function, {"service": "wave", "function": text})


def test_powers_stay_floats_so_nothing_grows_without_bound() -> None:
    events = values({"function": "10 ** 10 ** 10"}, 1)
    assert events[0].state == "critical"
    assert "math range error" in events[0].description


@pytest.mark.parametrize(
    ("text", "dx", "says"),
    [
        ("log(x - 0.1)", 0.1, "math domain error"),
        ("1 / (x - 1)", 1, "division by zero"),
        ("x % 0", 1, "modulo"),
        ("(-x) ** 0.5", 1, "math domain error"),
        ("e ** (x * 1000)", 1, "math range error"),
        ("1e308 * x * 10", 1, "not finite"),
        ("acosh(x)", 0.5, "math domain error"),
    ],
)
def test_where_the_function_has_no_value_the_event_is_critical(
    text: str, dx: float, says: str
) -> None:
    harness = SourceHarness(Function, {"service": "wave", "interval": 1, "function": text,
                                       "dx": dx})  # fmt: skip
    harness.start()
    [event] = harness.events
    assert (event.state, event.metric) == ("critical", None)
    assert event.description.startswith(f"{text} at x={dx:g}: ")
    assert says in event.description
    assert harness.errors == []


def test_after_a_math_error_x_steps_on_and_values_come_back() -> None:
    events = values({"function": "log(x - 0.1)"}, 3)
    assert [e.state for e in events] == ["critical", "ok", "ok"]
    assert events[2].metric == pytest.approx(math.log(0.2))
