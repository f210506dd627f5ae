"""The Nagios plugin protocol: exit status, status line and performance data.

A plugin prints one status line, optionally followed by ``|`` and
performance data; later lines are its long output, and a ``|`` among
them starts more performance data, which may span the remaining lines.
Each datum is ``'label'=value[UOM];[warn];[crit];[min];[max]``; a label
with spaces or ``=`` is quoted with ``'`` (a ``''`` inside stands for one
quote).  The exit status gives the state: 0 ok, 1 warning, 2 critical,
3 unknown.
"""

from __future__ import annotations

import re
from typing import NamedTuple

STATES = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}
"""The state of each exit status the protocol defines."""

_VALUE = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)([^;\d][^;]*)?$")


class PerfDatum(NamedTuple):
    """One performance datum: its label, value and unit, and the optional thresholds."""

    label: str
    value: float | None
    """None for ``U``: the plugin could not measure it."""
    unit: str
    warn: str | None
    crit: str | None
    min: float | None
    max: float | None


class PluginOutput(NamedTuple):
    """What a plugin said: its status line, the rest of its text, its performance data."""

    summary: str
    longOutput: str
    perfdata: list[PerfDatum]


def stateOf(code: int) -> tuple[str, str | None]:
    """The state of exit status ``code``, and why, for a status outside the protocol.

    A plugin killed by a signal (a negative status) is critical; any other
    status the protocol does not define is unknown.
    """
    if code in STATES:
        return STATES[code], None
    if code < 0:
        return "critical", f"killed by signal {-code}"
    return "unknown", f"exit status {code} is not a Nagios plugin status (0-3)"


def _number(text: str) -> float | None:
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return None


def _tokens(text: str) -> list[str]:
    """Split performance data on whitespace, keeping quoted labels whole."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        if text[i] == "'":
            i += 1
            while i < n:
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
        while i < n and not text[i].isspace():
            i += 1
        tokens.append(text[start:i])
    return tokens


def parseDatum(token: str) -> PerfDatum | None:
    """One ``label=value[UOM];warn;crit;min;max``, or None if it is not one."""
    if token.startswith("'"):
        end = token.find("'=", 1)
        while end != -1 and token[1:end].count("'") % 2:  # an escaped quote before '=
            end = token.find("'=", end + 1)
        if end == -1:
            return None
        label, rest = token[1:end].replace("''", "'"), token[end + 2 :]
    else:
        label, sep, rest = token.partition("=")
        if not sep:
            return None
    if not label:
        return None
    fields = rest.split(";")
    raw = fields[0].strip()
    if raw == "U":
        value: float | None = None
        unit = ""
    else:
        match = _VALUE.match(raw)
        if match is None:
            return None
        value, unit = float(match[1]), (match[2] or "").strip()
    fields += [""] * (5 - len(fields))
    return PerfDatum(
        label,
        value,
        unit,
        fields[1].strip() or None,
        fields[2].strip() or None,
        _number(fields[3]),
        _number(fields[4]),
    )


def parsePerfData(text: str) -> list[PerfDatum]:
    """Every datum in ``text``; what is not one is skipped."""
    return [datum for token in _tokens(text) if (datum := parseDatum(token)) is not None]


def parseOutput(stdout: str) -> PluginOutput:
    """Split a plugin's output into its status line, long output and performance data."""
    lines = stdout.splitlines()
    if not lines:
        return PluginOutput("", "", [])
    summary, _, perf = lines[0].partition("|")
    longLines: list[str] = []
    morePerf: list[str] = []
    for index, line in enumerate(lines[1:], 1):
        text, sep, rest = line.partition("|")
        if sep:
            longLines.append(text)
            morePerf = [rest, *lines[index + 1 :]]
            break
        longLines.append(line)
    perfdata = parsePerfData(perf) + parsePerfData("\n".join(morePerf))
    return PluginOutput(summary.strip(), "\n".join(longLines).strip(), perfdata)


def alerts(spec: str | None, value: float) -> bool:
    """Whether ``value`` is outside the Nagios range ``spec`` (inside, for ``@``).

    ``10`` is 0 to 10, ``10:`` is 10 and up, ``~:10`` is up to 10,
    ``10:20`` is 10 to 20.  A range that does not parse never alerts.
    """
    if not spec:
        return False
    inside = spec.startswith("@")
    text = spec[1:] if inside else spec
    low, sep, high = text.partition(":")
    if not sep:
        low, high = "0", text
    try:
        start = float("-inf") if low.strip() == "~" else float(low or 0)
        end = float(high) if high.strip() else float("inf")
    except ValueError:
        return False
    within = start <= value <= end
    return within if inside else not within


def datumState(datum: PerfDatum) -> str | None:
    """``critical`` or ``warning`` when the value is outside its thresholds, else ``ok``.

    None for a value the plugin could not measure (``U``).
    """
    if datum.value is None:
        return None
    if alerts(datum.crit, datum.value):
        return "critical"
    if alerts(datum.warn, datum.value):
        return "warning"
    return "ok"
