"""The problems a configuration can have, the error that carries them, and `TooLarge`.

They live apart from the YAML loader so that the web server and plugins
can report problems without importing it.  `TooLarge` is the pipeline's
refusal of events that no wait would ever let into an output's buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigurationError", "Problem", "TooLarge", "oneLine"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration."""

    file: str
    item: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        parts = [self.file] + [p for p in (self.item, self.key) if p]
        return oneLine(": ".join(parts) + f": {self.message}")


def oneLine(text: str) -> str:
    """``text`` with each character that would break or hide in a line escaped (``\\n``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigurationError(Exception):
    """The configuration cannot run; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


class TooLarge(Exception):
    """Events that can never fit in the buffer of an output they are routed to.

    Raised by the pipeline for a batch with more events than a blocking
    output's buffer holds (``maxsize``), or more bytes (``max_bytes``):
    waiting for room would wait for ever.  A listener answers ``ok: false``
    with this message.
    """

    def __init__(self, output: str, limit: str, allowed: int, asked: int) -> None:
        unit = "events" if limit == "maxsize" else "bytes"
        super().__init__(
            f"{asked} {unit} cannot fit output {output}: its buffer holds at most"
            f" {allowed} {unit} ({limit})"
        )
        self.output = output
        self.limit = limit
        self.allowed = allowed
        self.asked = asked
