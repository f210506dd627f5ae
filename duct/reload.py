"""Reloading the configuration of a running agent (SIGHUP, ``duct reload``).

`applyConfig` compares the running configuration with a new, validated one
and changes only what differs.

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
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.configuration import Config, ConfigFile, ConfigurationError, Item, Problem
from duct.objects import Output, Source, defaultHostname
from duct.protocol.riemann import EncodedEvents

if TYPE_CHECKING:
    from duct.service import DuctService

log = Logger()


# -- identity and settings ---------------------------------------------------------------


def outputName(item: Item) -> str:
    """The name an output item runs under (what sources route to)."""
    assert item.cls is not None, f"{item.label} was not validated"
    return str(item.config.get("name") or item.cls.__name__)


def outputSettings(item: Item, config: Config) -> dict[str, Any]:
    """What makes an output with the same name a changed one."""
    settings = {"class": item.cls, **item.config}
    buffer = item.config.get("buffer") or {}
    if buffer.get("type") == "disk" and not buffer.get("path"):
        settings["state_dir"] = config.get("state_dir") or "/var/lib/duct"
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
    """The difference between the running configuration and a new one."""

    outputs: dict[str, Item] = field(default_factory=dict)
    """The new outputs by name, in the new order."""
    addedOutputs: list[str] = field(default_factory=list)
    removedOutputs: list[str] = field(default_factory=list)
    changedOutputs: list[str] = field(default_factory=list)
    sources: list[tuple[Item, Source | None]] = field(default_factory=list)
    """The new sources in order: each item with its running source when unchanged."""
    addedSources: int = 0
    removedSources: list[Source] = field(default_factory=list)
    changedSources: list[Source] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"outputs: {len(self.addedOutputs)} added, {len(self.removedOutputs)} removed, "
            f"{len(self.changedOutputs)} changed; sources: {self.addedSources} added, "
            f"{len(self.removedSources)} removed, {len(self.changedSources)} changed"
        )


def diff(service: DuctService, new: Config) -> Plan:
    """Compare what ``service`` runs with ``new``."""
    plan = Plan(outputs={outputName(item): item for item in new.outputs})
    for name, item in plan.outputs.items():
        old = service.outputItems.get(name)
        if old is None:
            plan.addedOutputs.append(name)
        elif outputSettings(old, service.config) != outputSettings(item, new):
            plan.changedOutputs.append(name)
    plan.removedOutputs = [name for name in service.outputs if name not in plan.outputs]

    hostname = new.get("hostname") or defaultHostname()
    keys = _numbered(sourceIdentity(service.itemOf(source)) for source in service.sources)
    running = dict(zip(keys, service.sources, strict=True))
    newKeys = _numbered(sourceIdentity(i) for i in new.sources)
    for key, item in zip(newKeys, new.sources, strict=True):
        source = running.pop(key, None)
        if source is None:
            plan.addedSources += 1
        elif sourceSettings(service.itemOf(source), source.hostname) != sourceSettings(
            item, hostname
        ):
            plan.changedSources.append(source)
            source = None
        plan.sources.append((item, source))
    plan.removedSources = list(running.values())
    return plan


# -- applying ----------------------------------------------------------------------------


async def applyConfig(service: DuctService, new: Config) -> None:
    """Make ``service`` run ``new``, changing only what differs (see the module)."""
    plan = diff(service, new)
    previous = (service.config, service.hostname)
    service.config, service.hostname = new, new.get("hostname") or defaultHostname()
    durable = [n for n in plan.changedOutputs if service.outputs[n].buffer.durable]
    try:
        built, fresh = _buildAll(service, plan, durable)
    except ConfigurationError:
        service.config, service.hostname = previous
        raise
    timeout = float(new.get("shutdown_timeout") or 0.0)
    if service.watchdog.running:  # it must not swap sources while the list changes
        service.watchdog.stop()

    # Sources that leave stop first, so that their last polls still find their outputs.
    leaving = plan.removedSources + plan.changedSources
    for source in leaving:
        service.forgetSource(source)
    if leaving:
        stopping = [_stopSource(service, source) for source in leaving]
        if not await service._within(DeferredList(stopping, consumeErrors=True), timeout):
            log.warn(
                "sources {services} still polling after {timeout}s; not waiting for them",
                services=", ".join(s.service for s in leaving if s.running),
                timeout=timeout,
            )

    # Switch the outputs (disk-buffered replacements come later), then route everything.
    retired = [service.outputs[name] for name in plan.removedOutputs]
    replaced = {name: service.outputs[name] for name in built if name in plan.changedOutputs}
    outputs = {name: built.get(name) or service.outputs[name] for name in plan.outputs}
    service.outputs.clear()
    service.outputs.update(outputs)
    for name in plan.removedOutputs:
        del service.outputItems[name]
    for name, item in plan.outputs.items():
        if name not in durable:
            service.outputItems[name] = item
    service.pipeline.replaceOutputs(service.outputs)
    if service.running:
        for output in built.values():
            service.startOutput(output)

    sources: list[Source] = []
    starting: list[Source] = []
    for item, running in plan.sources:
        source = running if running is not None else fresh.pop(0)
        service.adoptSource(source, item)
        sources.append(source)
        if running is None:
            starting.append(source)
    service.sources[:] = sources
    if service.running:
        service.startSources(starting)
        service.watch()

    # Retire what was removed or replaced, all within the same time.
    work: list[Deferred[Any]] = []
    if retired:
        work.append(Deferred.fromCoroutine(service.retireOutputs(retired, timeout, "on removal")))
    for name, old in replaced.items():
        work.append(Deferred.fromCoroutine(_handOver(service, old, outputs[name], timeout)))
    for name in durable:
        swap = _swapDurable(service, name, plan.outputs[name], timeout)
        work.append(Deferred.fromCoroutine(swap))
    for d in work:
        d.addErrback(_logFailure)
    await DeferredList(work)
    log.info("configuration reloaded from {path}: {summary}", path=new.path, summary=plan.summary())


def _buildAll(
    service: DuctService, plan: Plan, durable: list[str]
) -> tuple[dict[str, Output], list[Source]]:
    """Build the new outputs and sources; on any failure, undo and raise every problem."""
    built: dict[str, Output] = {}
    fresh: list[Source] = []
    problems: list[Problem] = []
    for name in plan.addedOutputs + plan.changedOutputs:
        if name in durable:
            continue
        try:
            built[name] = service.buildOutput(plan.outputs[name])
        except ConfigurationError as e:
            problems += e.problems
    for item, running in plan.sources:
        if running is None:
            try:
                fresh.append(service.buildSource(item))
            except ConfigurationError as e:
                problems += e.problems
    if problems:
        for output in built.values():  # never started: only a disk buffer to close
            maybeDeferred(output.stop).addErrback(_logFailure)
        raise ConfigurationError(problems)
    return built, fresh


def _stopSource(service: DuctService, source: Source) -> Deferred[Any]:
    """Stop ``source``'s timer; unroute it once its poll in flight has delivered."""

    def unroute(result: object) -> object:
        service.pipeline.unregister(source)
        return result

    return maybeDeferred(source.stopTimer).addBoth(unroute)


