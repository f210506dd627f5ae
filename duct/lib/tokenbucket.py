"""TokenBucket: at most so many events a second, for an output's ``maxrate``."""

from __future__ import annotations

from typing import Any


class TokenBucket:
    """At most ``rate`` events a second, in bursts of at most ``burst``.

    `delay` says how long to wait before ``n`` events may go; nothing here
    waits: the caller schedules itself on the clock.
    """

    def __init__(self, clock: Any, rate: float, burst: int) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self._last = clock.seconds()

    def _refill(self) -> None:
        now = self.clock.seconds()
        self.tokens = min(float(self.burst), self.tokens + (now - self._last) * self.rate)
        self._last = now

    def delay(self, n: int) -> float:
        """Seconds until ``n`` (at most ``burst``) events may be sent; 0 means now."""
        self._refill()
        missing = min(n, self.burst) - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate

    def spend(self, n: int) -> None:
        self._refill()
        self.tokens -= n
