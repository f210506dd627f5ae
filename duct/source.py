"""Source: the base class of everything that produces events."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from duct.event import Event, defaultHostname
from duct.interfaces import IDuctSource
from duct.lib.commands import CommandOutput, Commands
from duct.lib.lograte import RateLimitedLog
from duct.lib.pluginhttp import PluginHTTP
from duct.lib.sshconfig import DEFAULT_TIMEOUT, SSH_OPTIONS
from duct.options import REQUIRED, Option, withDefaults
from duct.stats import SOURCE_STATS, Stat

FAILED_POLL_LOG_INTERVAL = 60.0
"""Seconds between log lines about one source's failed polls; those between are counted."""


@implementer(IDuctSource)
class Source:
    """The base of every source.

    A polling source overrides `get`, which may return an Event, a list of
    Events, None, a Deferred of those, or be ``async def``.  A listening
    source overrides `startTimer` and `stopTimer` and passes what it
    receives to ``queueBack``.

    :param config: this source's validated configuration.
    :param queueBack: called with each list of events the source produces.
    :param duct: the running `duct.service.DuctService` (or a test double
        from `duct.testing`), which supplies ``clock`` and ``hostname``.
    """

    log = Logger()
    sync = False
    """When true, a poll never starts while the previous one is running."""

    listens = False
    """True for a source that listens rather than polls.

    Its `startTimer` binds at once, while the agent starts, and raises if it
    cannot (`duct.listening.CannotListen` names the address): the start
    then fails, rather than leaving an agent that receives nothing.  It is
    not staggered.  A listener also has ``down``: None while it listens,
    else why not, which ``/health`` reports.
    """

    graphs: dict[str, str] = {}
    """How the dashboard draws this source's services: graph type by service prefix.

    Keys are relative to the configured ``service``: ``""`` is the service
    itself, ``"used"`` is ``{service}.used``, and a key covers every service
    below it too.  A key ending in ``*`` (``"*"``, ``"disk.*"``) covers only
    the services below it.  The longest key that covers a service wins.
    Values are ``line`` (the default for anything not covered), ``stack``,
    ``full-stack`` (stacked to 100%) or ``bar``.  The services a ``stack``
    or ``full-stack`` key covers share one chart; a line or a bar gets its
    own.  For example, ``{"*": "full-stack"}`` stacks ``cpu.user``,
    ``cpu.system`` and the rest to 100% while ``cpu`` stays a line.
    """

    options: tuple[Option, ...] = (
        Option("source", "string", REQUIRED, "dotted path of the Source class"),
        Option("service", "string", REQUIRED, "service name, the prefix of every event"),
        Option("interval", "number", 60.0, "seconds between polls", minimum=0.001),
        Option("ttl", "number", 60.0, "time-to-live of each event, in seconds", minimum=0),
        Option("tags", "strings", [], "tags for every event: a list or a comma-separated string"),
        Option("attributes", "mapping", None, "attributes (key: value) for every event"),
        Option("hostname", "string", None, "host of every event (default: this machine)"),
        Option(
            "route",
            "strings",
            None,
            'output name(s) to send to, "*" for all (default: default_route, else the outputs'
            " without a name, else all)",
        ),
        Option("critical", "mapping", None, 'service regex to rule, e.g. {cpu: "> 0.9"}'),
        Option("warning", "mapping", None, 'service regex to rule, e.g. {cpu: "> 0.8"}'),
        Option("start_delay", "number", None, "seconds to wait before the first poll", minimum=0),
        Option("watchdog", "boolean", False, "recreate the source after 10 silent intervals"),
        Option("debug", "flag", False, "log every event this source emits"),
        Option(
            "path",
            "string",
            None,
            "directory added to Python's path before the source class is imported",
        ),
        Option(
            "timeout",
            "number",
            None,
            f"seconds a command or a remote file read may take (default {DEFAULT_TIMEOUT:g})",
            above=0,
        ),
        *SSH_OPTIONS,
    )

    http = PluginHTTP()
    """An HTTP client with this source's HTTP and TLS options (`duct.lib.pluginhttp`)."""

    stats: tuple[Stat, ...] = SOURCE_STATS
    """What ``/stats``, ``/metrics`` and self events report of this source.

    A subclass lists its own statistics (`duct.stats.counter`,
    `duct.stats.gauge`) and they are added to those of its base classes.
    """

    def __init__(self, config: dict[str, Any], queueBack: Callable[..., Any], duct: Any):
        self.config = config = withDefaults(type(self), config)
        self.queueBack = queueBack
        self.duct = duct
        self.clock: Any = duct.clock
        self.service: str = config["service"]
        self.interval = float(config["interval"])
        self.ttl = float(config["ttl"])
        self.tags: list[str] = list(config["tags"])
        self.attributes: dict[str, str] | None = config["attributes"]
        self.hostname: str = (
            config["hostname"] or getattr(duct, "hostname", None) or defaultHostname()
        )
        self.debug: bool = config["debug"]
        self.commands = Commands(config, self.hostname, duct)
        """How `run` and `readFile` reach the machine: here, or over SSH (``use_ssh``)."""
        self.useSSH = self.commands.useSSH
        if self.useSSH and not config["hostname"]:
            self.hostname = self.commands.host or self.hostname  # events name the remote host
        self.running = False
        self.polls = 0
        self.errors = 0
        self.skipped = 0
        self.emitted = 0
        self.lastPollDuration: float | None = None
        self.lastEventTime: float | None = None
        self._inflight: set[Deferred[list[Event]]] = set()
        self._pollLog = RateLimitedLog(self.log, self.clock, interval=FAILED_POLL_LOG_INTERVAL)
        self._tracebackLogged = False
        self.t = task.LoopingCall(self.tick)
        self.t.clock = self.clock

    # -- events ------------------------------------------------------------

    def createEvent(
        self,
        state: str | None,
        description: str | None,
        metric: float | None,
        prefix: str | None = None,
        hostname: str | None = None,
        aggregation: Callable[[float, float, float], float | None] | None = None,
        evtime: float | None = None,
        attributes: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
    ) -> Event:
        """An Event named ``service[.prefix]`` with this source's ttl, tags and attributes.

        ``attributes`` are this event's own, merged over the configured
        ``attributes`` (an event's value wins); values become strings.
        ``tags`` are added after the configured ``tags``.
        """
        service = f"{self.service}.{prefix}" if prefix else self.service
        allTags = list(self.tags)
        if tags:
            allTags += [tag for tag in tags if tag not in allTags]
        merged = dict(self.attributes) if self.attributes else None
        if attributes:
            merged = merged or {}
            merged.update((str(key), str(value)) for key, value in attributes.items())
        return Event(
            state,
            service,
            description,
            metric,
            self.ttl,
            tags=allTags,
            hostname=hostname or self.hostname,
            aggregation=aggregation,
            evtime=self.clock.seconds() if evtime is None else evtime,
            attributes=merged,
        )

    def createLog(
        self, type: str, data: str, evtime: float | None = None, hostname: str | None = None
    ) -> Event:
        """A log Event: ``type`` is its service and ``data`` its description."""
        return Event(
            None,
            type,
            data,
            None,
            self.ttl,
            tags=list(self.tags),
            hostname=hostname or self.hostname,
            evtime=self.clock.seconds() if evtime is None else evtime,
            attributes=dict(self.attributes) if self.attributes else None,
            type="log",
        )

    # -- commands and files --------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        timeout: float | None = None,
        onOutput: Callable[[str, bytes], None] | None = None,
    ) -> Deferred[CommandOutput]:
        """Run ``argv`` here, or on ``ssh_host`` with ``use_ssh``; fires with a `CommandOutput`.

        ``(code, stdout, stderr)``: the exit status (minus the signal
        number if a signal killed it) and the output as text.  A nonzero
        status is a result, not a failure.  Past ``timeout`` seconds
        (default: the ``timeout`` option) the command is killed and the
        Deferred fails with `duct.lib.process.ProcessTimeout`; over SSH,
        one that cannot reach the host fails with
        `duct.lib.sshhostkeys.SSHError` (`HostKeyError` for a key that did
        not check).  ``onOutput``, if given, is called with ``("stdout" or
        "stderr", bytes)`` as the output comes.
        """
        return self.commands.run(argv, timeout, onOutput)

    def readFile(self, path: str) -> Deferred[bytes]:
        """The bytes of ``path``, here or on ``ssh_host``; OSError if it cannot be read.

        Meant for small files such as ``/proc/loadavg`` (see `duct.lib.commands`).
        """
        return self.commands.readFile(path)

    # -- polling -------------------------------------------------------------

    def get(self) -> Any:
        """Poll once.  Subclasses override this."""
        return None

    def startTimer(self) -> None:
        """Start polling every ``interval`` seconds, the first poll now."""
        self.t.start(self.interval, now=True)

    def stopTimer(self) -> Deferred[Any]:
        """Stop polling.  The Deferred fires once the poll in flight has finished."""
        if self.t.running:
            self.t.stop()
        if not self._inflight:
            return succeed(None)
        return DeferredList(list(self._inflight), consumeErrors=True)

    def tick(self) -> Deferred[list[Event]] | None:
        """The timer's call: poll, unless a ``sync`` poll is running or outputs are full."""
        if self.sync and self.running:
            self.skipped += 1
            return None
        accepting = getattr(self.duct, "accepting", None)
        if accepting is not None and not accepting(self):
            self.skipped += 1
            self.log.debug("{source}: outputs are full, poll skipped", source=self.service)
            return None
        d = self.poll()
        # Returning the Deferred makes LoopingCall wait for it: no overlap.
        return d if self.sync else None

    def poll(self) -> Deferred[list[Event]]:
        """Call `get` once and queue what it returns.

        The Deferred fires with the events of this poll (none if it failed);
        failures are logged and counted, never raised.
        """
        self.running = True
        self.polls += 1
        started = self.clock.seconds()
        d = maybeDeferred(self.get)
        d.addCallback(self._emit)
        d.addErrback(self._pollFailed)

        def finished(events: list[Event]) -> list[Event]:
            self.running = False
            self.lastPollDuration = self.clock.seconds() - started
            self._inflight.discard(d)
            return events

        d.addBoth(finished)
        if not d.called:
            self._inflight.add(d)
        return d

    def _emit(self, result: Any) -> list[Event]:
        if result is None:
            return []
        events = [result] if isinstance(result, Event) else list(result)
        if not events:
            return events
        self.emitted += len(events)
        self.lastEventTime = self.clock.seconds()
        if self.debug:
            for event in events:
                self.log.info("{source}: {event!r}", source=self.service, event=event)
        self.queueBack(events)
        return events

    def _pollFailed(self, failure: Failure) -> list[Event]:
        """Count a failed poll and log it at error level, at a limited rate.

        The first failure logged carries its traceback; later lines carry
        only the error, and the count of failures since this source started.
        """
        self.errors += 1
        fields: dict[str, Any] = {}
        if not self._tracebackLogged:
            fields["log_failure"] = failure
        if self._pollLog.emit(
            "poll",
            "source {source} failed to poll ({errors} failures in all): {error}",
            LogLevel.error,
            source=self.service,
            error=failure.getErrorMessage() or repr(failure.value),
            errors=self.errors,
            **fields,
        ):
            self._tracebackLogged = True
        return []
