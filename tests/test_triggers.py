"""State rules: parsing "> 0.8" into an operator and a number, and applying them."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from duct.configuration import ConfigFile, ConfigurationError
from duct.objects import Event
from duct.triggers import Rule, TriggerError, Triggers, parseRules


def event(service: str, metric: float | None, state: str | None = "ok") -> Event:
    return Event(state, service, None, metric, 60.0, hostname="h.example", evtime=1000.0)


def rule(text: Any, pattern: str = "svc") -> Rule:
    return Rule.parse(pattern, text)


def holds(text: str, metric: float) -> bool:
    return rule(text).applies(event("svc", metric))


# -- parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op", "threshold"),
    [
        ("> 0.8", ">", 0.8),
        (">= 10", ">=", 10.0),
        ("< 1", "<", 1.0),
        ("== 0", "==", 0.0),
        ("!= 0", "!=", 0.0),
        ("<=5", "<=", 5.0),
        ("> 1e3", ">", 1000.0),
        ("< -2", "<", -2.0),
        ("> .5", ">", 0.5),
        ("  >=   2.5E-1  ", ">=", 0.25),
        ("> +3", ">", 3.0),
    ],
)
def test_parse_operator_and_number(text: str, op: str, threshold: float) -> None:
    parsed = rule(text)
    assert parsed.op == op
    assert parsed.threshold == threshold
    assert isinstance(parsed.threshold, float)


@pytest.mark.parametrize(
    ("text", "below", "at", "above"),
    [
        ("> 0.8", False, False, True),
        (">= 10", False, True, True),
        ("< 1", True, False, False),
        ("<=5", True, True, False),
        ("== 0", False, True, False),
        ("!= 0", True, False, True),
        ("> 1e3", False, False, True),
        ("< -2", True, False, False),
        ("> .5", False, False, True),
    ],
)
def test_comparisons(text: str, below: bool, at: bool, above: bool) -> None:
    threshold = rule(text).threshold
    assert holds(text, threshold - 0.01) is below
    assert holds(text, threshold) is at
    assert holds(text, threshold + 0.01) is above


@pytest.mark.parametrize(
    "text",
    [
        "gt 1",
        "> abc",
        "0.8",
        "> 1; import os",
        "> 1 and True",
        ">> 1",
        "=> 1",
        "=1",
        "> ",
        "",
        "> 1 2",
        "> nan",
        "> inf",
        "> 0x10",
        "> 1_000",
        "> __import__('os').system('true')",
        "> 1\n; import os",
    ],
)
def test_malformed_rules_raise(text: str) -> None:
    with pytest.raises(TriggerError):
        rule(text)


@pytest.mark.parametrize("value", [["> 1"], True, False, None, {"op": ">"}, ("> 1",), b"> 1", 5])
def test_non_string_rules_raise(value: Any) -> None:
    with pytest.raises(TriggerError):
        rule(value)


def test_trigger_error_is_a_value_error() -> None:
    assert issubclass(TriggerError, ValueError)


@pytest.mark.parametrize("pattern", ["cpu(", "[a-", "*cpu", "(?P<x"])
def test_invalid_regex_raises(pattern: str) -> None:
    with pytest.raises(TriggerError, match="not a valid regex"):
        Rule.parse(pattern, "> 1")


@pytest.mark.parametrize("pattern", [5, None, ["cpu"]])
def test_non_string_pattern_raises(pattern: Any) -> None:
    with pytest.raises(TriggerError):
        Rule.parse(pattern, "> 1")


def test_config_reports_non_string_pattern() -> None:
    """A YAML key such as ``404:`` is an int: a config problem, not a crash."""
    config = {
        "sources": [{"source": "duct.objects.Source", "service": "x", "warning": {404: "> 1"}}]
    }
    with pytest.raises(ConfigurationError) as info:
        ConfigFile.fromDict(config)
    assert [p.key for p in info.value.problems] == ["warning"]


def test_parse_rules_raises_on_the_bad_one() -> None:
    assert parseRules(None) == []
    assert parseRules({}) == []
    rules = parseRules({"cpu": "> 0.8", "mem": "< 10"})
    assert [(r.pattern.pattern, r.op, r.threshold) for r in rules] == [
        ("cpu", ">", 0.8),
        ("mem", "<", 10.0),
    ]
    with pytest.raises(TriggerError, match="mem"):
        parseRules({"cpu": "> 0.8", "mem": "lots"})


def test_config_rejects_bad_rules() -> None:
    config = {
        "sources": [
            {
                "source": "duct.objects.Source",
                "service": "x",
                "warning": {"x": "> 1; import os"},
                "critical": {"(": "> 1"},
            }
        ]
    }
    with pytest.raises(ConfigurationError) as info:
        ConfigFile.fromDict(config)
    keys = sorted(p.key or "" for p in info.value.problems)
    assert keys == ["critical", "warning"]


# -- never evaluated -------------------------------------------------------------


def test_rules_containing_code_are_rejected_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    calls: list[str] = []

    def forbidden(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} was called")

        return call

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden(name))
    payloads = [
        f"> __import__('pathlib').Path({str(marker)!r}).touch() or 1",
        f"> 1 or open({str(marker)!r}, 'w')",
        f"open({str(marker)!r}, 'w') and 1",
        "> (lambda: 1)()",
    ]
    for payload in payloads:
        with pytest.raises(TriggerError):
            Rule.parse("svc", payload)
    # A valid rule is parsed and applied without eval, exec or compile.
    triggers = Triggers(warning=[Rule.parse("svc", "> 1")])
    ev = event("svc", 2.0)
    triggers.apply([ev])
    assert ev.state == "warning"
    assert not marker.exists()
    assert calls == []


def test_rule_is_an_operator_and_a_float() -> None:
    parsed = rule("> 0.8")
    assert parsed.pattern.pattern == "svc"
    assert (parsed.op, parsed.threshold) == (">", 0.8)
    # Frozen: the parsed rule cannot be changed into something else.
    with pytest.raises(AttributeError):
        parsed.op = "exec"  # type: ignore[misc]


# -- applying ----------------------------------------------------------------------


def test_critical_beats_warning() -> None:
    triggers = Triggers(warning=parseRules({"svc": "> 1"}), critical=parseRules({"svc": "> 5"}))
    low, mid, high = event("svc", 0.5), event("svc", 3.0), event("svc", 10.0)
    triggers.apply([low, mid, high])
    assert [low.state, mid.state, high.state] == ["ok", "warning", "critical"]


def test_critical_beats_warning_whatever_the_order_of_rules() -> None:
    triggers = Triggers(warning=parseRules({"svc": "> 1"}), critical=parseRules({"svc": "> 1"}))
    ev = event("svc", 2.0)
    triggers.apply([ev])
    assert ev.state == "critical"


@pytest.mark.parametrize("state", ["critical", "warning", None, "error", "OK", "unknown"])
def test_only_ok_events_are_raised(state: str | None) -> None:
    triggers = Triggers(warning=parseRules({"svc": "> 1"}), critical=parseRules({"svc": "> 100"}))
    low = event("svc", 5.0, state=state)
    high = event("svc", 500.0, state=state)
    triggers.apply([low, high])
    assert low.state == state
    assert high.state == state


def test_critical_event_is_not_lowered_to_warning() -> None:
    triggers = Triggers(warning=parseRules({"svc": "> 1"}))
    ev = event("svc", 5.0, state="critical")
    triggers.apply([ev])
    assert ev.state == "critical"


def test_pattern_matches_from_the_start_of_the_service() -> None:
    prefix = rule("> 0", pattern="cpu")
    exact = rule("> 0", pattern="cpu$")
    assert prefix.applies(event("cpu", 1.0))
    assert prefix.applies(event("cpu.user", 1.0))
    assert not prefix.applies(event("host.cpu", 1.0))
    assert not prefix.applies(event("xcpu", 1.0))
    assert exact.applies(event("cpu", 1.0))
    assert not exact.applies(event("cpu.user", 1.0))


def test_events_with_no_metric_are_left_alone() -> None:
    triggers = Triggers(warning=parseRules({"svc": "!= 0"}), critical=parseRules({"svc": "== 0"}))
    ev = event("svc", None)
    assert not rule("!= 0").applies(ev)
    triggers.apply([ev])
    assert ev.state == "ok"
    assert ev.metric is None


def test_no_matching_rule_leaves_state_ok() -> None:
    triggers = Triggers(critical=parseRules({"disk": "> 0"}))
    ev = event("cpu", 100.0)
    triggers.apply([ev])
    assert ev.state == "ok"


def test_empty_triggers_are_false() -> None:
    assert not Triggers()
    assert not Triggers.fromConfig({})
    assert not Triggers.fromConfig({"warning": None, "critical": None})
    assert Triggers.fromConfig({"warning": {"x": "> 1"}})
    assert Triggers.fromConfig({"critical": {"x": "> 1"}})


def test_from_config_raises_on_bad_rule() -> None:
    with pytest.raises(TriggerError):
        Triggers.fromConfig({"critical": {"x": "gt 1"}})


def test_original_duct_network_case() -> None:
    """The case from the original duct's test suite."""
    triggers = Triggers.fromConfig(
        {
            "warning": {"network.\\w+.tx_bytes": "> 100"},
            "critical": {"network.\\w+.tx_bytes": "> 500"},
        }
    )
    events = [event("network.eth0.tx_bytes", m) for m in (50, 1000, 200)]
    triggers.apply(events)
    assert [e.state for e in events] == ["ok", "critical", "warning"]
    other = event("network.eth0.rx_bytes", 1000)
    triggers.apply([other])
    assert other.state == "ok"
