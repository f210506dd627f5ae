"""duct.lib.json: always valid JSON, NaN and infinities written as null."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from duct.lib.json import dumps, eventJson, eventLines, finite, finiteNumber
from duct.objects import Event

NAN, INF = float("nan"), float("inf")


def strict(text: str) -> Any:
    """Parse as a strict JSON reader would: no NaN, no Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def event(metric: Any, **fields: Any) -> Event:
    return Event("ok", "svc", "text", metric, 60.0, hostname="h1", evtime=1.5, **fields)


def test_finite_replaces_nan_and_infinities_at_any_depth() -> None:
    value = {"a": NAN, "b": [1.0, INF, {"c": -INF, "d": (2, NAN)}], "e": "nan", "f": None}
    assert finite(value) == {
        "a": None,
        "b": [1.0, None, {"c": None, "d": [2, None]}],
        "e": "nan",
        "f": None,
    }
    assert value["a"] is NAN  # the original is left as it was


@pytest.mark.parametrize("pretty", [False, True])
def test_dumps_writes_valid_json_for_nested_non_finite_numbers(pretty: bool) -> None:
    text = dumps({"outer": {"inner": [NAN, INF, -INF, 0.5]}, "n": 3}, pretty=pretty)
    assert strict(text) == {"outer": {"inner": [None, None, None, 0.5]}, "n": 3}


def test_dumps_compact_and_pretty_layouts() -> None:
    value = {"b": 1, "a": [1, 2]}
    assert dumps(value) == '{"b":1,"a":[1,2]}'
    assert dumps(value, pretty=True) == json.dumps(value, indent=1, sort_keys=True)


def test_dumps_writes_what_json_cannot_represent_as_text() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    assert strict(dumps({"x": Odd(), "y": NAN})) == {"x": "odd", "y": None}


def test_event_json_is_the_event_with_its_seq_first() -> None:
    e = event(0.25, tags=["a"], attributes={"k": "v"})
    assert strict(eventJson(e)) == e.asDict()
    text = eventJson(e, seq=7)
    assert text.startswith('{"seq":7,"host":"h1",')
    assert strict(text) == {"seq": 7, **e.asDict()}


@pytest.mark.parametrize("metric", [NAN, INF, -INF])
def test_an_event_with_a_non_finite_metric_has_a_null_metric(metric: float) -> None:
    data = strict(eventJson(event(metric, attributes={"k": "v"}), seq=1))
    assert data["metric"] is None and data["seq"] == 1 and data["attributes"] == {"k": "v"}


def test_event_lines_end_each_event_with_a_newline_and_survive_one_nan() -> None:
    events = [event(1.0), event(NAN), event(3.0)]
    text = eventLines(events)
    assert text.endswith("\n") and text.count("\n") == 3
    assert [strict(line)["metric"] for line in text.splitlines()] == [1.0, None, 3.0]
    assert eventLines([]) == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (0.5, 0.5), (NAN, None), (INF, None), (None, None), ("7", None)],
)
def test_finite_number_keeps_only_finite_numbers(value: Any, expected: float | None) -> None:
    result = finiteNumber(value)
    assert result == expected and (result is None or isinstance(result, float))
    assert result is None or math.isfinite(result)
