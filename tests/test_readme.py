"""The README's example runs, and its plugin reference matches the declarations."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))

from update_reference import render  # noqa: E402

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
