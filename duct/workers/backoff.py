"""How long the parent waits before restarting a worker that died."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    """Doubling delays for a worker that keeps dying; reset once it has run a while.

    A worker that dies within ``stable`` seconds of its start waits twice
    as long as last time (from ``initial`` up to ``maximum``); one that ran
    longer is restarted after ``initial`` again.
    """

    initial: float = 0.1
    maximum: float = 30.0
    factor: float = 2.0
    stable: float = 10.0
    failures: int = 0

    def died(self, ranFor: float) -> float:
        """The delay before the next start, for a worker that ran ``ranFor`` seconds."""
        if ranFor >= self.stable:
            self.failures = 0
        delay = min(self.maximum, self.initial * self.factor**self.failures)
        self.failures += 1
        return delay
