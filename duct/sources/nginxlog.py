"""nginx's access log: request, status and byte rates, or each request as a log event."""

from __future__ import annotations

from typing import Any

from duct.lib.accesslog import AccessLogParser
from duct.objects import Event
from duct.options import Option
from duct.sources.logs import FollowingSource
from duct.stats import counter

FORMAT = Option(
    "log_format", "string", "combined",
    "the log's format, as nginx's log_format (or Apache's LogFormat) writes it, or combined",
)  # fmt: skip


class _AccessLog(FollowingSource):
    options = (FORMAT,)
    stats = (counter("unparsed", "unparsed", "unparsed", "lines not in log_format"),)

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        self.parser = AccessLogParser(self.config["log_format"])
        self.unparsed = 0

    def parsed(self, lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
        rows = []
        for line in lines:
            fields = self.parser.parse(line)
            if fields is None:
                self.unparsed += 1
            else:
                rows.append((line, fields))
        return rows


class NginxLogMetrics(_AccessLog):
    """Follows nginx's access log ``file``: requests and bytes per second, in all and by status.

    ``{service}.total_requests`` and ``.total_rbytes`` are per-second rates
    of all requests and their response bytes; ``.status.<code>.requests``
    and ``.status.<code>.rbytes`` the same for each status seen.  Each
    poll reads at most ``max_lines`` lines (``max_bytes`` bytes); the rest
    waits for the next.  ``resolution`` is accepted and ignored.
    """

    options = (Option("resolution", "integer", 10, "ignored: rates are per poll"),)

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        self.byStatus: dict[int, list[int]] = {}
        """Requests and bytes of each status seen, since the previous poll."""
        self.previous: float | None = None

    def linesRead(self, lines: list[str]) -> list[Event]:
        for counts in self.byStatus.values():
            counts[:] = [0, 0]
        for _, fields in self.parsed(lines):
            counts = self.byStatus.setdefault(int(fields.get("status") or 0), [0, 0])
            counts[0] += 1
            counts[1] += int(fields.get("bytes") or 0)
        now, previous, self.previous = self.clock.seconds(), self.previous, self.clock.seconds()
        if previous is None or now <= previous:
            return []  # the first poll only finds where the file ends
        seconds = now - previous
        requests = sum(n for n, _ in self.byStatus.values())
        rbytes = sum(b for _, b in self.byStatus.values())
        event = self.createEvent
        events = [
            event("ok", "nginx requests per second", requests / seconds, "total_requests"),
            event("ok", "nginx response bytes per second", rbytes / seconds, "total_rbytes"),
        ]
        for status, (n, size) in sorted(self.byStatus.items()):
            events.append(event("ok", f"nginx status {status} requests per second",
                                n / seconds, f"status.{status}.requests"))  # fmt: skip
            events.append(event("ok", f"nginx status {status} response bytes per second",
                                size / seconds, f"status.{status}.rbytes"))  # fmt: skip
        return events


class NginxLog(_AccessLog):
    """Follows nginx's access log ``file``: each request is a ``log`` event of type ``nginx``.

    Its description is the line, and its attributes the parsed fields
    (``client``, ``request``, ``status``, ``bytes``, ...), with ``logname``
    the file, as in the original.
    """

    def linesRead(self, lines: list[str]) -> list[Event]:
        events = []
        for line, fields in self.parsed(lines):
            when = fields.get("time")
            fields["time"] = str(when) if when is not None else None
            if when is not None:
                fields["@timestamp"] = when.isoformat()
            fields["logname"] = self.config["file"]
            event = self.logEvent(line, fields, "nginx")
            if when is not None:
                event.time = when.timestamp()
            events.append(event)
        return events
