"""`PersistentCache`: a small dictionary kept in a JSON file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any, Protocol

from twisted.logger import Logger

__all__ = ["PersistentCache"]


class Clock(Protocol):
    """What the cache needs of an IReactorTime (the reactor, or a task.Clock in tests)."""

    def seconds(self) -> float: ...


class PersistentCache:
    """A small dictionary kept in a JSON file, for state that must survive restarts.

    Each entry is stored with the time it was set.  Keys must be strings and
    values must be JSON-serialisable (a tuple comes back as a list).  The
    file is re-read whenever another writer has replaced it, so several
    instances may share one path.  An unreadable file is treated as empty;
    a file that cannot be written leaves the cache working in memory.
    """

    log = Logger()
    VERSION = 1

    def __init__(self, location: str = "/var/lib/duct/cache", clock: Clock | None = None) -> None:
        self.location = location
        self.clock = clock
        self._store: dict[str, tuple[float, Any]] = {}
        self._seen: object = None  # what the file looked like when last read
        self._writeFailing = False
        self._refresh()

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    # -- the file ------------------------------------------------------------

    def _refresh(self) -> None:
        """Reload the file if it changed since we last read or wrote it."""
        try:
            st = os.stat(self.location)
        except (FileNotFoundError, NotADirectoryError):
            self._seen = None
            return
        except OSError as e:
            self._ignoreFile(("unreadable", e.errno), f"cannot stat it: {e}")
            return
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature == self._seen:
            return
        try:
            with open(self.location, "rb") as f:
                store = self._decode(f.read())
        except OSError as e:
            self._ignoreFile(signature, f"cannot read it: {e}")
            return
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            self._ignoreFile(signature, f"it is not a valid cache ({e!r})")
            return
        self._store = store
        self._seen = signature

    def _ignoreFile(self, signature: object, why: str) -> None:
        """Start empty, and warn once per version of the bad file."""
        if signature == self._seen:
            return
        self._seen = signature
        self._store = {}
        self.log.warn(
            "ignoring cache file {path}, {why}; starting with an empty cache",
            path=self.location,
            why=why,
        )

    @staticmethod
    def _decode(raw: bytes) -> dict[str, tuple[float, Any]]:
        """Parse the file; any exception means it is not a cache we wrote."""
        entries = json.loads(raw)["entries"]
        return {str(k): (float(t), v) for k, (t, v) in entries.items()}

    def _write(self, store: dict[str, tuple[float, Any]]) -> None:
        """Replace the file with ``store`` atomically; keep ``store`` in memory regardless."""
        text = json.dumps(
            {"version": self.VERSION, "entries": {k: [t, v] for k, (t, v) in store.items()}}
        )  # a value that is not JSON raises TypeError here, before anything changes
        self._store = store
        directory = os.path.dirname(os.path.abspath(self.location))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{os.path.basename(self.location)}.", suffix=".tmp", dir=directory
            )
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.location)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            st = os.stat(self.location)
        except OSError as e:
            if not self._writeFailing:
                self.log.warn(
                    "cannot write cache file {path} ({error}); keeping the cache in memory",
                    path=self.location,
                    error=e,
                )
            self._writeFailing = True
            return
        self._writeFailing = False
        self._seen = (st.st_ino, st.st_mtime_ns, st.st_size)

    # -- the dictionary ------------------------------------------------------

    def get(self, k: str) -> tuple[float, Any]:
        """Return ``(timestamp, value)`` for ``k``; raise KeyError if absent."""
        self._refresh()
        return self._store[k]

    def set(self, k: str, v: Any) -> None:
        """Store ``v`` under ``k``, stamped with the current time."""
        if not isinstance(k, str):
            raise TypeError(f"cache keys must be strings, not {type(k).__name__}")
        self._refresh()
        store = dict(self._store)
        store[k] = (self._now(), v)
        self._write(store)

    def contains(self, k: str) -> bool:
        """Whether ``k`` is in the cache."""
        self._refresh()
        return k in self._store

    def delete(self, k: str) -> None:
        """Remove ``k``; raise KeyError if absent."""
        self._refresh()
        store = dict(self._store)
        del store[k]
        self._write(store)

    def expire(self, age: float) -> None:
        """Remove every entry set more than ``age`` seconds ago."""
        self._refresh()
        cutoff = self._now() - age
        store = {k: entry for k, entry in self._store.items() if entry[0] >= cutoff}
        if len(store) != len(self._store):
            self._write(store)
