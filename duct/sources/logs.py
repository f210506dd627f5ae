"""Following log files: each new line as a log event, or matches counted."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from duct.aggregators import Counter64
from duct.defaults import stateDir
from duct.lib.cache import PersistentCache
from duct.lib.logfollow import LogFollower
from duct.objects import Event, Source
from duct.options import REQUIRED, Option
from duct.stats import Stat, counter

FOLLOW_OPTIONS = (
    Option("file", "string", REQUIRED, "the log file to follow"),
    Option("max_lines", "integer", 2000, "most lines read per poll", minimum=1),
    Option("max_bytes", "integer", 1024 * 1024, "most bytes read per poll", minimum=1),
    Option("history", "boolean", False, "read a file never seen before from its start"),
)


def positionCache(duct: Any) -> PersistentCache:
    """The cache where every followed file's position is kept, under ``state_dir``."""
    return PersistentCache(os.path.join(stateDir(duct), "logfollow.json"), duct.clock)


class FollowingSource(Source):
    """The core of the log sources: each poll reads the new lines of ``file``.

    A subclass overrides `lines`, which turns them into events.  A file
    that cannot be read gives a critical ``{service}.state`` event.
    """

    sync = True
    options: tuple[Option, ...] = FOLLOW_OPTIONS
    stats: tuple[Stat, ...] = (counter("lines", "lines", "lines", "lines read"),)

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        c = self.config
        self.follower = LogFollower(
            c["file"], positionCache(duct), c["max_lines"], c["max_bytes"], c["history"]
        )
        self.lines = 0
        self.unreadable: str | None = None

    def get(self) -> list[Event]:
        try:
            lines = self.follower.read()
        except OSError as e:
            self.unreadable = f"cannot read {self.config['file']}: {e.strerror or e}"
            return [self.createEvent("critical", self.unreadable, 0, "state")]
        events = []
        if self.unreadable is not None:
            self.unreadable = None
            events.append(self.createEvent("ok", f"reading {self.config['file']}", 1, "state"))
        self.lines += len(lines)
        return events + self.linesRead(lines)

    def linesRead(self, lines: list[str]) -> list[Event]:
        """The events of the lines this poll read."""
        return []

    def logEvent(self, line: str, fields: dict[str, Any], logType: str | None = None) -> Event:
        """A ``log`` event of ``line`` with ``fields`` (and ``file``) as attributes."""
        event = self.createLog(logType or self.service, line)
        attributes = dict(event.attributes or {})
        attributes.update((str(k), _text(v)) for k, v in fields.items() if v is not None)
        attributes.setdefault("file", self.config["file"])
        event.attributes = attributes
        return event


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


class LogFile(FollowingSource):
    """Follows ``file``: each new line that matches is a ``log`` event, or a count.

    Rotation and truncation are followed, and the position is kept under
    ``state_dir`` across restarts.  ``match`` is a regex: a line that does
    not match is skipped, and its named groups become attributes.  With
    ``json``, each line is a JSON object whose keys become attributes, and
    a line that is not is counted in ``{service}.invalid``.  With ``emit:
    counter``, no log events: ``{service}.lines`` and ``{service}.matches``
    are per-second rates instead.
    """

    options = (
        Option("match", "string", None, "regex a line must match; named groups become attributes"),
        Option("json", "boolean", False, "each line is a JSON object; its keys become attributes"),
        Option("emit", "string", "log", "what a matching line makes", choices=("log", "counter")),
    )
    stats = (
        counter("matches", "matches", "matches", "lines that matched"),
        counter("invalid", "invalid", "invalid", "JSON lines that did not parse"),
    )

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        self.pattern = re.compile(self.config["match"]) if self.config["match"] else None
        self.matches = 0
        self.invalid = 0

    def linesRead(self, lines: list[str]) -> list[Event]:
        events = []
        for line in lines:
            fields = self.fields(line)
            if fields is None:
                continue
            self.matches += 1
            if self.config["emit"] == "log":
                events.append(self.logEvent(line, fields))
        if self.config["emit"] == "counter":
            events += [
                self.createEvent("ok", "lines read", self.lines, "lines", aggregation=Counter64),
                self.createEvent("ok", "lines matched", self.matches, "matches",
                                 aggregation=Counter64),
                self.createEvent("ok", "lines not JSON", self.invalid, "invalid",
                                 aggregation=Counter64),
            ]  # fmt: skip
        return events

    def fields(self, line: str) -> dict[str, Any] | None:
        """The attributes of a line that counts, or None for one skipped."""
        fields: dict[str, Any] = {}
        if self.config["json"]:
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                self.invalid += 1
                return None
            fields = parsed
        if self.pattern is not None:
            found = self.pattern.search(line)
            if found is None:
                return None
            fields.update(found.groupdict())
        return fields
