"""Declared plugin options.

Every source and output lists its options once, as a tuple of `Option` on
the class.  That declaration validates the configuration before anything
starts, fills in defaults, prints ``duct list`` and feeds the reference in
the README.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "required"})()


class OptionError(ValueError):
    """A single option has a value it cannot take."""


def _number(value: Any) -> float:
    """An int or a finite float: ``.inf`` and ``.nan`` would stop a timer or never compare."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionError(f"expected a finite number, got {value!r}")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"expected an integer, got {value!r}")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise OptionError(f"expected a string, got {value!r}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"expected true or false, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    """True or false, or a number as the original duct read ``debug`` (0 is false)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and math.isfinite(value):
        return bool(value)
    raise OptionError(f"expected true or false, got {value!r}")


def _mapping(value: Any) -> dict:
    if not isinstance(value, Mapping):
        raise OptionError(f"expected a mapping, got {value!r}")
    return dict(value)


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise OptionError(f"expected a list, got {value!r}")
    return value


def _strings(value: Any) -> list[str]:
    """A list of strings, or one comma-separated string (as duct's tags)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise OptionError(f"expected a string or a list of strings, got {value!r}")


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _duration(value: Any) -> float:
    """Seconds: a number, or a string such as ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``."""
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text else None
        number = text[:-1] if unit is not None else text
        try:
            seconds = float(number) * (unit or 1.0)
        except ValueError:
            raise OptionError(
                f"expected seconds or a duration such as 30m, 12h or 7d, got {value!r}"
            ) from None
        if not math.isfinite(seconds):
            raise OptionError(f"expected a finite duration, got {value!r}")
        return seconds
    return float(_number(value))


def _any(value: Any) -> Any:
    return value


KINDS: dict[str, Callable[[Any], Any]] = {
    "number": _number,
    "integer": _integer,
    "string": _string,
    "boolean": _boolean,
    "flag": _flag,
    "mapping": _mapping,
    "list": _list,
    "strings": _strings,
    "duration": _duration,
    "any": _any,
}


@dataclass(frozen=True)
class Option:
    """One configuration key of a plugin.

    :param name: the YAML key.
    :param kind: one of `KINDS`.
    :param default: the value when the key is absent, or `REQUIRED`.
    :param doc: one line of documentation.
    :param choices: the only values allowed, if any.
    :param minimum: the smallest number allowed, if any.
    :param above: a number the value must exceed, if any (an exclusive
        minimum: ``above=0`` for a rate that must be positive).
    :param alias_of: the option this one is another name for (the original
        duct's name for it, say).  A value given under the alias is checked
        as the alias declares, passed through ``convert`` if there is one,
        checked again as the target declares, and set under the target's
        name.  Giving both, with different values, is a problem.
    :param convert: ``convert(value, config)`` for an alias whose meaning
        needs translating: the target's value, or None to leave the target
        as it is.  ``config`` is the checked configuration (other aliases
        included, so that two aliases can make one value together).
    """

    name: str
    kind: str
    default: Any = None
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    above: float | None = None
    alias_of: str | None = None
    convert: Callable[[Any, Mapping[str, Any]], Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown option kind {self.kind!r} for {self.name!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any) -> Any:
        """Return ``value`` converted, or raise `OptionError`."""
        if value is None and not self.required and self.default is None:
            return None
        value = KINDS[self.kind](value)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(choice) for choice in self.choices)
            raise OptionError(f"expected one of {allowed}, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise OptionError(f"must be at least {self.minimum}, got {value!r}")
        if self.above is not None and value <= self.above:
            raise OptionError(f"must be more than {self.above}, got {value!r}")
        return value

    def describe(self) -> str:
        """One line for ``duct list`` and the README."""
        default = "required" if self.required else repr(self.default)
        choices = f" (one of: {', '.join(map(str, self.choices))})" if self.choices else ""
        return f"{self.name} ({self.kind}, default {default}){choices}: {self.doc}"


def applyAliases(
    options: Mapping[str, Option], given: Mapping[str, Any], result: dict[str, Any]
) -> list[tuple[str, str]]:
    """Set in ``result`` each option that an alias in it names; ``(key, message)`` problems.

    ``given`` is the configuration as written: a target given there with
    another value than its alias makes is a conflict, and keeps its value.
    """
    problems: list[tuple[str, str]] = []
    for name, option in options.items():
        if option.alias_of is None or result.get(name) is None:
            continue
        target = options.get(option.alias_of)
        if target is None:
            raise ValueError(f"{name!r} is an alias of {option.alias_of!r}, which is not declared")
        try:
            value = result[name]
            if option.convert is not None:
                value = option.convert(value, result)
            if value is None:
                continue
            value = target.check(value)
        except (OptionError, TypeError, ValueError) as e:
            problems.append((name, f"as {target.name}: {e}"))
            continue
        if given.get(target.name) is not None and result.get(target.name) != value:
            problems.append(
                (name, f"is another name for {target.name}, which is set too: give only one")
            )
            continue
        result[target.name] = value
    return problems


def declaredOptions(cls: type) -> dict[str, Option]:
    """Every option a class declares, base classes first, subclasses winning."""
    merged: dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        for option in klass.__dict__.get("options", ()) or ():
            merged[option.name] = option
    return merged


_declared: dict[type, dict[str, Option]] = {}


def withDefaults(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every option ``cls`` declares present, typed, defaults filled in.

    The loader has already validated a configuration; this fills what a
    plugin built from a raw mapping (a test, an older caller) left out, so
    that ``self.config[key]`` is always right and each default is written
    once, in the declaration.  A key that is absent or None takes its
    default; a value that does not check is kept as it is (the loader is
    where it is reported); unknown keys pass through.
    """
    options = _declared.get(cls)
    if options is None:
        options = _declared[cls] = declaredOptions(cls)
    filled = dict(config)
    for name, option in options.items():
        value = filled.get(name)
        if value is None:
            if not option.required:
                filled[name] = copy.deepcopy(option.default)
            continue
        try:
            filled[name] = option.check(value)
        except OptionError:
            pass
    applyAliases(options, config, filled)
    return filled


def optionProblems(cls: type, config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong between a plugin's options, each valid alone: ``(key, message)`` pairs.

    A plugin whose options constrain one another (a budget that must hold
    the largest frame) says so in a classmethod ``optionProblems(config)``;
    the loader reports what it returns with the other problems.
    """
    check = getattr(cls, "optionProblems", None)
    return list(check(config)) if callable(check) else []


def declaresOwnOptions(cls: type, bases: Iterable[type]) -> bool:
    """True when a plugin says which keys it takes, beyond its base class's.

    A plugin written before options were declared says nothing; its unknown
    keys are then allowed with a warning rather than refused.
    """
    base = set(bases)
    return any("options" in klass.__dict__ for klass in cls.__mro__ if klass not in base)


def validate(
    options: Mapping[str, Option], config: Mapping[str, Any], strict: bool = True
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Check ``config`` against ``options``.

    Returns the config with defaults filled in and values converted, and a
    list of ``(key, message)`` problems.  With ``strict`` false, unknown keys
    pass through unchecked.
    """
    result: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, value in config.items():
        option = options.get(key)
        if option is None:
            if strict:
                problems.append((key, "unknown key"))
            result[key] = value
            continue
        try:
            result[key] = option.check(value)
        except OptionError as e:
            problems.append((key, str(e)))
    for name, option in options.items():
        if name in result:
            continue
        if option.required:
            if name not in config:  # a present but invalid value is reported above
                problems.append((name, "missing required key"))
        else:
            result[name] = copy.deepcopy(option.default)
    if not problems:
        problems += applyAliases(options, config, result)
    return result, problems
