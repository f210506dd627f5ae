"""An output that discards everything."""

from __future__ import annotations

from duct.objects import Event, Output
from duct.options import Option


class Null(Output):
    """Accept every event and throw it away.

    Events are acknowledged and counted as sent, so it measures what the
    rest of the pipeline costs: useful for benchmarks.
    """

    options: tuple[Option, ...] = ()

    def writeBatch(self, events: list[Event]) -> None:
        return None
