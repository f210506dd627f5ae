"""A configuration file can never stop or hang the agent: each hostile file is a problem.

Every case ends in a one-line problem that names the file (and the key
where there is one), found by a bound of `duct.yamlfile`, never by time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from test_reload import output, recording, settings, started, ticker
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from duct import yamlfile
from duct.configuration import ConfigFile
from duct.errors import ConfigurationError, Problem
from duct.hangup import HangupReloader
from duct.options import Option, OptionError
from duct.schema import GLOBAL_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
LOADERS = sorted({yamlfile.Loader, yamlfile.PureLoader}, key=lambda c: c.__name__)


def problems(path: Path) -> list[Problem]:
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile(str(path)).load()
    found = raised.value.problems
    assert all("\n" not in str(problem) for problem in found)
    return found


def only(path: Path) -> str:
    """The one problem loading ``path`` has, which must name it."""
    found = problems(path)
    assert len(found) == 1, found
    assert found[0].file == str(path)
    return str(found[0])


def aliasBomb(levels: int = 9) -> str:
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    previous = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


# -- 1. aliases ----------------------------------------------------------------------------


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
def test_an_alias_bomb_is_refused_by_the_value_count(loader: type) -> None:
    budget = yamlfile.Budget()
    with pytest.raises(yamlfile.YamlFileError) as raised:
        yamlfile.parse(aliasBomb().encode(), budget, loader)
    assert raised.value.limit == "nodes"
    assert f"more than {yamlfile.MAX_NODES} values once aliases are expanded" in str(raised.value)
    # Refused after a few hundred aliases of the 9**8 the tree would expand to.
    assert budget.aliases < 1000 and budget.nodes < 0


def test_an_alias_bomb_file_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    path.write_text(aliasBomb())
    assert "values once aliases are expanded (the limit)" in only(path)


def test_shared_anchors_within_the_bound_still_work(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    path.write_text("toolbox: {t: {defaults: &d {interval: 5}}, u: {defaults: *d}}\nstagger: 0\n")
    assert ConfigFile(str(path)).load()["stagger"] == 0
    assert yamlfile.parse(b"a: &x {k: [1, 2]}\nb: {<<: *x, c: 3}\n") == {
        "a": {"k": [1, 2]},
        "b": {"k": [1, 2], "c": 3},
    }


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(yamlfile.YamlFileError, match="refers to itself"):
        yamlfile.parse(b"a: &a [1, *a]\n")


def test_arbitrary_objects_are_not_constructed() -> None:
    with pytest.raises(yamlfile.YamlFileError, match="YAML"):
        yamlfile.parse(b"a: !!python/object/apply:os.system [echo]\n")


# -- 2. size and includes --------------------------------------------------------------------


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    with path.open("w") as f:
        f.write("stagger: 0\n# " + "x" * yamlfile.MAX_FILE_BYTES + "\n")
    assert f"larger than {yamlfile.MAX_FILE_BYTES} bytes (the limit)" in only(path)


def test_includes_count_towards_the_file_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yamlfile, "MAX_FILES", 3)
    conf = tmp_path / "conf.d"
    conf.mkdir()
    for n in range(5):
        (conf / f"{n}.yml").write_text("sources: []\n")
    path = tmp_path / "duct.yml"
    path.write_text("include: conf.d\n")
    found = problems(path)
    assert [str(p) for p in found] == [
        f"{conf / '2.yml'}: more than 3 configuration files (the limit)"
    ]


def test_includes_count_towards_the_total_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yamlfile, "MAX_TOTAL_BYTES", 100)
    (tmp_path / "a.yml").write_text("sources: []\n# " + "x" * 60 + "\n")
    (tmp_path / "b.yml").write_text("outputs: []\n# " + "x" * 60 + "\n")
    path = tmp_path / "duct.yml"
    path.write_text("include: [a.yml, b.yml]\n")
    assert [str(p) for p in problems(path)] == [
        f"{tmp_path / 'b.yml'}: the configuration files together exceed 100 bytes (the limit)"
    ]


# -- 3. text, depth, numbers -----------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    path.write_bytes(b"stagger: 0\nhostname: caf\xe9\n")
    assert only(path) == f"{path}: not UTF-8 text: byte 0xe9 on line 2"


def test_a_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    path.write_bytes(b"\xef\xbb\xbfstagger: 0\n")
    assert ConfigFile(str(path)).load()["stagger"] == 0


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
def test_nesting_past_the_depth_limit_is_refused(loader: type) -> None:
    depth = yamlfile.MAX_DEPTH + 1
    with pytest.raises(yamlfile.YamlFileError) as raised:
        yamlfile.parse(b"a: " + b"[" * depth + b"]" * depth, loader=loader)
    assert raised.value.limit == "depth"
    assert yamlfile.parse(b"[" * 99 + b"]" * 99, loader=loader) is not None


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
def test_nesting_ten_thousand_deep_is_a_problem_not_a_recursion_error(loader: type) -> None:
    for text in (b"[" * 10_000, b"{a: " * 10_000, b"- " * 10_000 + b"x"):
        with pytest.raises(yamlfile.YamlFileError):
            yamlfile.parse(text, loader=loader)


def test_deep_nesting_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    path.write_text("toolbox: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert only(path).startswith(f"{path}: ")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_problems_naming_the_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "duct.yml"
    path.write_text(
        f"stagger: {value}\ninterval: {value}\nttl: {value}\nshutdown_timeout: {value}\n"
        "sources:\n  - source: duct.sources.linux.basic.LoadAverage\n"
        f"    service: load\n    interval: {value}\n"
    )
    found = {(p.item, p.key) for p in problems(path) if "expected a finite number" in p.message}
    keys = {(None, k) for k in ("stagger", "interval", "ttl", "shutdown_timeout")}
    assert found == keys | {("sources[0] (service: load)", "interval")}


@pytest.mark.parametrize("kind", ["number", "duration"])
def test_every_number_option_refuses_non_finite_values(kind: str) -> None:
    option = Option("x", kind, 1.0)
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(OptionError, match="finite"):
            option.check(value)
    assert option.check(2.5) == 2.5


# -- 4. only regular files ---------------------------------------------------------------------


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    os.mkfifo(path)
    assert only(path) == f"{path}: cannot read: a FIFO, only a regular file is read"


def test_a_fifo_among_includes_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    os.mkfifo(conf / "pipe.yml")
    os.mkfifo(tmp_path / "named.yml")
    path = tmp_path / "duct.yml"
    path.write_text("include: [conf.d, named.yml]\n")
    assert sorted(str(p) for p in problems(path)) == [
        f"{conf / 'pipe.yml'}: cannot read: a FIFO, only a regular file is read",
        f"{tmp_path / 'named.yml'}: cannot read: a FIFO, only a regular file is read",
    ]


@pytest.mark.parametrize(
    "given, kind", [("/dev/zero", "a character device"), ("dir", "a directory")]
)
def test_a_device_or_a_directory_is_refused(tmp_path: Path, given: str, kind: str) -> None:
    path = Path(given)
    if given == "dir":
        path = tmp_path / given
        path.mkdir()
    assert only(path) == f"{path}: cannot read: {kind}, only a regular file is read"


# -- 6. duct check and the start agree on disk buffer directories ---------------------------


def test_a_disk_buffer_directory_that_cannot_be_made_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "duct.yml"
    path.write_text(
        "outputs:\n  - output: duct.outputs.null.Null\n    name: spool\n"
        f"    buffer: {{type: disk, path: {tmp_path / 'file' / 'spool'}}}\n"
    )
    message = only(path)
    assert message.startswith(f"{path}: outputs[0] (name: spool): buffer.path: cannot make")
    result = subprocess.run(
        [sys.executable, "-m", "duct.cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert message in result.stderr


# -- 5. reload off the reactor thread ---------------------------------------------------------


class HeldRunner:
    """A runner that holds each call until the test lets it run (a thread, in effect)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Deferred[Any]]] = []

    def __call__(self, call: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((call, d))
        return d

    def finish(self, index: int) -> None:
        call, d = self.calls[index]
        try:
            result = call()
        except Exception as e:
            d.errback(e)
        else:
            d.callback(result)


def writeConfig(path: Path, service: str) -> None:
    path.write_text(
        "hostname: test.example\nstagger: 0\n"
        f"sources:\n  - source: test_reload.Ticker\n    service: {service}\n    interval: 1\n"
        "outputs:\n  - output: duct.testing.RecordingOutput\n    name: out\n"
    )


def test_a_sighup_reads_the_file_through_the_runner_and_coalesces(
    clock: Clock, tmp_path: Path
) -> None:
    service = started(clock, settings([ticker("a")], [recording("out")]))
    path = tmp_path / "duct.yml"
    writeConfig(path, "b")
    runner = HeldRunner()
    reloader = HangupReloader(service, str(path), runner)

    first: list[bool] = []
    reloader.hangup().addCallback(first.append)
    assert len(runner.calls) == 1 and not first  # nothing read on this thread yet
    later: list[bool] = []
    for _ in range(3):  # three more signals while the first reload runs
        reloader.hangup().addCallback(later.append)
    assert len(runner.calls) == 1

    runner.finish(0)
    clock.advance(0)
    assert first == [True]
    assert [s.service for s in service.sources] == ["b"]
    assert len(runner.calls) == 2  # one more read, for all three signals
    writeConfig(path, "c")
    runner.finish(1)
    clock.advance(0)
    assert later == [True, True, True]
    assert [s.service for s in service.sources] == ["c"]
    assert len(runner.calls) == 2 and not reloader.busy
    assert output(service, "out") is not None


def test_a_hostile_file_on_sighup_changes_nothing(
    clock: Clock, tmp_path: Path, observe_errors: Any
) -> None:
    service = started(clock, settings([ticker("a")], [recording("out")]))
    path = tmp_path / "duct.yml"
    path.write_text(aliasBomb())
    runner = HeldRunner()
    applied: list[bool] = []
    HangupReloader(service, str(path), runner).hangup().addCallback(applied.append)
    runner.finish(0)
    assert applied == [False]
    assert [s.service for s in service.sources] == ["a"]
    errors = [formatEvent(e) for e in observe_errors.take()]
    assert any("values once aliases are expanded" in e and str(path) in e for e in errors)


# -- any text, any bytes: problems or a config, never an exception ---------------------------

KEYS = sorted(GLOBAL_OPTIONS) + ["source", "output", "service", "buffer", "type", "path"]
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def loadsOrRefuses(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "duct.yml")
        with open(path, "wb") as f:
            f.write(data)
        try:
            ConfigFile(path).load()
        except ConfigurationError as e:
            assert e.problems and all("\n" not in str(p) for p in e.problems)


@settings_(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_config_or_problems(data: bytes) -> None:
    loadsOrRefuses(data)


@settings_(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{},&*!?|>#'\" \n\t.0")), max_size=80))
def test_any_yaml_like_text_is_a_config_or_problems(text: str) -> None:
    loadsOrRefuses(text.encode())


@settings_(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_any_document_is_a_config_or_problems(document: dict[str, Any]) -> None:
    loadsOrRefuses(yaml.safe_dump(document).encode())


def test_problems_and_warnings_about_control_characters_stay_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "duct.yml"
    path.write_text('include: "a\\nb"\nsources: [{source: "x\\ny", service: "s\\tt"}]\n')
    found = problems(path)  # asserts each problem is one line
    assert any("x\\ny" in str(problem) for problem in found), found
    path.write_text('include: "a\\nb"\n')
    config = ConfigFile(str(path)).load()
    assert config.warnings and all("\n" not in warning for warning in config.warnings)
    assert any("a\\nb does not exist" in warning for warning in config.warnings)
