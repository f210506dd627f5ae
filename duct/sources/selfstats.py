"""duct's own statistics, as events: the source behind ``self_events: true``."""

from __future__ import annotations

from typing import Any

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


class Duct(SelfStats):
    """The original duct's self-monitoring source (``duct.sources.Duct``).

    It sends what the original did, under its names:

    - ``{service}.event rate``: events the sources emitted per second since
      the previous poll (nothing on the first poll, which has no previous);
    - ``{service}.sources``: how many sources run;

    and every figure `SelfStats` sends besides.
    """

    options: tuple[Option, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last: tuple[float, int] | None = None

    def get(self) -> list[Event]:
        sources = list(getattr(self.duct, "sources", None) or [])
        emitted = sum(getattr(source, "emitted", 0) for source in sources)
        now = self.clock.seconds()
        last, self._last = self._last, (now, emitted)
        events = [self.createEvent("ok", "Sources", len(sources), prefix="sources")]
        if last is not None and now > last[0]:
            rate = (emitted - last[1]) / (now - last[0])
            events.insert(0, self.createEvent("ok", "Event rate", rate, prefix="event rate"))
        return events + super().get()
