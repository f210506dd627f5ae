"""One worker process: the shared listeners of a configuration, and their outputs.

It reads the configuration file the parent validated, keeps its own part
(`duct.workers.config.workerConfig`), and runs it as an agent of its own
on the inherited sockets.  It reports its web server's port to the parent
as one JSON line on stdout, logs to stderr (which the parent relays), stops cleanly
on SIGTERM, reloads on SIGHUP, and stops when the parent goes away
(its stdin closes).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import stdio
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

from duct.configuration import Config, ConfigFile, ConfigurationError
from duct.service import DuctService
from duct.workers.config import workerConfig
from duct.workers.receive import listenForHandOffs

log = Logger()


class ParentChannel(Protocol):
    """The worker's stdin and stdout: reports go out; the end of stdin means the parent is gone."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def report(self, **fields: Any) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.write(json.dumps(fields).encode() + b"\n")

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.reactor.running:
            log.warn("worker: the parent is gone; stopping")
            self.reactor.stop()


class WorkerReload:
    """What a SIGHUP reloads in a worker: its own part of the file.

    :param reloaded: called once a reload has been applied (the worker
        tells the parent which listeners it now takes connections for).
    """

    def __init__(
        self,
        service: DuctService,
        number: int,
        adopted: dict[str, str],
        reloaded: Callable[[], None] | None = None,
    ) -> None:
        self.service = service
        self.number = number
        self.adopted = adopted
        self.reloaded = reloaded

    def reopen(self) -> None:
        self.service.reopen()

    def reload(self, config: Config) -> Any:
        d = self.service.reload(workerConfig(config, self.number, self.adopted))
        return d.addCallback(self._reloaded)

    def _reloaded(self, result: Any) -> Any:
        if self.reloaded is not None:
            self.reloaded()
        return result


def run(path: str, number: int, adopted: dict[str, str], handOffFd: int | None = None) -> int:
    """Run worker ``number`` until it is stopped; its exit status.

    ``adopted`` is what `duct.workers.config.workerConfig` takes;
    ``handOffFd``, if given, brings the connections of stream listeners.
    """
    from twisted.internet import reactor as _reactor

    from duct.tap import installSignalHandlers

    reactor: Any = _reactor
    observer: Any = textFileLogObserver(sys.stderr)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    try:
        config = workerConfig(ConfigFile(path).load(), number, adopted)
        service = DuctService(config, reactor)
    except ConfigurationError as e:
        log.error("worker {number}: invalid configuration:\n{error}", number=number, error=str(e))
        return 1
    channel = ParentChannel(reactor)
    outcome: list[int] = [0]

    receiver: list[Any] = []

    def listening() -> list[int]:
        """The listeners this worker takes handed-off connections for, by index."""
        return sorted(receiver[0].factories) if receiver else []

    def start() -> None:
        if handOffFd is not None:
            receiver.append(listenForHandOffs(reactor, handOffFd))
        try:
            service.startService()
        except ConfigurationError as e:
            log.error("worker {number}: cannot start:\n{error}", number=number, error=str(e))
            outcome[0] = 1
            reactor.stop()
            return
        stdio.StandardIO(channel, reactor=reactor)
        web = service.web.port.getHost().port if service.web and service.web.port else None
        channel.report(web=web, pid=os.getpid(), number=number, listeners=listening())
        target = WorkerReload(
            service, number, adopted, lambda: channel.report(listeners=listening())
        )
        installSignalHandlers(reactor, service, path, target)

    def stop() -> Any:
        return service.stopService() if service.running else None

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return outcome[0]
