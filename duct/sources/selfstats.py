"""duct's own statistics, as events: the source behind ``self_events: true``."""

from __future__ import annotations

from duct.objects import Event, Source
from duct.options import Option
from duct.stats import flatten, snapshot


class SelfStats(Source):
    """duct's own statistics, as events, every interval.

    Each number of the ``/stats`` snapshot becomes one event named after
    its place in it, under this source's ``service`` (``duct`` when added
    by ``self_events: true``):

    - ``duct.process.rss_bytes``, ``.cpu_seconds``, ``.uptime``, ...;
    - ``duct.source.<service>.polls``, ``.errors``, ``.emitted``, ...;
    - ``duct.output.<name>.events_sent``, ``.buffer_events``,
      ``.dropped.<reason>`` (``overflow``, ``expired``, ``rejected``, ...);
    - ``duct.total.source.<stat>`` and ``duct.total.output.<stat>``: the
      totals across sources and outputs.

    Counters are sent as they stand (they only grow while duct runs), with
    state ``ok``; true and false become 1 and 0.  Events are routed like
    any other source's.  The top-level ``self_events: true`` adds this
    source with ``interval: self_interval`` (10 s) and ``route:
    self_route``; it can also be listed under ``sources`` like any other.
    """

    options: tuple[Option, ...] = ()

    def get(self) -> list[Event]:
        return [
            self.createEvent("ok", None, value, prefix=name)
            for name, value in flatten(snapshot(self.duct))
        ]
