"""From sources to outputs: aggregation, state rules and routing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from duct.objects import Event, Output, Source
from duct.triggers import Triggers


class Route:
    """Where one source's events go, and the rules that set their state."""

    __slots__ = ("outputs", "triggers", "blocking")

    def __init__(self, outputs: list[Output], triggers: Triggers) -> None:
        self.outputs = outputs
        self.triggers = triggers
        self.blocking = [o for o in outputs if o.buffer.overflow == "block"]


class Pipeline:
    """Aggregates, sets state and routes each source's events.

    Aggregation keeps the last raw sample of every series (host and
    service) that has an aggregation function; the first sample of a
    series emits nothing.
    """

    def __init__(self, outputs: Mapping[str, Output]) -> None:
        self.outputs = dict(outputs)
        self.routes: dict[Source, Route] = {}
        # Keyed by (host, service): ``Event.eid`` joins them with a dot, so host
        # "a.b" with service "c" would collide with host "a" and service "b.c".
        self.previous: dict[tuple[str, str], Event] = {}

    def register(self, source: Source) -> Route:
        names = source.config.get("route")
        if isinstance(names, str):
            names = [names]
        outputs = [self.outputs[n] for n in names] if names else list(self.outputs.values())
        route = Route(outputs, Triggers.fromConfig(source.config))
        self.routes[source] = route
        return route

    def unregister(self, source: Source) -> None:
        self.routes.pop(source, None)

    def accepting(self, source: Source) -> bool:
        """False while any output this source feeds, with ``overflow: block``, is full."""
        route = self.routes.get(source)
        return route is None or all(o.buffer.writable for o in route.blocking)

    def aggregate(self, events: Iterable[Event]) -> list[Event]:
        result = []
        previous = self.previous
        for event in events:
            aggregation = event.aggregation
            if aggregation is None:
                result.append(event)
                continue
            key = (event.hostname, event.service)
            last = previous.get(key)
            previous[key] = event
            if last is None or event.metric is None or last.metric is None:
                continue
            metric = aggregation(last.metric, event.metric, event.time - last.time)
            if metric is not None:
                result.append(event.copyWithMetric(metric))
        return result

    def receive(self, source: Source, events: list[Event]) -> None:
        """Take a list of events from ``source`` and hand them to its outputs."""
        route = self.routes.get(source)
        if route is None:
            route = self.register(source)
        if any(event.aggregation is not None for event in events):
            events = self.aggregate(events)
        if route.triggers:
            route.triggers.apply(events)
        if not events:
            return
        for output in route.outputs:
            output.eventsReceived(events)

    def forget(self, olderThan: float) -> int:
        """Drop remembered samples older than ``olderThan``; return how many."""
        stale = [key for key, event in self.previous.items() if event.time < olderThan]
        for key in stale:
            del self.previous[key]
        return len(stale)


class SourceFeed:
    """The ``queueBack`` a source is built with: it feeds the pipeline."""

    __slots__ = ("pipeline", "source")

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.source: Source | None = None

    def __call__(self, events: Event | list[Event]) -> None:
        if isinstance(events, Event):
            events = [events]
        assert self.source is not None, "SourceFeed used before its source was attached"
        self.pipeline.receive(self.source, events)
