"""Write events to a file or to stdout, one JSON object per line."""

from __future__ import annotations

import sys
from typing import IO, Any

from duct.lib.json import eventJson
from duct.objects import Event, Output
from duct.options import Option


class JSONLines(Output):
    """Append each event as one line of JSON to a file, or print it to stdout.

    Each line is the event's fields (host, service, state, metric, ttl,
    tags, attributes, description, time, type); NaN and infinite numbers
    are written as null.  The file is opened on the first write and kept
    open; `reopen` (on SIGHUP) closes it so that the next batch opens the
    path anew, which is all logrotate needs.  A file that cannot be opened
    or written fails the batch, and the events stay buffered and are
    retried.  An event that cannot be written as JSON (an attribute with
    a key that is not text) is dropped, counted as ``rejected``, and the
    others are written.

    Not durable: a batch counts as delivered once it has been handed to the
    operating system (written and flushed, not fsynced), so a power failure
    may lose the last batches.
    """

    options: tuple[Option, ...] = (
        Option("path", "string", "-", 'file to append to; "-" writes to stdout'),
    )

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
        lines = self.encodeEach(events, eventJson)
        lines.append("")
        data = "\n".join(lines)
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
