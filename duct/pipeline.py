"""From sources to outputs: aggregation, state rules and routing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from duct.errors import TooLarge
from duct.event import Event
from duct.output import Output
from duct.protocol.riemann import ENCODED_OVERHEAD, EVENT_OVERHEAD, EncodedEvents
from duct.source import Source
from duct.triggers import Triggers
from duct.web.events.ring import EventRing


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

    def __init__(self, outputs: Mapping[str, Output], ring: EventRing | None = None) -> None:
        self.outputs = dict(outputs)
        self.ring = ring
        """Where delivered events are also recorded, for /events (see `duct.web.events.ring`)."""
        self.routes: dict[Source, Route] = {}
        # Keyed by (host, service): ``Event.eid`` joins them with a dot, so host
        # "a.b" with service "c" would collide with host "a" and service "b.c".
        self.previous: dict[tuple[str, str], Event] = {}
        self.held: set[Output] = set()
        """Outputs being replaced: events routed to them wait (see `hold`)."""
        self._changeWaiters: list[Deferred[None]] = []
        self.plugins: Any = None
        """A `duct.pluginhost.PluginHost`, handed every delivered batch; None for none."""

    def register(self, source: Source, lenient: bool = False) -> Route:
        """Compute ``source``'s route from its config and the current outputs.

        No route, or ``"*"`` among its names, is every output (the loader
        gives a source without a route its default, `duct.compat.resolveRoute`).
        An unknown output name raises KeyError, unless ``lenient``: then it
        is left out (a source stopping while its output was removed).
        """
        names = source.config.get("route")
        if isinstance(names, str):
            names = [names]
        if not names or "*" in names:
            outputs = list(self.outputs.values())
        elif lenient:
            outputs = [self.outputs[n] for n in names if n in self.outputs]
        else:
            outputs = [self.outputs[n] for n in names]
        route = Route(outputs, Triggers.fromConfig(source.config))
        self.routes[source] = route
        return route

    def unregister(self, source: Source) -> None:
        self.routes.pop(source, None)

    def replaceOutputs(self, outputs: Mapping[str, Output]) -> None:
        """Route to ``outputs`` from now on: every registered source is routed anew.

        Events waiting for room in an output (``overflow: block``) look up
        their source's route again, so none wait on an output that is gone.
        """
        self.outputs = dict(outputs)
        for source in list(self.routes):
            self.register(source, lenient=True)
        self._changed()

    def hold(self, output: Output) -> None:
        """Hold back events routed to ``output`` until `release`.

        Meanwhile the sources routed to it wait as if it were full: polls
        are skipped, and events from listeners wait here.
        """
        self.held.add(output)

    def release(self, output: Output) -> None:
        self.held.discard(output)
        self._changed()

    def _changed(self) -> None:
        waiters, self._changeWaiters = self._changeWaiters, []
        for d in waiters:
            d.callback(None)

    def _whenChanged(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._changeWaiters.append(d)
        return d

    def _isHeld(self, route: Route) -> bool:
        return bool(self.held) and any(o in self.held for o in route.outputs)

    def accepting(self, source: Source, count: int = 1, nbytes: int | None = None) -> bool:
        """False while any output this source feeds, with ``overflow: block``, lacks room.

        Room for one event by default; for ``count`` events of ``nbytes``
        bytes (as `EncodedEvents.nbytes` measures them) when given.
        """
        route = self.routes.get(source)
        if route is None:
            return True
        if self._isHeld(route):
            return False
        return all(o.buffer.hasRoom(count, _cost(o, count, nbytes)) for o in route.blocking)

    def whenAccepting(
        self, source: Source, count: int, nbytes: int | None = None
    ) -> Deferred[None]:
        """A Deferred that fires once `accepting` holds for ``count`` events (``nbytes``).

        A listener that answers "busy" after a while waits on it before handing
        events on; cancelling it (a timeout) stops the wait and forgets its waiters.
        """
        waits: list[tuple[Any, Deferred[None]]] = []

        def forget() -> None:
            for buffer, d in waits:
                if d in self._changeWaiters:
                    self._changeWaiters.remove(d)
                elif buffer is not None:
                    buffer.forgetWaiter(d)
            waits.clear()

        result: Deferred[None] = Deferred(lambda _: forget())

        def check(_: object = None) -> None:
            forget()
            if result.called:
                return
            if self.accepting(source, count, nbytes):
                result.callback(None)
                return
            route = self.routes[source]
            changed = self._whenChanged()
            waits.append((None, changed))
            for output in route.blocking:
                cost = _cost(output, count, nbytes)
                if not output.buffer.hasRoom(count, cost):
                    waits.append((output.buffer, output.buffer.whenRoom(count, cost)))
            for _buffer, d in list(waits):
                d.addCallback(check)

        check()
        return result

    def checkFits(self, source: Source, count: int, nbytes: int | None = None) -> None:
        """Raise `TooLarge` if ``count`` events (``nbytes`` bytes) could never enter
        an output ``source`` is routed to with ``overflow: block``: more events than
        its ``maxsize``, or more bytes than its ``max_bytes``."""
        route = self.routes.get(source)
        if route is None:
            route = self.register(source)
        _checkFits(route, count, nbytes)

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

    def receive(self, source: Source, events: list[Event] | EncodedEvents) -> Deferred[None] | None:
        """Take events from ``source`` and hand them to its outputs.

        Returns None when every routed buffer took them at once.  While an
        output with ``overflow: block`` lacks room for all of them, the
        events wait here instead, and the Deferred returned fires once they
        are in every buffer: a listener holds its client's ack until then.
        Events that could never fit such an output's buffer (see
        `checkFits`) raise `TooLarge`, and nothing is delivered.

        Events that arrived encoded (`EncodedEvents`) stay encoded for
        outputs that accept them, and are decoded once for the others, or
        for the source's state rules.
        """
        route = self.routes.get(source)
        if route is None:
            route = self.register(source)
        nbytes: int | None = None
        if isinstance(events, EncodedEvents):
            nbytes = events.nbytes
            if route.triggers:
                events = events.decode()
                route.triggers.apply(events)
        else:
            if any(event.aggregation is not None for event in events):
                events = self.aggregate(events)
            if route.triggers:
                route.triggers.apply(events)
        if not events:
            return None
        count = len(events)
        if not self.held or not self._isHeld(route):
            for output in route.blocking:
                # _cost, inlined: this is every Msg's path.
                cost = (
                    nbytes
                    if nbytes is None or output.acceptsEncoded
                    else _cost(output, count, nbytes)
                )
                if not output.buffer.hasRoom(count, cost):
                    break
            else:
                self._deliver(route, events)
                return None
        _checkFits(route, count, nbytes)
        return Deferred.fromCoroutine(
            self._deliverWhenWritable(source, route, events, count, nbytes)
        )

    def _deliver(self, route: Route, events: list[Event] | EncodedEvents) -> None:
        if self.ring is not None:
            self.ring.add(events)  # relayed events stay encoded there too
        for output in route.outputs:
            if isinstance(events, EncodedEvents) and not output.acceptsEncoded:
                output.eventsReceived(events.decode())
            else:
                output.eventsReceived(events)  # type: ignore[arg-type]
        if self.plugins is not None:
            self.plugins.eventsRouted(events)  # queues for event plugins; never waits

    async def _deliverWhenWritable(
        self,
        source: Source,
        route: Route,
        events: list[Event] | EncodedEvents,
        count: int,
        nbytes: int | None,
    ) -> None:
        while True:
            route = self.routes.get(source, route)  # a reload may have routed it anew
            _checkFits(route, count, nbytes)
            full = [
                (output, _cost(output, count, nbytes))
                for output in route.blocking
                if not output.buffer.hasRoom(count, _cost(output, count, nbytes))
            ]
            if not full and not self._isHeld(route):
                break
            changed = self._whenChanged()
            waits = [(output, output.buffer.whenRoom(count, cost)) for output, cost in full]
            await DeferredList([d for _, d in waits] + [changed], fireOnOneCallback=True)
            if not changed.called:  # woken by room: forget the waiter
                self._changeWaiters.remove(changed)
            for output, d in waits:
                if not d.called:
                    output.buffer.forgetWaiter(d)
        self._deliver(route, events)

    def forget(self, olderThan: float) -> int:
        """Drop remembered samples older than ``olderThan``; return how many."""
        stale = [key for key, event in self.previous.items() if event.time < olderThan]
        for key in stale:
            del self.previous[key]
        return len(stale)


def _cost(output: Output, count: int, nbytes: int | None) -> int | None:
    """What ``count`` events measured at ``nbytes`` encoded will take in ``output``'s buffer.

    An output that does not take encoded events holds them decoded, each
    an `Event` of at least `EVENT_OVERHEAD` bytes.
    """
    if nbytes is None or output.acceptsEncoded:
        return nbytes
    return nbytes + count * (EVENT_OVERHEAD - ENCODED_OVERHEAD)


def _checkFits(route: Route, count: int, nbytes: int | None) -> None:
    for output in route.blocking:
        cost = _cost(output, count, nbytes)
        limit = output.buffer.canEverHold(count, cost)
        if limit is not None:
            buffer = output.buffer
            if limit == "maxsize":
                raise TooLarge(output.name, limit, buffer.maxsize, count)
            raise TooLarge(output.name, limit, buffer.max_bytes, cost or 0)


class SourceFeed:
    """The ``queueBack`` a source is built with: it feeds the pipeline."""

    __slots__ = ("pipeline", "source")

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.source: Source | None = None

    def __call__(self, events: Event | list[Event] | EncodedEvents) -> Deferred[None] | None:
        if isinstance(events, Event):
            events = [events]
        assert self.source is not None, "SourceFeed used before its source was attached"
        return self.pipeline.receive(self.source, events)

    def checkFits(self, count: int, nbytes: int | None = None) -> None:
        """Raise `TooLarge` if so many events could never enter a routed output."""
        assert self.source is not None, "SourceFeed used before its source was attached"
        self.pipeline.checkFits(self.source, count, nbytes)

    def whenAccepting(self, count: int, nbytes: int | None = None) -> Deferred[None]:
        """Fires once every blocking routed output has room (`Pipeline.whenAccepting`)."""
        assert self.source is not None, "SourceFeed used before its source was attached"
        return self.pipeline.whenAccepting(self.source, count, nbytes)
