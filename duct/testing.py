"""Helpers for testing sources and outputs, duct's own and plugin authors'.

Everything here runs on a `twisted.internet.task.Clock`, so a test decides
when time passes::

    from duct.testing import SourceHarness

    def test_my_source():
        harness = SourceHarness(MySource, {"service": "thing", "interval": 5})
        harness.start()
        harness.clock.advance(5)
        assert [e.service for e in harness.events] == ["thing", "thing"]
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from duct.objects import Event, Output, Source
from duct.options import declaredOptions, validate
from duct.protocol.riemann import EncodedEvents


class FakeDuct:
    """Stands in for the running service: a clock, a hostname, open outputs."""

    def __init__(self, clock: Clock | None = None, hostname: str = "test.example") -> None:
        self.clock = clock if clock is not None else Clock()
        self.reactor = self.clock
        self.hostname = hostname
        self.config: dict[str, Any] = {}
        self.accept = True

    def accepting(self, source: Source) -> bool:
        return self.accept


def configure(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` against ``cls``'s declared options, filling defaults.

    Raises ValueError listing every problem, as the real loader would.
    """
    key = "source" if issubclass(cls, Source) else "output"
    config = {key: f"{cls.__module__}.{cls.__qualname__}", **config}
    checked, problems = validate(declaredOptions(cls), config)
    if problems:
        raise ValueError("; ".join(f"{k}: {message}" for k, message in problems))
    return checked


class SourceHarness:
    """Builds a source with validated config on a Clock and records what it emits.

    ``events`` holds the raw events, in order, as the source queued them.
    """

    def __init__(self, cls: type[Source], config: dict[str, Any], duct: FakeDuct | None = None):
        self.duct = duct if duct is not None else FakeDuct()
        self.clock = self.duct.clock
        self.events: list[Event] = []
        self.source = cls(configure(cls, config), self._collect, self.duct)

    def _collect(self, events: Any) -> None:
        if isinstance(events, EncodedEvents):  # a Riemann listener's batch
            events = events.decode()
        self.events.extend(events)

    def start(self) -> None:
        self.source.startTimer()

    def stop(self) -> Deferred[Any]:
        return self.source.stopTimer()

    def poll(self) -> Deferred[list[Event]]:
        """Poll once; the Deferred fires with the events of that poll."""
        return self.source.poll()


class RecordingOutput(Output):
    """An output that keeps every batch it is asked to write.

    Set ``failing`` to make writes fail, as an unreachable destination would.
    """

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.written: list[Event] = []
        self.batches: list[list[Event]] = []
        self.failing = False

    def writeBatch(self, events: list[Event]) -> Deferred[None] | None:
        if self.failing:
            return fail(ConnectionError("destination unavailable"))
        self.batches.append(list(events))
        self.written.extend(events)
        return None
