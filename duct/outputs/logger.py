"""Log events through twisted.logger.

The output is named ``Logger`` (configurations name it
``duct.outputs.logger.Logger``); it is not `twisted.logger.Logger`, which
this module refers to only by its full name.
"""

from __future__ import annotations

import twisted.logger

from duct.objects import Event, Output
from duct.options import Option


class Logger(Output):
    """Log every event at info level, for watching what duct produces.

    Each log line carries the event's host, service, state, metric and
    description as structured fields, so a JSON log observer keeps them
    apart.  Meant for debugging: it logs one line per event.
    """

    options: tuple[Option, ...] = ()
    log: twisted.logger.Logger  # inherited from Output: what the events are logged through

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
