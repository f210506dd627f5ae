"""The README's example runs, and its plugin reference matches the declarations."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import yaml
from sshserver import keygen

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))

from twisted.internet.task import Clock  # noqa: E402
from update_reference import render  # noqa: E402

from duct.configuration import ConfigFile  # noqa: E402
from duct.errors import ConfigurationError  # noqa: E402
from duct.service import DuctService  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def test_plugin_reference_is_current() -> None:
    text = README.read_text()
    assert render(text) == text, "README's plugin reference is stale: run `make docs`"
    assert "`duct.sources.linux.basic.CPU`" in text


def test_readme_example_runs() -> None:
    section = README.read_text().split("## Writing a source and an output", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README lost its example"
    module = types.ModuleType("readme_example")
    exec(compile(blocks[0], "README.md", "exec"), module.__dict__)
    tests = [value for name, value in vars(module).items() if name.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        test()


def readmeConfigs() -> list[tuple[int, object]]:
    """Every YAML block of the README that is a duct config or a list of its sources.

    A block that is a list is a ``sources:`` entry, as the sections show
    them; one about another program (a Prometheus scrape config) is left
    out.
    """
    text = README.read_text()
    found = []
    for match in re.finditer(r"```ya?ml\n(.*?)```", text, re.S):
        line = text.count("\n", 0, match.start()) + 1
        document = yaml.safe_load(match.group(1))
        if isinstance(document, list):
            document = {"sources": document}
        if isinstance(document, dict) and "scrape_configs" not in document:
            found.append((line, document))
    return found


def test_every_config_in_the_readme_passes_check(tmp_path: Path) -> None:
    """Each config the README shows is valid and builds, read as parts of one: the queues
    one section declares serve the others, and key files are the reader's own."""
    configs = readmeConfigs()
    assert len(configs) > 20, "the README lost its examples"
    queues: dict[str, object] = {}
    for _, document in configs:
        queues.update(document.get("queues") or {})  # type: ignore[attr-defined]
    keyfile = tmp_path / "id_ed25519"
    keygen(keyfile)
    failures = []
    for line, document in configs:
        document = {  # type: ignore[dict-item]
            "queues": queues,
            "state_dir": str(tmp_path / f"state-{line}"),
            **ownKeys(document, str(keyfile)),
        }
        path = tmp_path / f"readme-{line}.yml"
        path.write_text(yaml.safe_dump(document))
        try:
            DuctService(ConfigFile(str(path)).load(), Clock())  # builds every source and output
        except ConfigurationError as e:
            failures.append(f"README.md line {line}: {e}")
    assert not failures, "\n".join(failures)


def ownKeys(value: Any, keyfile: str) -> Any:
    """``value`` with every ``ssh_keyfile`` pointing at ``keyfile``."""
    if isinstance(value, dict):
        return {k: keyfile if k == "ssh_keyfile" else ownKeys(v, keyfile) for k, v in value.items()}
    if isinstance(value, list):
        return [ownKeys(v, keyfile) for v in value]
    return value
