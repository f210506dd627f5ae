"""Reloading the configuration of a running agent (SIGHUP, ``duct reload``).

`diff` compares a snapshot of what runs (`duct.roster.Running`) with a new,
validated configuration; it is pure, so the rules below are testable
without a service or a clock.  `applyConfig` then changes only what
differs, through the agent's `duct.roster.Roster`.

**Identity.** An output is identified by its name (``name``, or else its
class name); it has *changed* when anything else differs: its class, any
option, or, for a disk buffer without a ``path``, the ``state_dir`` that
holds its directory.  A source is identified by its class path, its
``service`` and its configured ``hostname``; several sources with the same
three are matched in the order they appear.  It has *changed* when any
setting differs, including those it takes from the top level: ``interval``
and ``ttl`` (unless it sets its own) and the ``hostname`` its events carry.

**What a reload does.**

- Unchanged outputs stay the same objects, with their buffers and
  connections.  Unchanged sources keep running on their timers.
- Every source is routed anew, so a source without ``route`` also feeds an
  added output, and a route may name an output added by the same reload.
- Added outputs are built and started (``createClient``).  Added sources
  start ``stagger`` seconds apart (or after their ``start_delay``), as at
  start.
- Removed sources stop first; polls in flight are awaited for up to
  ``shutdown_timeout``.  Removed outputs are retired as at SIGTERM: they
  deliver for up to ``shutdown_timeout``, stop, and what they still hold is
  logged (lost for a memory buffer, kept in its directory for a disk one).
- A changed source is stopped as if removed, and its new version started
  as if added.
- A changed output with a **memory** buffer: its replacement is built and
  routed to first; the old one delivers for up to ``shutdown_timeout`` and
  stops.  What it still holds is then moved to the replacement, behind the
  events the replacement received meanwhile (each event keeps its own
  time).  When the replacement is full (``overflow: block``) the move waits
  up to ``shutdown_timeout`` for room; what does not fit then is dropped
  and counted by the replacement's buffer, and logged.  A batch the old
  output was still writing when it stopped is logged: it is lost only if
  that write then fails.
- A changed output with a **disk** buffer: the old one delivers for up to
  ``shutdown_timeout`` while still routed to.  Then the events routed to it
  wait (sources hold back as for a full output) while it stops and closes
  its directory, its replacement is built and routed to, and they go on.
  What the old one held stays on disk: the replacement replays it when it
  uses the same directory (the usual case); otherwise the count and the
  old directory are logged.

**Top-level settings** apply to what the reload builds and starts:
``shutdown_timeout`` bounds this reload's waits (and the next stop),
``stagger`` spaces the sources it starts, and a change of ``interval``,
``ttl``, ``hostname`` or ``state_dir`` changes (so restarts) the items
that use it.  **A restart is needed** for changed plugin code (a module
already imported is not imported again) and for twistd's own options (the
configuration path, the log and pid files).

**All or nothing.** Every new output and source is built before anything
changes; if one cannot be built, the reload fails with ConfigurationError
and the running configuration stays.  Two exceptions: a changed output
with a disk buffer is built only once the old one has released its
directory, and if that fails it is built again with its previous settings
(logged); and an output added by a reload cannot take over the buffer
directory of an output the same reload removes (the directory is still in
use when it is built), so that takes two reloads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.configuration import Config, Item
from duct.defaults import STATE_DIR
from duct.errors import ConfigurationError, Problem
from duct.handover import handOver, swapDurable
from duct.objects import Output, Source, defaultHostname
from duct.roster import Roster, Running

log = Logger()

DEFAULT_STATE_DIR = STATE_DIR


class Agent(Protocol):
    """What a reload needs of the running agent (`duct.service.DuctService`)."""

    config: Config
    hostname: str
    roster: Roster
    pluginHost: Any  # duct.pluginhost.PluginHost

    @property
    def running(self) -> Any: ...

    def snapshot(self) -> Running: ...

    def buildOutput(self, item: Item) -> Output: ...

    def buildSource(self, item: Item) -> Source: ...

    def startOutput(self, output: Output) -> None: ...

    def startSources(self, sources: list[Source]) -> None: ...

    def pauseWatchdog(self) -> None: ...

    def watch(self) -> None: ...

    def reopen(self) -> None: ...

    def reload(self, config: Config) -> Deferred[None]: ...


# -- identity and settings ---------------------------------------------------------------


def outputName(item: Item) -> str:
    """The name an output item runs under (what sources route to)."""
    assert item.cls is not None, f"{item.label} was not validated"
    return str(item.config.get("name") or item.cls.__name__)


def outputSettings(item: Item, stateDir: str) -> dict[str, Any]:
    """What makes an output with the same name a changed one."""
    settings = {"class": item.cls, **item.config}
    buffer = item.config.get("buffer") or {}
    if buffer.get("type") == "disk" and not buffer.get("path"):
        settings["state_dir"] = stateDir
    return settings


def sourceIdentity(item: Item) -> tuple[Any, ...]:
    return (item.config.get("source"), item.config.get("service"), item.config.get("hostname"))


def sourceSettings(item: Item, defaultHost: str) -> dict[str, Any]:
    """What makes a source with the same identity a changed one."""
    hostname = item.config.get("hostname") or defaultHost
    return {"class": item.cls, **item.config, "hostname": hostname}


def _numbered(keys: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Each key with its occurrence number, so that equal keys match in order."""
    seen: Counter[tuple[Any, ...]] = Counter()
    numbered = []
    for key in keys:
        numbered.append((*key, seen[key]))
        seen[key] += 1
    return numbered


