"""One asyncio loop on a thread of its own, for libraries that only speak asyncio.

duct runs on whatever reactor twistd installs, so it cannot hand such a
library the reactor's own loop.  `runOnLoop` schedules a coroutine on a
private loop, started on first use on a daemon thread, and returns a
Deferred that fires in the reactor thread; cancelling the Deferred
cancels the coroutine.  Nothing the coroutine does blocks the reactor.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    """The shared loop, running on its thread (started here the first time)."""
    global _loop
    with _lock:
        if _loop is None:
            created = asyncio.new_event_loop()
            thread = threading.Thread(target=created.run_forever, name="duct-asyncio", daemon=True)
            thread.start()
            _loop = created
        return _loop


def runOnLoop(reactor: Any, make: Callable[[], Coroutine[Any, Any, T]]) -> Deferred[T]:
    """Run ``make()`` on the shared loop; the Deferred fires in ``reactor``'s thread.

    ``make`` is called in the loop's thread, so what it creates (sockets,
    engines) belongs to that loop.
    """

    async def call() -> T:
        return await make()

    future: Future[T] = asyncio.run_coroutine_threadsafe(call(), loop())

    def cancel(_: Deferred[T]) -> None:
        future.cancel()

    result: Deferred[T] = Deferred(cancel)

    def deliver(done: Future[T]) -> None:  # in the reactor's thread
        if result.called:
            return  # cancelled, or timed out, before the loop finished
        error = done.exception()
        if error is not None:
            result.errback(error)
        else:
            result.callback(done.result())

    def finished(done: Future[T]) -> None:  # in the loop's thread
        if not done.cancelled():
            reactor.callFromThread(deliver, done)

    future.add_done_callback(finished)
    return result
