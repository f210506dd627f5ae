"""Binding listeners at start, so that a port that cannot be bound fails the start.

A relay whose only job is to listen is not healthy when it cannot: the web
server and the listener sources bind while the service starts, and a
failure there is an exception naming the address, which ``twistd`` turns
into exit status 1 (`duct.tap`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class CannotListen(Exception):
    """A listener could not bind its address.

    :param key: the configuration key that names the address (``listen``).
    :param address: what it tried to listen on, as configured.
    :param reason: why, as the system said it.
    """

    def __init__(self, key: str, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.key = key
        self.address = address
        self.reason = reason


def listenNow(
    endpoint: Any, factory: Any, key: str, address: str
) -> tuple[Any, Deferred[Any] | None]:
    """Listen on ``endpoint``; raise `CannotListen` if that fails at once.

    TCP, TLS and UNIX endpoints bind synchronously, so a port in use is
    known before this returns.  Returns ``(port, None)`` once bound, or
    ``(None, pending)`` for an endpoint that binds later: ``pending`` then
    fires with the port, or fails.
    """
    d = endpoint.listen(factory)
    if not d.called:
        return None, d
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    (result,) = outcome
    if isinstance(result, Failure):
        raise CannotListen(key, address, result.getErrorMessage())
    return result, None

