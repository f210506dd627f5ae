"""Waiting on a Deferred for a bounded time without cancelling it."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

__all__ = ["within"]


def within(d: Deferred[Any], seconds: float, clock: Any) -> Deferred[bool]:
    """Fire True when ``d`` fires, or False after ``seconds``; ``d`` is not cancelled.

    A stop uses it to wait for polls or deliveries up to ``shutdown_timeout``
    and then go on without them, leaving them to finish (or not) on their own.
    """
    waiter: Deferred[bool] = Deferred()

    def fired(result: object) -> object:
        if not waiter.called:
            waiter.callback(True)
        return result

    d.addBoth(fired)
    waiter.addTimeout(max(0.0, seconds), clock, onTimeoutCancel=lambda *_: False)
    return waiter
