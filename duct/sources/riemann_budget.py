"""The bytes a Riemann TCP listener may hold in large frames, across its connections.

A connection that reads the length of a frame above `SMALL_FRAME` reserves
that many bytes here before reading on, and keeps them until the frame's
events are handed on (or the connection is lost while the frame is still
partly read).  When the budget lacks room, the connection waits, paused,
in a queue served in order: a reservation is only ever waited for by
connections that are not reading, and released by frames that are being
read or handed on, so the wait ends.  Frames up to `SMALL_FRAME` need no
reservation: ``max_connections`` of them bound what they hold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["SMALL_FRAME", "Budget", "Reservation"]

SMALL_FRAME = 64 * 1024
"""Frames up to this many bytes take nothing from the budget."""


class Reservation:
    """A request for bytes from a `Budget` that waits for room."""

    __slots__ = ("nbytes", "granted", "_budget", "_onGrant")

    def __init__(self, budget: Budget, nbytes: int, onGrant: Callable[[], None]) -> None:
        self.nbytes = nbytes
        self.granted = False
        self._budget = budget
        self._onGrant = onGrant

    def cancel(self) -> None:
        """Give up waiting; once granted, use `Budget.release` instead."""
        if not self.granted:
            try:
                self._budget._waiting.remove(self)
            except ValueError:
                pass

    def _grant(self) -> None:
        self.granted = True
        self._onGrant()


class Budget:
    """At most ``limit`` bytes reserved at a time; requests beyond wait, in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        """Bytes reserved now (for ``/stats``)."""
        self._waiting: deque[Reservation] = deque()

    @property
    def waiting(self) -> int:
        """Reservations waiting for room."""
        return len(self._waiting)

    def reserve(self, nbytes: int, onGrant: Callable[[], None]) -> Reservation:
        """Reserve ``nbytes``: granted at once if there is room and nobody waits
        before it, else ``onGrant`` is called once it is."""
        reservation = Reservation(self, nbytes, onGrant)
        if not self._waiting and self.used + nbytes <= self.limit:
            self.used += nbytes
            reservation.granted = True
        else:
            self._waiting.append(reservation)
        return reservation

    def take(self, nbytes: int) -> None:
        """Count ``nbytes`` that are already held (a large frame read whole at once)."""
        self.used += nbytes

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes``, and grant what now fits, in order."""
        self.used -= nbytes
        waiting = self._waiting
        while waiting and self.used + waiting[0].nbytes <= self.limit:
            reservation = waiting.popleft()
            self.used += reservation.nbytes
            reservation._grant()
