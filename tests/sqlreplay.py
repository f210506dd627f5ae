"""Recorded SQL answers for the database sources' unit tests (``tests/data/*.json``)."""

from __future__ import annotations

import json
from typing import Any

from replay import DATA
from twisted.internet.defer import Deferred, fail, succeed


class RecordedQueries:
    """Answers each query with the rows the real server gave; others fail."""

    def __init__(self, name: str) -> None:
        recorded = json.loads((DATA / name).read_text())
        self.server: str = recorded["server"]
        self.answers: dict[str, list[list[Any]]] = recorded["queries"]
        self.asked: list[str] = []
        self.hang = False

    def __call__(self, sql: str) -> Deferred[list[tuple[Any, ...]]]:
        self.asked.append(sql)
        if self.hang:
            return Deferred()
        if sql not in self.answers:
            return fail(RuntimeError(f"not recorded: {sql}"))
        return succeed([tuple(row) for row in self.answers[sql]])
