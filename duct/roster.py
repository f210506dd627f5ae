"""Roster: the running outputs and sources, their items and their routing.

One object holds them, so that the invariants between the outputs, the
items they were built from, the sources and the pipeline's routes are kept
in one place.  The service (at start and stop), its watchdog and a reload
all change the running set through these methods and never by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from duct.configuration import Item
from duct.defaults import STATE_DIR
from duct.lib.deferreds import within
from duct.objects import Output, Source
from duct.pipeline import Pipeline

log = Logger()


@dataclass(frozen=True)
class Running:
    """A plain snapshot of what runs, for `duct.reload.diff`.

    ``outputs`` maps each output's name to the item it was built from;
    ``sources`` lists, in order, each source (any handle will do) with the
    item it was built from and the hostname its events carry; ``stateDir``
    is the ``state_dir`` the outputs were built under.
    """

    outputs: Mapping[str, Item] = field(default_factory=dict)
    sources: list[tuple[Any, Item, str]] = field(default_factory=list)
    stateDir: str = STATE_DIR


class Roster:
    """The running outputs and sources; the only thing that changes them.

    :param pipeline: routes each source's events to the outputs.
    :param clock: bounds the waits of `stopSources` and `retire`.
    """

    def __init__(self, pipeline: Pipeline, clock: Any) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.outputs: dict[str, Output] = {}
        """The running outputs by name (read it; change it through the roster)."""
        self.sources: list[Source] = []
        """The running sources, in configuration order."""
        self._outputItems: dict[str, Item] = {}
        self._items: dict[Source, Item] = {}

    # -- reading -------------------------------------------------------------------

    def itemOf(self, source: Source) -> Item:
        return self._items[source]

    def outputItem(self, name: str) -> Item:
        return self._outputItems[name]

    def holds(self, source: Source) -> bool:
        """Whether ``source`` is still running (not removed or replaced)."""
        return source in self._items

    def snapshot(self, stateDir: str) -> Running:
        return Running(
            dict(self._outputItems),
            [(s, self._items[s], s.hostname) for s in self.sources],
            stateDir,
        )

    # -- outputs -------------------------------------------------------------------

    def swapOutputs(self, outputs: Mapping[str, Output], items: Mapping[str, Item]) -> None:
        """Run ``outputs`` from now on, in their order, and route every source to them.

        ``items`` gives the item of each output whose item changes; an
        output kept without one keeps its item.  An output no longer named
        is forgotten, with its item.
        """
        self.outputs.clear()
        self.outputs.update(outputs)
        self._outputItems = {
            name: items.get(name) or self._outputItems[name] for name in self.outputs
        }
        self.pipeline.replaceOutputs(self.outputs)

    def addOutput(self, output: Output, item: Item) -> None:
        self.swapOutputs({**self.outputs, output.name: output}, {output.name: item})

    async def retire(self, outputs: list[Output], timeout: float, when: str) -> int:
        """Let ``outputs`` deliver for up to ``timeout`` seconds, log what is left, stop them.

        Returns how many events were left undelivered.
        """
        await self.drain(outputs, timeout)
        total = reportUndelivered(outputs, when)
        await stopOutputs(outputs)
        return total

    async def drain(self, outputs: list[Output], seconds: float) -> None:
        """Let ``outputs`` deliver what they hold, for up to ``seconds``."""
        drained = DeferredList([o.flush() for o in outputs], consumeErrors=True)
        drained.addTimeout(max(0.0, seconds), self.clock, onTimeoutCancel=lambda *_: None)
        await drained

    def hold(self, output: Output) -> None:
        """Hold back the events routed to ``output`` (see `Pipeline.hold`)."""
        self.pipeline.hold(output)

    def release(self, output: Output) -> None:
        self.pipeline.release(output)

    # -- sources -------------------------------------------------------------------

    def addSource(self, source: Source, item: Item) -> None:
        """Run ``source`` (built for this roster's pipeline), routed from its config."""
        self.pipeline.register(source)
        self._items[source] = item
        self.sources.append(source)

    def replaceSources(self, sources: Iterable[tuple[Source, Item]]) -> None:
        """Run exactly ``sources``, in order; every one is routed anew.

        Sources no longer listed must have been stopped with `stopSources`.
        """
        self.sources[:] = []
        self._items = {}
        for source, item in sources:
            self.addSource(source, item)

    def replaceSource(self, old: Source, new: Source) -> None:
        """Run ``new`` in ``old``'s place, from the same item; ``old`` is stopped."""
        item = self._items.pop(old)
        self.sources[self.sources.index(old)] = new
        self.pipeline.register(new)
        self._items[new] = item
        self.stopSource(old)

    def stopSource(self, source: Source) -> Deferred[Any]:
        """Stop ``source``'s timer; unroute it once its poll in flight has delivered.

        A poll still in flight may deliver late, to the outputs it was
        routed to, so the route stays until then.
        """

        def unroute(result: object) -> object:
            if source not in self._items:
                self.pipeline.unregister(source)
            return result

        return maybeDeferred(source.stopTimer).addBoth(unroute)

    async def stopSources(self, sources: list[Source], timeout: float, when: str) -> None:
        """Stop ``sources``, awaiting their polls in flight for up to ``timeout`` seconds.

        A poll that never finishes must not hold a stop or a reload forever:
        past ``timeout``, the sources still polling are logged and left.
        """
        stopping = DeferredList([self.stopSource(s) for s in sources], consumeErrors=True)
        if sources and not await within(stopping, timeout, self.clock):
            log.warn(
                "sources {services} still polling after {timeout}s; not waiting for them {when}",
                services=", ".join(s.service for s in sources if s.running),
                timeout=timeout,
                when=when,
            )

    async def removeSources(self, sources: list[Source], timeout: float, when: str) -> None:
        """Take ``sources`` out of the running set, then stop them (see `stopSources`)."""
        for source in sources:
            if source in self._items:
                self.sources.remove(source)
                del self._items[source]
        await self.stopSources(sources, timeout, when)


def reportUndelivered(outputs: list[Output], when: str) -> int:
    """Log, per output, the events it still holds; return their total."""
    for output in outputs:
        left = output.buffer.depth
        if left and output.buffer.durable and when == "at shutdown":
            log.info(
                "output {output}: {count} events undelivered, kept on disk for the next start",
                output=output.name,
                count=left,
            )
        elif left and output.buffer.durable:
            log.info(
                "output {output}: {count} events undelivered {when}, kept on disk in {path}",
                output=output.name,
                count=left,
                when=when,
                path=getattr(output.buffer, "path", "?"),
            )
        elif left:
            log.warn(
                "output {output}: {count} events left undelivered {when}, and lost",
                output=output.name,
                count=left,
                when=when,
            )
    return sum(o.buffer.depth for o in outputs)


async def stopOutputs(outputs: list[Output]) -> None:
    await DeferredList([maybeDeferred(o.stop) for o in outputs], consumeErrors=True)
