"""The problems a configuration can have, and the error that carries them.

They live apart from the YAML loader so that the web server and plugins
can report problems without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigurationError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration."""

    file: str
    item: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        parts = [self.file] + [p for p in (self.item, self.key) if p]
        return ": ".join(parts) + f": {self.message}"


class ConfigurationError(Exception):
    """The configuration cannot run; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems
