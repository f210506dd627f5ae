"""The base of the system sources: a sample from here, or from the SSH host.

A `SystemSource` polls by taking a sample, from psutil on this machine or
(with ``use_ssh``) from the remote host's /proc over SSH, and turning it
into events.  Both samples have the same shape, so the events are the same.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from duct.objects import Source


class SystemSource(Source):
    """A sample from psutil here, or from the SSH host's /proc, turned into events.

    A subclass gives `localSample`, `remoteSample` (async) and `events`;
    both samples have the same shape.
    """

    sync = True  # a remote poll waits on the network: never two at once

    def get(self) -> Any:
        if self.useSSH:
            return Deferred.fromCoroutine(self._remoteEvents())
        return self.events(self.localSample())

    async def _remoteEvents(self) -> Any:
        return self.events(await self.remoteSample())

    async def _text(self, path: str) -> str:
        return (await self.readFile(path)).decode("utf-8", errors="replace")

    def localSample(self) -> Any:
        raise NotImplementedError

    async def remoteSample(self) -> Any:
        raise NotImplementedError

    def events(self, sample: Any) -> Any:
        raise NotImplementedError


__all__ = ["SystemSource"]
