"""`LogFollower`: read what a log file gained since the last poll, a bounded amount at a time.

The position (the file's inode and the offset of the first unread byte) is
kept in a `duct.lib.cache.PersistentCache`, so a restart resumes where the
last run stopped.  A file replaced by another (rotated: a new inode) is
read from its start; so is one that shrank (truncated).  Only complete
lines are returned: a line still being written waits for its newline,
unless it alone is longer than the byte bound, when it is cut there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from duct.lib.cache import PersistentCache


@dataclass
class Position:
    inode: int
    offset: int


class LogFollower:
    """Follows ``path``; each `read` returns at most ``maxLines`` lines and ``maxBytes`` bytes.

    :param history: a file never seen before is read from its start; by
        default only what is written after the first poll is read.
    :param cache: where the position is kept, under ``key`` (default: the path).
    """

    def __init__(
        self,
        path: str,
        cache: PersistentCache | None = None,
        maxLines: int = 2000,
        maxBytes: int = 1024 * 1024,
        history: bool = False,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.cache = cache
        self.key = key or f"logfollow:{os.path.abspath(path)}"
        self.maxLines = maxLines
        self.maxBytes = maxBytes
        self.history = history
        self.position: Position | None = self._load()
        self.rotations = 0
        self.truncations = 0
        self.behind = False
        """Whether the last `read` stopped at a bound, leaving more to read."""

    def _load(self) -> Position | None:
        if self.cache is None or not self.cache.contains(self.key):
            return None
        _, value = self.cache.get(self.key)
        try:
            inode, offset = value
            return Position(int(inode), int(offset))
        except (TypeError, ValueError):
            return None

    def _save(self) -> None:
        if self.cache is not None and self.position is not None:
            self.cache.set(self.key, [self.position.inode, self.position.offset])

    def read(self) -> list[str]:
        """The complete lines added since the last read (decoded as UTF-8, newline removed).

        Raises OSError if the file cannot be opened (it does not exist yet,
        say); the position is kept for when it can.
        """
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            start = self._start(st.st_ino, st.st_size)
            if start >= st.st_size:
                self._moveTo(st.st_ino, start)
                self.behind = False
                return []
            f.seek(start)
            data = f.read(self.maxBytes)
        end = data.rfind(b"\n") + 1
        if end == 0:
            if len(data) < self.maxBytes:
                self._moveTo(st.st_ino, start)
                self.behind = False
                return []  # the only line is not finished yet
            end = len(data)  # a line longer than the bound: cut it
        chunk = data[:end]
        lines = chunk.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if len(lines) > self.maxLines:
            lines = lines[: self.maxLines]
            end = sum(len(line) + 1 for line in lines)
        self.position = Position(st.st_ino, start + end)
        self.behind = self.position.offset < st.st_size
        self._save()
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines]

    def _moveTo(self, inode: int, offset: int) -> None:
        if self.position != Position(inode, offset):
            self.position = Position(inode, offset)
            self._save()

    def _start(self, inode: int, size: int) -> int:
        position = self.position
        if position is None:
            offset = 0 if self.history else size
            self.position = Position(inode, offset)
            self._save()
            return offset
        if position.inode != inode:
            self.rotations += 1
            return 0
        if size < position.offset:
            self.truncations += 1
            return 0
        return position.offset
