"""How a reload replaces an output it changed, without losing what it holds.

A memory buffer moves its backlog into the replacement (`handOver`); a
disk buffer stays in its directory, which the replacement opens and
replays once the old output has released it (`swapDurable`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from duct.buffers.memory import MemoryBuffer
from duct.configuration import ConfigurationError, Item
from duct.lib.deferreds import within
from duct.objects import Output
from duct.roster import Roster, stopOutputs

log = Logger()


async def handOver(roster: Roster, old: Output, new: Output, timeout: float) -> None:
    """Drain and stop a replaced output; move what it could not deliver to ``new``.

    ``new`` is already routed to, so what it received meanwhile stays
    ahead of the old backlog; each event keeps its own time.
    """
    await roster.drain([old], timeout)
    await stopOutputs([old])
    buffer = old.buffer
    assert isinstance(buffer, MemoryBuffer), "a disk buffer is handed over by its directory"
    writing = buffer.depth - len(buffer)  # in flight: neither waiting nor acknowledged
    if writing:
        log.warn(
            "output {output}: {count} events were being written when it was replaced; "
            "they are lost if that write fails",
            output=old.name,
            count=writing,
        )
    if not len(buffer):
        log.info("output {output} replaced; it had delivered everything", output=old.name)
        return
    if new.buffer.overflow == "block" and not new.buffer.writable:
        await within(Deferred.fromCoroutine(_room(new.buffer)), timeout, roster.clock)
    offered, kept = buffer.moveInto(new, old.batchEvents)
    log.info(
        "output {output} replaced; {count} events it had not delivered moved to its replacement",
        output=old.name,
        count=kept,
    )
    if kept < offered:
        log.warn(
            "output {output}: {count} events could not be moved: its replacement is full",
            output=old.name,
            count=offered - kept,
        )


async def _room(buffer: Any) -> None:
    while not buffer.writable:
        await buffer.whenWritable()


async def swapDurable(
    roster: Roster,
    name: str,
    items: tuple[Item, Item],
    timeout: float,
    build: Callable[[Item], Output],
    start: Callable[[Output], None] | None,
) -> None:
    """Replace an output whose buffer is on disk: drain, hold, stop, build, route, release.

    The replacement is built only once the old output has closed its
    directory, since both would use it.  ``items`` are the new item and
    the running one, tried in that order; ``start`` starts the
    replacement (None while the agent is not running).
    """
    old = roster.outputs[name]
    await roster.drain([old], timeout)
    roster.hold(old)
    try:
        await stopOutputs([old])
        new, used = _rebuild(name, items, build)
        outputs = dict(roster.outputs)
        if new is None:
            del outputs[name]
            roster.swapOutputs(outputs, {})
        else:
            outputs[name] = new
            roster.swapOutputs(outputs, {name: used})
            if start is not None:
                start(new)
    finally:
        roster.release(old)
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


def _rebuild(
    name: str, attempts: tuple[Item, Item], build: Callable[[Item], Output]
) -> tuple[Output | None, Item]:
    """The replacement and its item, or the previous settings again if it cannot be built."""
    item = attempts[0]
    for attempt in attempts:
        try:
            output = build(attempt)
        except ConfigurationError as e:
            for problem in e.problems:
                log.error("configuration reload: {problem}", problem=str(problem))
            continue
        if attempt is not item:
            log.error("output {output}: rebuilt with its previous settings", output=name)
        return output, attempt
    log.error("output {output}: cannot be rebuilt; it is gone until a reload", output=name)
    return None, item