async def _handOver(service: DuctService, old: Output, new: Output, timeout: float) -> None:
    """Drain and stop a replaced output; move what it could not deliver to ``new``."""
    await service.drainOutputs([old], timeout)
    await service.stopOutputs([old])
    batch = old.buffer.take(len(old.buffer)) if len(old.buffer) else None
    # depth counts what waits and what is in flight; this batch is in flight now.
    writing = old.buffer.depth - len(old.buffer) - (len(batch) if batch is not None else 0)
    if writing:
        log.warn(
            "output {output}: {count} events were being written when it was replaced; "
            "they are lost if that write fails",
            output=old.name,
            count=writing,
        )
    if batch is None:
        log.info("output {output} replaced; it had delivered everything", output=old.name)
        return
    if new.buffer.overflow == "block" and not new.buffer.writable:
        await service._within(Deferred.fromCoroutine(_room(new.buffer)), timeout)
    items: Any = old.batchEvents(batch)
    if isinstance(items, list) and isinstance(items[0], (bytes, bytearray)):  # queued encoded
        items = EncodedEvents(list(items))
    if isinstance(items, EncodedEvents) and not new.acceptsEncoded:
        items = items.decode()
    kept = new.eventsReceived(items)
    old.buffer.ack(batch)
    log.info(
        "output {output} replaced; {count} events it had not delivered moved to its replacement",
        output=old.name,
        count=kept,
    )
    if kept < len(batch):
        log.warn(
            "output {output}: {count} events could not be moved: its replacement is full",
            output=old.name,
            count=len(batch) - kept,
        )


