"""State rules such as ``"> 0.8"``, parsed once when the config loads.

A source's ``warning`` and ``critical`` options map a regular expression on
the service name to a comparison.  Rules are parsed into an operator and a
number; nothing in them is ever evaluated as code.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from duct.event import Event

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}

_RULE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class TriggerError(ValueError):
    """A rule that cannot be parsed."""


@dataclass(frozen=True)
class Rule:
    """One comparison on the services whose names match ``pattern``."""

    pattern: re.Pattern[str]
    op: str
    threshold: float

    @classmethod
    def parse(cls, pattern: str, rule: Any) -> Rule:
        if not isinstance(pattern, str):
            raise TriggerError(f"service pattern {pattern!r} must be a string (a regex)")
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise TriggerError(f"service pattern {pattern!r} is not a valid regex: {e}") from e
        if isinstance(rule, bool) or not isinstance(rule, (str, int, float)):
            raise TriggerError(f'rule for {pattern!r} must be a string like "> 0.8", got {rule!r}')
        match = _RULE.match(str(rule))
        if match is None:
            raise TriggerError(
                f"rule {rule!r} for {pattern!r} is not a comparison: "
                'expected an operator (>, >=, <, <=, ==, !=) and a number, like "> 0.8"'
            )
        return cls(compiled, match.group(1), float(match.group(2)))

    def applies(self, event: Event) -> bool:
        """Whether the event's service matches and its metric meets the rule.

        The pattern matches from the start of the service name, as in the
        original duct: ``cpu`` also matches ``cpu.user``; write ``cpu$`` for
        the one service alone.
        """
        metric = event.metric
        if metric is None or self.pattern.match(event.service) is None:
            return False
        return OPERATORS[self.op](metric, self.threshold)


def parseRules(rules: Mapping[str, Any] | None) -> list[Rule]:
    """Parse a ``{pattern: rule}`` mapping; raise TriggerError on the first bad one."""
    return [Rule.parse(pattern, rule) for pattern, rule in (rules or {}).items()]


class Triggers:
    """The warning and critical rules of one source."""

    def __init__(self, warning: Iterable[Rule] = (), critical: Iterable[Rule] = ()) -> None:
        self.warning = tuple(warning)
        self.critical = tuple(critical)

    @classmethod
    def fromConfig(cls, config: Mapping[str, Any]) -> Triggers:
        return cls(parseRules(config.get("warning")), parseRules(config.get("critical")))

    def __bool__(self) -> bool:
        return bool(self.warning or self.critical)

    def apply(self, events: Iterable[Event]) -> None:
        """Raise the state of events that are ``ok``; critical beats warning."""
        for event in events:
            if event.state != "ok":
                continue
            if any(rule.applies(event) for rule in self.critical):
                event.state = "critical"
            elif any(rule.applies(event) for rule in self.warning):
                event.state = "warning"
