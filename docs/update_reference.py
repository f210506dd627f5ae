"""Regenerate the plugin reference in README.md from the declared options.

Run with ``make docs``; tests/test_readme.py fails when the README is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from duct.plugins import referenceMarkdown

START = "<!-- plugin-reference:start -->"
END = "<!-- plugin-reference:end -->"


def render(readme: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{referenceMarkdown()}{END}", readme)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text()))
