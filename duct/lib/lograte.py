"""Log lines that may repeat thousands of times a second, at a bounded rate."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel


class RateLimitedLog:
    """Emit at most one line per ``interval`` seconds for each key.

    Lines held back in between are counted, and the next line that is let
    through carries that count in its ``suppressed`` field, so that no event
    of note vanishes from the log without a trace.
    """

    def __init__(self, log: Logger, clock: Any, interval: float = 10.0) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def emit(self, key: str, format: str, level: LogLevel = LogLevel.warn, **fields: Any) -> bool:
        now = self.clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            format += " ({suppressed} similar lines suppressed)"
        self.log.emit(level, format, suppressed=suppressed, **fields)
        return True