async def _room(buffer: Any) -> None:
    while not buffer.writable:
        await buffer.whenWritable()


async def _swapDurable(service: DuctService, name: str, item: Item, timeout: float) -> None:
    """Replace an output whose buffer is on disk: drain, hold, stop, build, route, release."""
    old = service.outputs[name]
    await service.drainOutputs([old], timeout)
    service.pipeline.hold(old)
    try:
        await service.stopOutputs([old])
        new = _rebuild(service, name, item)
        if new is None:
            del service.outputs[name]
            del service.outputItems[name]
        else:
            service.outputs[name] = new
        service.pipeline.replaceOutputs(service.outputs)
        if new is not None and service.running:
            service.startOutput(new)
    finally:
        service.pipeline.release(old)
    left = old.buffer.depth
    oldPath, newPath = getattr(old.buffer, "path", None), getattr(new and new.buffer, "path", None)
    if left and oldPath == newPath:
        log.info(
            "output {output} replaced; its replacement replays the {count} events left in {path}",
            output=name,
            count=left,
            path=oldPath,
        )
    elif left:
        log.warn(
            "output {output} replaced; {count} events undelivered are kept on disk in {path}, "
            "for an output using that directory",
            output=name,
            count=left,
            path=oldPath,
        )
    else:
        log.info("output {output} replaced; it had delivered everything", output=name)


def _rebuild(service: DuctService, name: str, item: Item) -> Output | None:
    """The replacement output, or the previous settings again if it cannot be built."""
    for attempt in (item, service.outputItems[name]):
        try:
            output = service.buildOutput(attempt)
        except ConfigurationError as e:
            for problem in e.problems:
                log.error("configuration reload: {problem}", problem=str(problem))
            continue
        if attempt is not item:
            log.error("output {output}: rebuilt with its previous settings", output=name)
        service.outputItems[name] = attempt
        return output
    log.error("output {output}: cannot be rebuilt; it is gone until a reload", output=name)
    return None


def _logFailure(failure: Failure) -> None:
    log.failure("configuration reload: unexpected failure", failure)


# -- from the configuration file (SIGHUP) ------------------------------------------------


def reloadFromFile(service: DuctService, path: str) -> Deferred[bool]:
    """Read and validate ``path``, then apply it; fires True if it was applied.

    An invalid file (or one whose plugins cannot be built) changes nothing:
    each problem is logged at error level, and the agent keeps running as
    it was.
    """
    try:
        config = ConfigFile(path).load()
    except ConfigurationError as e:
        _logProblems(path, e)
        return succeed(False)
    for warning in config.warnings:
        log.warn("{warning}", warning=warning)

    def failed(failure: Failure) -> bool:
        if isinstance(failure.value, ConfigurationError):
            _logProblems(path, failure.value)
        else:
            log.failure("configuration reload from {path} failed", failure, path=path)
        return False

    d = service.reload(config)
    return d.addCallbacks(lambda _: True, failed)


def _logProblems(path: str, error: ConfigurationError) -> None:
    log.error(
        "configuration reload: {path} has {count} problem(s); keeping the running configuration",
        path=path,
        count=len(error.problems),
    )
    for problem in error.problems:
        log.error("configuration reload: {problem}", problem=str(problem))


def hangup(service: DuctService, path: str | None) -> Deferred[bool]:
    """What SIGHUP does: reopen files (for logrotate), then reload ``path`` if given."""
    log.info("SIGHUP: reopening files; reloading {path}", path=path or "(no file)")
    service.reopen()
    if path is None:
        return succeed(False)
    return reloadFromFile(service, path)
