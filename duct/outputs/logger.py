"""Log events through twisted.logger."""

from __future__ import annotations

from duct.objects import Event, Output
from duct.options import Option


class Logger(Output):
    """Log every event at info level, for watching what duct produces.

    Each log line carries the event's host, service, state, metric and
    description as structured fields, so a JSON log observer keeps them
    apart.  Meant for debugging: it logs one line per event.
    """

    options: tuple[Option, ...] = ()

    def writeBatch(self, events: list[Event]) -> None:
        info = self.log.info
        for event in events:
            info(
                "{host} {service} {state} {metric} {description}",
                host=event.hostname,
                service=event.service,
                state=event.state,
                metric=event.metric,
                description=event.description,
            )
