"""The kit for testing sources and outputs, duct's own and plugin authors'.

Everything but `waitFor` and `pause` runs on a
`twisted.internet.testing.MemoryReactorClock`: the test decides when time
passes, and no socket is opened.  A source that fetches a URL through
``self.http`` runs its real code against a `twisted.web` resource::

    from duct.testing import SourceHarness, StubHTTP

    def test_my_source():
        http = StubHTTP({"/status": b"up 3"})
        harness = SourceHarness(MySource, {"service": "thing", "interval": 5,
                                           "url": "http://web/status"},
                                http=http, pipeline=True)
        harness.start()                 # the first poll, answered at once
        harness.advance(5)              # the clock moves; the next poll
        assert harness.latest("thing.up").metric == 3
        assert harness.errors == []

What there is:

- `SourceHarness(cls, config, duct=None, http=None, pipeline=False)` builds
  the source with a validated config.  ``events`` holds what it emitted
  (after the real `duct.pipeline.Pipeline`, with its aggregation and
  ``warning``/``critical`` rules, when ``pipeline`` is true; ``raw``
  always holds what the source queued), ``latest(service)`` the last event
  of a service, and ``errors`` the `Failure` of every failed poll.
  ``start``, ``advance(seconds)``, ``poll`` and ``stop`` drive it.
- `StubHTTP(routes)` answers ``self.http`` from a `twisted.web` resource,
  through `treq.testing.StubTreq`: ``routes`` is a `Resource`, or a dict of
  path to bytes, str, ``(status, body)``, a `Resource`, or a function of
  the request returning one of those.  ``requests`` records what was
  asked, ``flush()`` delivers what a resource finished later.
- `OutputHarness(cls, config, duct=None)` feeds events to an output
  (``send``), runs its timers (``run``, ``drain``), and reports what
  became of them: ``sent``, ``retries``, ``dropped`` (by reason),
  ``buffered``, and ``stats()``, the output's ``/stats`` entry.
- `FakeDuct` stands in for the service: it provides `duct.interfaces.IDuct`
  (``clock``, ``reactor``, ``hostname``, ``config`` with a temporary
  ``state_dir``, ``accepting``).
- `configure(cls, config)` validates a config as the loader would.
- `RecordingOutput` keeps every batch written to it; ``failing`` makes
  writes fail.
- `waitFor(reactor, check, what)` and `pause(reactor, seconds)`, for the
  tests that must run on the real reactor (real processes and peers).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from duct._testinghttp import RecordedRequest, StubHTTP
from duct.interfaces import IDuct
from duct.lib.commands import CommandOutput
from duct.lib.ssh import SSHPool
from duct.objects import Event, Output, Source
from duct.options import declaredOptions, optionProblems, validate
from duct.pipeline import Pipeline, Route, SourceFeed
from duct.protocol.riemann import EncodedEvents
from duct.stats import declaredStats, read
from duct.triggers import Triggers

__all__ = [
    "FakeDuct",
    "OutputHarness",
    "RecordedRequest",
    "RecordingOutput",
    "SourceHarness",
    "StubHTTP",
    "configure",
    "pause",
    "waitFor",
]


@implementer(IDuct)
class FakeDuct:
    """Stands in for the running service: a reactor and clock, a hostname, open outputs.

    :param clock: the clock, and the reactor too unless ``reactor`` is given;
        by default one new `MemoryReactorClock` is both.
    :param config: the service's configuration; by default it holds only a
        ``state_dir``, a new temporary directory removed with this object.
    """

    def __init__(
        self,
        clock: Any = None,
        hostname: str = "test.example",
        reactor: Any = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.clock = clock if clock is not None else (reactor or MemoryReactorClock())
        self.reactor = reactor if reactor is not None else self.clock
        self.hostname = hostname
        if config is None:
            self._stateDir = tempfile.TemporaryDirectory(prefix="duct-test-")
            config = {"state_dir": self._stateDir.name}
        self.config: dict[str, Any] = config
        self.accept = True
        self.ssh = SSHPool(self.reactor, self.clock)
        """The SSH connections of ``use_ssh`` sources; stop it (``stopService``) when done."""

    def accepting(self, source: Source) -> bool:
        return self.accept


def configure(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` against ``cls``'s declared options, filling defaults.

    Raises ValueError listing every problem, as the real loader would.
    """
    key = "source" if issubclass(cls, Source) else "output"
    config = {key: f"{cls.__module__}.{cls.__qualname__}", **config}
    checked, problems = validate(declaredOptions(cls), config)
    if not problems:
        problems = optionProblems(cls, checked)
    if problems:
        raise ValueError("; ".join(f"{k}: {message}" for k, message in problems))
    return checked


