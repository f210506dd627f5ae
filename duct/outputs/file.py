"""Write events to a file or to stdout, one JSON object per line."""

from __future__ import annotations

import json
import math
import sys
from typing import IO, Any

from duct.objects import Event, Output
from duct.options import Option

# One encoder for every line: json.dumps with keyword arguments builds a new
# one per call.  allow_nan=False makes NaN and infinity raise instead of
# producing invalid JSON; `_safeLine` then writes them as null.  Values JSON
# cannot represent (a stray object in an attribute) become strings, so that a
# single odd event cannot block the output forever.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=str).encode


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _safeLine(event: Event) -> str:
    data = event.asDict()
    try:
        return _encode(data)
    except ValueError:
        return _encode(_finite(data))


def encodeLines(events: list[Event]) -> str:
    """The events as JSON lines, each ending in a newline."""
    try:
        lines = [_encode(event.asDict()) for event in events]
    except ValueError:
        # Rare: some event carries NaN or infinity.  Take the slow path.
        lines = [_safeLine(event) for event in events]
    lines.append("")
    return "\n".join(lines)


class JSONLines(Output):
    """Append each event as one line of JSON to a file, or print it to stdout.

    Each line is the event's fields (host, service, state, metric, ttl,
    tags, attributes, description, time, type); NaN and infinite numbers
    are written as null.  The file is opened on the first write and kept
    open; `reopen` (on SIGHUP) closes it so that the next batch opens the
    path anew, which is all logrotate needs.  A file that cannot be opened
    or written fails the batch, and the events stay buffered and are
    retried.

    Not durable: a batch counts as delivered once it has been handed to the
    operating system (written and flushed, not fsynced), so a power failure
    may lose the last batches.
    """

    options = (Option("path", "string", "-", 'file to append to; "-" writes to stdout'),)

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.path: str = self.config["path"]
        self._file: IO[str] | None = None

    @property
    def toStdout(self) -> bool:
        return self.path == "-"

    def _open(self) -> IO[str]:
        if self.toStdout:
            # The process's own stdout: twistd replaces sys.stdout with a
            # logger, which would wrap every line in a log prefix.
            stream = sys.__stdout__ or sys.stdout
            if stream is None:
                raise OSError("stdout is closed")
            return stream
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        return self._file

    def writeBatch(self, events: list[Event]) -> None:
        data = encodeLines(events)
        out = self._open()
        try:
            out.write(data)
            out.flush()
        except Exception:
            # Drop the handle and anything it buffered: the retry opens the
            # path again and writes the whole batch.
            self._close()
            raise

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.close()
        except OSError as e:
            self.log.warn(
                "{output}: closing {path} failed: {error}",
                output=self.name,
                path=self.path,
                error=e,
            )

    def reopen(self) -> None:
        """Close the file; the next batch opens the path again.  No-op for stdout."""
        self._close()

    def stop(self) -> Any:
        result = super().stop()
        self._close()
        return result