@dataclass
class Plan:
    """The difference between the running configuration and a new one.

    Running sources appear as the handles the snapshot gave (the `Source`
    objects, for a service).
    """

    outputs: dict[str, Item] = field(default_factory=dict)
    """The new outputs by name, in the new order."""
    addedOutputs: list[str] = field(default_factory=list)
    removedOutputs: list[str] = field(default_factory=list)
    changedOutputs: list[str] = field(default_factory=list)
    sources: list[tuple[Item, Any]] = field(default_factory=list)
    """The new sources in order: each item with its running source when unchanged, else None."""
    addedSources: int = 0
    removedSources: list[Any] = field(default_factory=list)
    changedSources: list[Any] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"outputs: {len(self.addedOutputs)} added, {len(self.removedOutputs)} removed, "
            f"{len(self.changedOutputs)} changed; sources: {self.addedSources} added, "
            f"{len(self.removedSources)} removed, {len(self.changedSources)} changed"
        )


def diff(running: Running, new: Config, hostname: str | None = None) -> Plan:
    """Compare what runs with ``new``; nothing is built, started or stopped.

    ``hostname`` is the host of events from sources that name none (by
    default ``new``'s ``hostname``, else this machine's).
    """
    newStateDir = new.get("state_dir") or DEFAULT_STATE_DIR
    plan = Plan(outputs={outputName(item): item for item in new.outputs})
    for name, item in plan.outputs.items():
        old = running.outputs.get(name)
        if old is None:
            plan.addedOutputs.append(name)
        elif outputSettings(old, running.stateDir) != outputSettings(item, newStateDir):
            plan.changedOutputs.append(name)
    plan.removedOutputs = [name for name in running.outputs if name not in plan.outputs]

    host = hostname or new.get("hostname") or defaultHostname()
    keys = _numbered(sourceIdentity(item) for _, item, _ in running.sources)
    byKey = dict(zip(keys, running.sources, strict=True))
    newKeys = _numbered(sourceIdentity(i) for i in new.sources)
    for key, item in zip(newKeys, new.sources, strict=True):
        found = byKey.pop(key, None)
        source = None
        if found is None:
            plan.addedSources += 1
        elif sourceSettings(found[1], found[2]) != sourceSettings(item, host):
            plan.changedSources.append(found[0])
        else:
            source = found[0]
        plan.sources.append((item, source))
    plan.removedSources = [source for source, _, _ in byKey.values()]
    return plan