class _Collector(Output):
    """The harness's one output: it takes every event the pipeline routes to it."""

    options = ()

    def __init__(self, sink: list[Event], duct: Any) -> None:
        super().__init__({"name": "harness"}, duct)
        self.sink = sink

    def eventsReceived(self, events: list[Event]) -> int:
        self.received += len(events)
        self.sink.extend(events)
        return len(events)


class SourceHarness:
    """Builds a source with a validated config on a MemoryReactorClock and records it.

    :param http: a `StubHTTP` that answers the source's ``self.http``.
    :param pipeline: pass events through the real pipeline: aggregation
        (``Counter`` rates: the first sample of a series yields nothing)
        and the source's ``warning`` and ``critical`` rules.

    ``events`` holds the events, in order (after the pipeline, with
    ``pipeline``), ``raw`` what the source queued, and ``errors`` the
    failure of each poll that failed (also counted and logged as usual).
    """

    def __init__(
        self,
        cls: type[Source],
        config: dict[str, Any],
        duct: FakeDuct | None = None,
        http: StubHTTP | None = None,
        pipeline: bool = False,
    ):
        self.duct = duct if duct is not None else FakeDuct()
        self.clock = self.duct.clock
        self.events: list[Event] = []
        self.raw: list[Event] = []
        self.errors: list[Failure] = []
        self.http = http
        self.pipeline: Pipeline | None = None
        self._feed: SourceFeed | None = None
        self.source = cls(configure(cls, config), self._collect, self.duct)
        if pipeline:
            collector = _Collector(self.events, self.duct)
            self.pipeline = Pipeline({collector.name: collector})
            self.pipeline.routes[self.source] = Route(
                [collector], Triggers.fromConfig(self.source.config)
            )
            self._feed = SourceFeed(self.pipeline)
            self._feed.source = self.source
        if http is not None:
            http.install(self.source.http)
        countFailure = self.source._pollFailed

        def failed(failure: Failure) -> list[Event]:
            self.errors.append(failure)
            return countFailure(failure)

        self.source._pollFailed = failed  # type: ignore[method-assign]

    def _collect(self, events: Any) -> Deferred[None] | None:
        if isinstance(events, Event):
            events = [events]
        if isinstance(events, EncodedEvents):  # a Riemann listener's batch
            self.raw.extend(events.decode())
        else:
            self.raw.extend(events)
        if self._feed is not None:
            return self._feed(events)
        self.events.extend(events.decode() if isinstance(events, EncodedEvents) else events)
        return None

    def answerCommands(self, *outputs: CommandOutput | Exception) -> list[list[str]]:
        """Have the source's commands (``self.run``) answer ``outputs`` in turn.

        Each answer is a `duct.lib.commands.CommandOutput` (``(code,
        stdout, stderr)``), or an exception the command fails with (a
        `duct.lib.process.ProcessTimeout`, say).  Returns the list that
        records the argv of each command run, in order.
        """
        asked: list[list[str]] = []

        def run(
            argv: Iterable[str], timeout: float | None = None, onOutput: Any = None
        ) -> Deferred[CommandOutput]:
            asked.append(list(argv))
            if len(asked) > len(outputs):
                return fail(AssertionError(f"no answer given for command {len(asked)}: {argv}"))
            answer = outputs[len(asked) - 1]
            return fail(answer) if isinstance(answer, Exception) else succeed(answer)

        self.source.run = run  # type: ignore[method-assign]
        return asked

    def latest(self, service: str) -> Event:
        """The last event of ``service`` (its full name); LookupError if there is none."""
        for event in reversed(self.events):
            if event.service == service:
                return event
        seen = ", ".join(sorted({e.service for e in self.events})) or "none"
        raise LookupError(f"no event for service {service!r} (services seen: {seen})")

    def flush(self) -> None:
        """Deliver what the `StubHTTP` resources have answered since."""
        if self.http is not None:
            self.http.flush()

    def start(self) -> None:
        """Start the timer: the first poll runs now."""
        self.source.startTimer()
        self.flush()

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, and deliver HTTP answers."""
        self.clock.advance(seconds)
        self.flush()

    def stop(self) -> Deferred[Any]:
        return self.source.stopTimer()

    def poll(self) -> Deferred[list[Event]]:
        """Poll once; the Deferred fires with the events of that poll (before the pipeline)."""
        d = self.source.poll()
        self.flush()
        return d


def recordingService(reactor: Any, config: dict[str, Any]) -> tuple[Any, RecordingOutput]:
    """An agent (a `duct.service.DuctService`, not started) on ``config``, writing to one
    `RecordingOutput` named ``out`` that flushes at once: for a source's end-to-end
    test against a real server.  ``config`` gives the sources and any other
    setting, and no outputs.
    """
    from duct.service import DuctService

    outputs = [{"output": "duct.testing.RecordingOutput", "name": "out", "flush_interval": 0}]
    service = DuctService({**config, "outputs": outputs}, reactor=reactor)
    output = service.outputs["out"]
    assert isinstance(output, RecordingOutput)
    return service, output


class OutputHarness:
    """Feeds events to an output on a MemoryReactorClock and reports what became of them.

    It uses only what every output offers (``eventsReceived``, ``flush``,
    its buffer and counters), so it works whichever way the output writes.
    """

    def __init__(self, cls: type[Output], config: dict[str, Any], duct: FakeDuct | None = None):
        self.duct = duct if duct is not None else FakeDuct()
        self.clock: Any = self.duct.clock
        self.output = cls(configure(cls, config), self.duct)
        self.kept: list[int] = []
        """For each `send`, how many events the buffer kept."""

    def start(self) -> Deferred[Any]:
        d = maybeDeferred(self.output.start)
        self.run(0)
        return d

    def send(self, events: Iterable[Event]) -> int:
        """Hand ``events`` to the output; return how many its buffer kept."""
        kept = self.output.eventsReceived(list(events))
        self.kept.append(kept)
        return kept

    def run(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, running each timer at its time."""
        end = self.clock.seconds() + seconds
        for _ in range(100_000):  # a bound, against a timer that reschedules at once
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.active()]
            now = self.clock.seconds()
            following = min((t for t in due if t <= end), default=None)
            if following is None:
                break
            self.clock.advance(max(0.0, following - now))
        self.clock.advance(max(0.0, end - self.clock.seconds()))

    def drain(self, timeout: float = 300.0) -> bool:
        """Run the clock until the buffer is empty (retries too), for at most ``timeout``.

        Returns whether everything was delivered.
        """
        done = self.output.flush()
        deadline = self.clock.seconds() + timeout
        while not done.called and self.clock.seconds() < deadline:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.active()]
            if not due:
                break
            self.run(max(0.0, min(min(due), deadline) - self.clock.seconds()))
        return done.called and not self.output.buffer.depth

    def stats(self) -> dict[str, Any]:
        """The output's entry in ``/stats``."""
        return read(declaredStats(type(self.output)), self.output)

    @property
    def sent(self) -> int:
        """Events the destination confirmed."""
        return int(self.output.sent)

    @property
    def retries(self) -> int:
        """Writes that failed (each is retried)."""
        return int(self.output.failures)

    @property
    def dropped(self) -> dict[str, int]:
        """Events the buffer dropped, by reason (``overflow``, ``expired``, ...)."""
        return {reason: n for reason, n in self.output.buffer.drops.items() if n}

    @property
    def buffered(self) -> int:
        """Events still held, waiting or in flight."""
        return int(self.output.buffer.depth)


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


# -- the real reactor ------------------------------------------------------------------


def pause(reactor: Any, seconds: float = 0.2) -> Deferred[None]:
    """A Deferred that fires after ``seconds`` on ``reactor``, without blocking it."""
    return deferLater(reactor, seconds, lambda: None)


def waitFor(
    reactor: Any,
    check: Callable[[], Any],
    what: str = "the condition",
    timeout: float = 10.0,
    interval: float = 0.02,
) -> Deferred[Any]:
    """Call ``check`` every ``interval`` seconds until it returns something true.

    ``check`` may return a Deferred or a coroutine.  The Deferred fires with
    that true value, or fails with AssertionError naming ``what`` once
    ``timeout`` seconds have passed on ``reactor``.
    """

    async def poll() -> Any:
        deadline = reactor.seconds() + timeout
        while True:
            result = check()
            if isinstance(result, Deferred) or hasattr(result, "__await__"):
                result = await result
            if result:
                return result
            if reactor.seconds() > deadline:
                raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
            await pause(reactor, interval)

    return Deferred.fromCoroutine(poll())
