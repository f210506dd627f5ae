"""Reverse DNS on the reactor: PTR lookups through `twisted.names`, cached with a bound."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.names import dns

DEFAULT_TTL = 300.0
"""Seconds a name (or the lack of one) is kept before it is looked up again."""


class ReverseNames:
    """The name of each address, from a PTR lookup, or the address itself when there is none.

    At most ``size`` answers are cached, the oldest dropped first, for
    ``ttl`` seconds each; at most ``pending`` lookups are in flight, and an
    address asked for past that is answered with itself (``overflowed``
    counts them).  A lookup never fails: an error or a timeout answers the
    address.  The resolver is `twisted.names.client`'s, reading
    ``/etc/resolv.conf``, unless one is given.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        clock: Any,
        size: int = 1000,
        ttl: float = DEFAULT_TTL,
        pending: int = 100,
        timeout: float = 5.0,
        resolver: Any = None,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.size = size
        self.ttl = ttl
        self.pending = pending
        self.timeout = timeout
        self.resolver = resolver
        self.cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.waiting: dict[str, list[Deferred[str]]] = {}
        """Who waits for each lookup in flight."""
        self.overflowed = 0
        self.failed = 0

    def _resolver(self) -> Any:
        if self.resolver is None:
            from twisted.names import client

            self.resolver = client.Resolver(resolv="/etc/resolv.conf", reactor=self.reactor)
        return self.resolver

    def cached(self, address: str) -> str | None:
        """The name of ``address`` if it is cached and fresh, else None."""
        hit = self.cache.get(address)
        if hit is None or hit[1] <= self.clock.seconds():
            return None
        return hit[0]

    def lookup(self, address: str) -> Deferred[str]:
        """Fires with the name of ``address``, or with ``address`` when it has none."""
        name = self.cached(address)
        if name is not None:
            return succeed(name)
        waiting: Deferred[str] = Deferred()
        if address in self.waiting:
            self.waiting[address].append(waiting)
            return waiting
        if len(self.waiting) >= self.pending:
            self.overflowed += 1
            return succeed(address)
        try:
            pointer = ipaddress.ip_address(address).reverse_pointer
        except ValueError:
            return succeed(address)
        self.waiting[address] = [waiting]
        d = self._resolver().lookupPointer(pointer, timeout=(self.timeout,))
        d.addCallbacks(self._answer, self._failed, callbackArgs=(address,), errbackArgs=(address,))
        return waiting

    def _answer(self, result: Any, address: str) -> None:
        answers = result[0]
        name = address
        for record in answers:
            if record.type == dns.PTR:
                name = str(record.payload.name).rstrip(".") or address
                break
        self._store(address, name)

    def _failed(self, failure: Any, address: str) -> None:
        self.failed += 1
        self._store(address, address)

    def _store(self, address: str, name: str) -> None:
        self.cache.pop(address, None)
        self.cache[address] = (name, self.clock.seconds() + self.ttl)
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        for waiting in self.waiting.pop(address, []):
            waiting.callback(name)
