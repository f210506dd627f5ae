"""Log events through twisted.logger, or append them to a file.

The output is named ``Logger`` (configurations name it
``duct.outputs.logger.Logger``); it is not `twisted.logger.Logger`, which
this module refers to only by its full name.
"""

from __future__ import annotations

import twisted.logger

from duct.objects import Event
from duct.options import Option
from duct.outputs.file import JSONLines


class Logger(JSONLines):
    """Log every event at info level, for watching what duct produces.

    Each log line carries the event's host, service, state, metric and
    description as structured fields, so a JSON log observer keeps them
    apart.  Meant for debugging: it logs one line per event.

    With ``logfile`` (the original duct's key; ``path`` is the same), each
    event is appended to that file instead, one JSON object per line, as
    `duct.outputs.file.JSONLines` writes them (the original wrote Python's
    ``repr`` of each event).
    """

    options: tuple[Option, ...] = (
        Option("path", "string", None, "file to append each event to, as a JSON line"),
        Option(
            "logfile",
            "string",
            None,
            "the original's name for path: file to append each event to (default: the log)",
            alias_of="path",
        ),
    )
    log: twisted.logger.Logger  # inherited from Output: what the events are logged through

    def writeBatch(self, events: list[Event]) -> None:
        if self.path is not None:
            return super().writeBatch(events)
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
        return None