# -- applying ----------------------------------------------------------------------------


async def applyConfig(agent: Agent, new: Config) -> None:
    """Make ``agent`` run ``new``, changing only what differs (see the module)."""
    roster = agent.roster
    plan = diff(agent.snapshot(), new)
    previous = (agent.config, agent.hostname)
    agent.config, agent.hostname = new, new.get("hostname") or defaultHostname()
    durable = [n for n in plan.changedOutputs if roster.outputs[n].buffer.durable]
    try:
        plugins = agent.pluginHost.prepare(new.plugins)  # duct.pluginhost: builds, starts nothing
        built, fresh = _buildAll(agent, plan, durable)
    except ConfigurationError:
        agent.config, agent.hostname = previous
        raise
    timeout = float(new.get("shutdown_timeout") or 0.0)
    agent.pauseWatchdog()  # it must not swap sources while the list changes

    # Sources that leave stop first, so that their last polls still find their outputs.
    leaving = plan.removedSources + plan.changedSources
    await roster.removeSources(leaving, timeout, "after the reload")

    # Switch the outputs (disk-buffered replacements come later), then route everything.
    retired = [roster.outputs[name] for name in plan.removedOutputs]
    replaced = {name: roster.outputs[name] for name in built if name in plan.changedOutputs}
    outputs = {name: built.get(name) or roster.outputs[name] for name in plan.outputs}
    items = {name: item for name, item in plan.outputs.items() if name not in durable}
    roster.swapOutputs(outputs, items)
    if agent.running:
        for output in built.values():
            agent.startOutput(output)

    sources: list[tuple[Source, Item]] = []
    starting: list[Source] = []
    for item, running in plan.sources:
        source = running if running is not None else fresh.pop(0)
        sources.append((source, item))
        if running is None:
            starting.append(source)
    roster.replaceSources(sources)
    if agent.running:
        agent.startSources(starting)
        agent.watch()

    # Retire what was removed or replaced, all within the same time.
    work: list[Deferred[Any]] = []
    if retired:
        work.append(Deferred.fromCoroutine(roster.retire(retired, timeout, "on removal")))
    for name, old in replaced.items():
        work.append(Deferred.fromCoroutine(handOver(roster, old, outputs[name], timeout)))
    for name in durable:
        start = agent.startOutput if agent.running else None
        attempts = (plan.outputs[name], roster.outputItem(name))
        swap = swapDurable(roster, name, attempts, timeout, agent.buildOutput, start)
        work.append(Deferred.fromCoroutine(swap))
    work.append(Deferred.fromCoroutine(agent.pluginHost.apply(plugins, timeout)))
    for d in work:
        d.addErrback(_logFailure)
    await DeferredList(work)
    log.info("configuration reloaded from {path}: {summary}", path=new.path, summary=plan.summary())


def _buildAll(
    agent: Agent, plan: Plan, durable: list[str]
) -> tuple[dict[str, Output], list[Source]]:
    """Build the new outputs and sources; on any failure, undo and raise every problem."""
    built: dict[str, Output] = {}
    fresh: list[Source] = []
    problems: list[Problem] = []
    for name in plan.addedOutputs + plan.changedOutputs:
        if name in durable:
            continue
        try:
            built[name] = agent.buildOutput(plan.outputs[name])
        except ConfigurationError as e:
            problems += e.problems
    for item, running in plan.sources:
        if running is None:
            try:
                fresh.append(agent.buildSource(item))
            except ConfigurationError as e:
                problems += e.problems
    if problems:
        for output in built.values():  # never started: only a disk buffer to close
            maybeDeferred(output.stop).addErrback(_logFailure)
        raise ConfigurationError(problems)
    return built, fresh


def _logFailure(failure: Failure) -> None:
    log.failure("configuration reload: unexpected failure", failure)


# The SIGHUP side (reading the file off the reactor thread) is duct.hangup's.
from duct.hangup import hangup, reloadFromFile  # noqa: E402

__all__ = ["Agent", "Plan", "applyConfig", "diff", "hangup", "reloadFromFile"]
