"""Configuration of ``web:`` and ``self_events``: what loads, and every problem named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_configuration import findProblem

from duct.configuration import ConfigFile, ConfigurationError, Problem

OUTPUT = "  - {output: duct.outputs.null.Null, name: out}\n"


def load(tmp_path: Path, text: str) -> tuple[Path, Any]:
    path = tmp_path / "duct.yml"
    path.write_text(text)
    return path, ConfigFile(str(path)).load()


def problems(tmp_path: Path, text: str) -> tuple[Path, list[Problem]]:
    path = tmp_path / "duct.yml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile(str(path)).load()
    return path, raised.value.problems


def test_no_web_key_means_no_web_server(tmp_path: Path) -> None:
    _, config = load(tmp_path, "interval: 5\n")
    assert config.get("web") is None
    assert config.get("self_events") is False and config.sources == []


def test_web_defaults_to_localhost_8901_without_a_token(tmp_path: Path) -> None:
    _, config = load(tmp_path, "web: {}\n")
    ring = {"ring_size": 10_000, "ring_max_bytes": 32 * 1024 * 1024}
    assert config["web"] == {"listen": "tcp:8901:interface=127.0.0.1", "token": None, **ring}
    _, config = load(tmp_path, 'web: {listen: "unix:/run/duct.sock", token: abc}\n')
    assert config["web"] == {"listen": "unix:/run/duct.sock", "token": "abc", **ring}


@pytest.mark.parametrize(
    ("text", "item", "key", "words"),
    [
        ("web: 8901\n", None, "web", ("expected a mapping",)),
        ("web: {colour: red}\n", "web", "colour", ("unknown key",)),
        ("web: {listen: 8901}\n", "web", "listen", ("expected a string",)),
        ("web: {listen: 'tcp:eighty'}\n", "web", "listen", ("not a server endpoint",)),
        ("web: {listen: 'carrier-pigeon:1'}\n", "web", "listen", ("not a server endpoint",)),
        ("web: {token: 12345}\n", "web", "token", ("expected a string",)),
        ("web: {token: ''}\n", "web", "token", ("must not be empty",)),
        ("self_events: yes please\n", None, "self_events", ("expected true or false",)),
        ("self_events: true\nself_interval: '10'\n", None, "self_interval", ("a number",)),
        ("self_events: true\nself_interval: 0\n", None, "self_interval", ("at least",)),
        ("self_route: [1]\n", None, "self_route", ("list of strings",)),
        (
            f"self_events: true\nself_route: [out, nowhere]\noutputs:\n{OUTPUT}",
            None,
            "self_route",
            ("no output is named 'nowhere' (out)",),
        ),
    ],
)
def test_bad_web_and_self_event_settings_name_file_and_key(
    tmp_path: Path, text: str, item: str | None, key: str, words: tuple[str, ...]
) -> None:
    path, found = problems(tmp_path, text)
    findProblem(found, path, item, key, *words)


def test_every_web_problem_is_reported_together(tmp_path: Path) -> None:
    path, found = problems(tmp_path, "web: {listen: 1, token: 2, port: 3}\nself_events: 1\n")
    assert {(p.item, p.key) for p in found} == {
        ("web", "listen"),
        ("web", "token"),
        ("web", "port"),
        (None, "self_events"),
    }


def test_self_events_add_a_self_stats_source(tmp_path: Path) -> None:
    text = f"self_events: true\nself_interval: 2.5\nself_route: out\noutputs:\n{OUTPUT}"
    _, config = load(tmp_path, text)
    (item,) = config.sources
    assert item.label == "self_events"
    assert item.config["source"] == "duct.sources.selfstats.SelfStats"
    assert item.config["service"] == "duct"
    assert item.config["interval"] == 2.5 and item.config["route"] == ["out"]

    _, config = load(tmp_path, f"self_events: true\noutputs:\n{OUTPUT}")
    (item,) = config.sources
    # Without self_route: every output, named or not.
    assert item.config["interval"] == 10.0 and item.config["route"] == ["*"]


def test_self_stats_can_be_listed_as_a_source_and_takes_no_extra_keys(tmp_path: Path) -> None:
    source = "duct.sources.selfstats.SelfStats"
    _, config = load(tmp_path, f"sources:\n  - {{service: agent, source: {source}}}\n")
    assert [i.config["service"] for i in config.sources] == ["agent"]
    path, found = problems(tmp_path, f"sources:\n  - {{service: a, source: {source}, x: 1}}\n")
    findProblem(found, path, "sources[0] (service: a)", "x", "unknown key")
