"""The duct command: list and once (check is covered in test_cli_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from duct.plugins import BUILTIN_OUTPUTS, BUILTIN_SOURCES

ROOT = Path(__file__).resolve().parent.parent


def duct(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duct.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_list_shows_every_builtin_plugin_and_its_options() -> None:
    result = duct("list")
    assert result.returncode == 0, result.stderr
    for path in BUILTIN_SOURCES + BUILTIN_OUTPUTS:
        assert f"\n{path}\n" in f"\n{result.stdout}"
    assert "- devices (strings, default None)" in result.stdout
    assert "- path (string, default '-')" in result.stdout


def test_once_polls_each_source_and_prints_json_lines(tmp_path: Path) -> None:
    config = tmp_path / "duct.yml"
    config.write_text(
        "hostname: once.example\n"
        "outputs: [{output: duct.outputs.null.Null}]\n"
        "sources:\n"
        "  - {service: load, source: duct.sources.linux.basic.LoadAverage}\n"
        "  - {service: mem, source: duct.sources.linux.basic.Memory, tags: [a, b]}\n"
    )
    result = duct("once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    services = {e["service"] for e in events}
    assert {"load", "load.5min", "load.15min", "mem", "mem.used"} <= services
    assert all(e["host"] == "once.example" for e in events)
    assert next(e for e in events if e["service"] == "mem")["tags"] == ["a", "b"]


NAN_SOURCE = """
from duct.objects import Source


class NotANumber(Source):
    def get(self):
        return [
            self.createEvent("ok", "no number", float("nan"), prefix="nan"),
            self.createEvent("ok", "too big", float("inf"), prefix="inf"),
            self.createEvent("ok", "fine", 2.5, prefix="fine"),
        ]
"""


def test_once_prints_valid_json_when_a_metric_is_not_a_number(tmp_path: Path) -> None:
    (tmp_path / "nansource.py").write_text(NAN_SOURCE)
    config = tmp_path / "duct.yml"
    config.write_text(
        "outputs: [{output: duct.outputs.null.Null}]\n"
        "sources: [{service: odd, source: nansource.NotANumber}]\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = duct("once", "-c", str(config), env=env)
    assert result.returncode == 0, result.stderr

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    events = [json.loads(line, parse_constant=refuse) for line in result.stdout.splitlines()]
    metrics = {e["service"]: e["metric"] for e in events}
    assert metrics == {"odd.nan": None, "odd.inf": None, "odd.fine": 2.5}


def test_once_refuses_an_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "duct.yml"
    config.write_text("sources: [{service: x, source: duct.sources.linux.basic.Nope}]\n")
    result = duct("once", "-c", str(config))
    assert result.returncode == 1
    assert "source: cannot import duct.sources.linux.basic.Nope" in result.stderr
    assert result.stdout == ""


# -- reload ---------------------------------------------------------------------------


def test_agent_options_are_found_in_both_ways_of_running_it() -> None:
    from duct.cli import DEFAULT_CONFIG, agentOptions, configOf

    twistd = ["/venv/bin/python", "/venv/bin/twistd", "-n", "--pidfile=", "duct", "-c", "a.yml"]
    assert configOf(agentOptions(twistd)) == "a.yml"
    assert configOf(agentOptions(["/usr/bin/duct", "run", "--config=/etc/b.yml"])) == "/etc/b.yml"
    assert configOf(agentOptions(["twistd", "--nodaemon", "duct"])) == DEFAULT_CONFIG
    assert agentOptions(["/usr/bin/duct", "check", "-c", "a.yml"]) is None
    assert agentOptions(["twistd", "web", "--path", "."]) is None


def test_reload_refuses_an_invalid_config_without_signalling(tmp_path: Path) -> None:
    config = tmp_path / "duct.yml"
    config.write_text("outputs:\n  - output: duct.outputs.null.Null\n    colour: blue\n")
    # Any pid would be signalled if the check were skipped: use one that cannot exist.
    result = duct("reload", "-c", str(config), "--pid", "999999999")
    assert result.returncode == 1
    assert "colour" in result.stderr and str(config) in result.stderr
    assert "keeps its configuration" in result.stderr
    assert "cannot signal" not in result.stderr


def test_reload_without_a_running_agent_says_so(tmp_path: Path) -> None:
    config = tmp_path / "duct.yml"
    config.write_text("outputs:\n  - output: duct.outputs.null.Null\n")
    result = duct("reload", "-c", str(config))
    assert result.returncode == 1
    assert "0 running agents use this file (none); name one with --pid" in result.stderr


def test_tail_refuses_a_count_that_is_not_a_non_negative_integer() -> None:
    for option, value in (("--since", "x"), ("--recent", "-1")):
        result = duct("tail", option, value)
        assert result.returncode == 2
        message = f"argument {option}: N must be a non-negative integer, not '{value}'"
        assert message in result.stderr
