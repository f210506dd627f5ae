"""Plugins enabled by name: finding them, checking their options, and what duct check says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from duct.configuration import ConfigFile, ConfigurationError
from duct.plugin import EventPlugin

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60

AUDIT = '''\
from duct.options import Option
from duct.plugin import EventPlugin


class Audit(EventPlugin):
    """Writes what it sees to a file."""

    eventTypes = ("metric", "log")
    options = (Option("path", "string", "audit.log", "where to write"),)

    def eventsReceived(self, events):
        pass


plugin = Audit
'''


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A configuration directory with plugins/audit.py; imports are forgotten afterwards."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "audit.py").write_text(AUDIT)
    modules, path = set(sys.modules), list(sys.path)
    yield tmp_path
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile(str(path)).load()
    return [str(problem) for problem in raised.value.problems]


def test_plugins_load_by_module_from_a_relative_plugin_path(tree: Path) -> None:
    config = ConfigFile(
        str(write(tree / "duct.yml", "plugin_path: plugins\nplugins: [audit]\n"))
    ).load()
    [item] = config.plugins
    assert item.cls is not None and issubclass(item.cls, EventPlugin)
    assert item.cls.__module__ == "audit"
    assert item.config == {"plugin": "audit", "path": "audit.log", "max_pending": 16}
    assert item.label == "plugins[0] (audit)" and item.file == str(tree / "duct.yml")


def test_a_mapping_gives_the_plugin_its_options(tree: Path) -> None:
    path = write(
        tree / "duct.yml",
        """\
        plugin_path: [plugins]
        plugins:
          - plugin: audit
            path: /tmp/somewhere.log
            max_pending: 4
        """,
    )
    [item] = ConfigFile(str(path)).load().plugins
    assert item.config == {"plugin": "audit", "path": "/tmp/somewhere.log", "max_pending": 4}


def test_plugins_are_also_found_on_the_python_path(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tree / "site" / "mycompany"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "duct_slack.py").write_text(AUDIT)
    monkeypatch.syspath_prepend(str(tree / "site"))
    path = write(tree / "duct.yml", "plugins: [mycompany.duct_slack]\n")
    [item] = ConfigFile(str(path)).load().plugins
    assert item.cls is not None and item.cls.__module__ == "mycompany.duct_slack"


def test_every_bad_plugin_is_a_problem_naming_file_entry_and_key(tree: Path) -> None:
    plugins = tree / "plugins"
    (plugins / "empty.py").write_text("x = 1\n")
    (plugins / "wrong.py").write_text("plugin = dict\n")
    (plugins / "broken.py").write_text("raise RuntimeError('half written')\n")
    (plugins / "needs.py").write_text("import no_such_dependency_here\n")
    path = write(
        tree / "duct.yml",
        """\
        plugin_path: [plugins, missing]
        plugins:
          - audit
          - nowhere
          - empty
          - wrong
          - broken
          - needs
          - {plugin: audit, colour: red}
          - plugin: audit
          - {path: x}
          - "not a module"
        """,
    )
    found = problems(path)
    f = str(path)
    expected = [
        f"{f}: plugin_path: {tree / 'missing'}: no such directory",
        f"{f}: plugins[1] (nowhere): cannot import nowhere: no such module on "
        f"{tree / 'plugins'}, {tree / 'missing'} or the Python path",
        f"{f}: plugins[2] (empty): module empty has no plugin class: "
        "set plugin = YourPlugin in empty",
        f"{f}: plugins[3] (wrong): wrong.plugin is <class 'dict'>, not a subclass of "
        "duct.plugin.EventPlugin or duct.plugin.BackgroundPlugin",
        f"{f}: plugins[4] (broken): cannot import broken: RuntimeError: half written",
        f"{f}: plugins[5] (needs): cannot import needs: ModuleNotFoundError: "
        "No module named 'no_such_dependency_here'",
        f"{f}: plugins[6] (audit): audit is listed twice",
        f"{f}: plugins[7] (audit): audit is listed twice",
        f"{f}: plugins[8]: expected a module name or a mapping with plugin: <module>, "
        "got {'path': 'x'}",
        f"{f}: plugins[9] (not a module): 'not a module' is not a module name such as "
        "audit or mycompany.duct_slack",
    ]
    assert found == expected


def test_bad_and_unknown_options_name_their_key(tree: Path) -> None:
    path = write(
        tree / "duct.yml",
        "plugin_path: plugins\nplugins:\n  - {plugin: audit, path: 5, colour: red}\n",
    )
    assert problems(path) == [
        f"{path}: plugins[0] (audit): path: expected a string, got 5",
        f"{path}: plugins[0] (audit): colour: unknown key",
    ]


def test_plugins_must_be_a_list(tree: Path) -> None:
    path = write(tree / "duct.yml", "plugins: audit\n")
    assert problems(path) == [f"{path}: plugins: expected a list, got 'audit'"]


def test_plugins_of_an_included_file_name_that_file(tree: Path) -> None:
    write(tree / "more.yml", "plugins: [nowhere]\n")
    path = write(tree / "duct.yml", "include: more.yml\n")
    [problem] = problems(path)
    assert problem.startswith(f"{tree / 'more.yml'}: plugins[0] (nowhere): cannot import")


# -- the commands, run as the user would ---------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_duct_check_and_list_show_plugins_with_their_options(tree: Path) -> None:
    path = write(
        tree / "duct.yml",
        "plugin_path: plugins\nplugins:\n  - {plugin: audit, path: /var/log/a.log}\n",
    )
    checked = run(sys.executable, "-m", "duct.cli", "check", "-c", str(path))
    assert checked.returncode == 0, checked.stderr
    line = [x for x in checked.stdout.splitlines() if x.startswith("  audit:")]
    assert line == [
        f"  audit: event plugin (metric, log) from {tree / 'plugins' / 'audit.py'}; "
        "path='/var/log/a.log', max_pending=16"
    ]
    listed = run(sys.executable, "-m", "duct.cli", "list", "-c", str(path))
    assert listed.returncode == 0, listed.stderr
    section = listed.stdout.split(f"Plugins ({path}):")[1]
    assert "audit (event plugin (metric, log))" in section
    assert "Writes what it sees to a file." in section
    assert "- path (string, default 'audit.log'): where to write [now '/var/log/a.log']" in section
    assert "- max_pending (integer, default 16)" in section


def test_duct_check_and_twistd_refuse_a_bad_plugin(tree: Path) -> None:
    path = write(tree / "duct.yml", "plugin_path: plugins\nplugins: [audit, nowhere]\n")
    checked = run(sys.executable, "-m", "duct.cli", "check", "-c", str(path))
    assert checked.returncode == 1
    assert f"{path}: plugins[1] (nowhere): cannot import nowhere" in checked.stderr
    assert "Traceback" not in checked.stderr
    twistd = Path(sys.executable).parent / "twistd"
    started = run(str(twistd), "--nodaemon", "--pidfile=", "duct", "-c", str(path))
    assert started.returncode == 1
    output = started.stdout + started.stderr
    assert "duct: invalid configuration" in output
    assert f"{path}: plugins[1] (nowhere): cannot import nowhere" in output


def test_the_examples_in_docs_plugins_md_run(tree: Path) -> None:
    from twisted.internet.task import Clock

    from duct.service import DuctService
    from duct.web.site import pluginRoutes

    text = (ROOT / "docs" / "plugins.md").read_text()
    section = text.split("## Plugins enabled by name", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n# (plugins/\w+\.py)\n(.*?)```", section, re.S)
    assert [name for name, _ in blocks] == ["plugins/audit.py", "plugins/teapot.py"]
    for name, code in blocks:
        (tree / name).write_text(code)
    audit = tree / "audit.jsonl"
    path = write(
        tree / "duct.yml",
        f"""\
        plugin_path: plugins
        plugins: [{{plugin: audit, path: "{audit}"}}, teapot]
        sources:
          - {{service: mixed, source: test_plugin_host.Mixed, interval: 1}}
        outputs:
          - {{output: duct.outputs.null.Null}}
        """,
    )
    clock = Clock()
    service = DuctService(ConfigFile(str(path)).load(), reactor=clock)
    service.startService()
    clock.pump([0, 1, 1])
    assert set(pluginRoutes(service)[0]) == {"teapot"}
    assert service.pluginHost.runners["teapot"].plugin.temperature == 23
    service.stopService()
    clock.advance(0)
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["service"], e["type"]) for e in lines] == [("mixed", "metric"), ("app", "log")] * 3
