"""twistd integration: ``twistd -n duct -c duct.yml``."""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from duct.configuration import ConfigFile, ConfigurationError
from duct.hangup import HangupReloader
from duct.service import DuctService
from duct.workers.config import workerCount
from duct.workers.parent import buildParent

log = Logger()


class Options(usage.Options):
    optParameters = [["config", "c", "/etc/duct/duct.yml", "Configuration file"]]


class TwistdService(DuctService):
    """The agent under twistd: a start that cannot happen (a port in use) ends the
    process with status 1 and a message naming the setting, not a traceback."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ConfigurationError as e:
            raise SystemExit(f"duct: cannot start:\n{e}") from None

    def startService(self) -> None:
        try:
            super().startService()
        except ConfigurationError as e:
            raise SystemExit(f"duct: cannot start:\n{e}") from None


def makeService(options: Options) -> DuctService:
    """Load and validate the configuration, then build the agent.

    An invalid configuration ends the process with status 1 and a message
    naming each file, item and key at fault, before anything starts.
    """
    from twisted.internet import reactor

    try:
        config = ConfigFile(options["config"]).load()
        for warning in config.warnings:
            log.warn("{warning}", warning=warning)
        for note in config.notes:
            log.info("note: {note}", note=note)
        path = os.path.abspath(options["config"])
        if workerCount(config):
            service = buildParent(lambda part: TwistdService(part, reactor), config, reactor, path)
        else:
            service = TwistdService(config, reactor)
    except ConfigurationError as e:
        raise SystemExit(f"duct: invalid configuration:\n{e}") from None
    # Absolute: SIGHUP (and each worker) reads it again, perhaps after a change of directory.
    target = getattr(service, "reloadTarget", None)
    reactor.callWhenRunning(installSignalHandlers, reactor, service, path, target)
    return service


def installSignalHandlers(
    reactor: Any, service: DuctService, configPath: str | None = None, target: Any = None
) -> None:
    """SIGTERM stops the agent cleanly (exit status 0); SIGHUP reopens files
    and, given ``configPath``, reloads the configuration from it
    (`duct.hangup.HangupReloader`: the file is read off the reactor thread,
    one reload at a time, and an invalid file is logged and changes nothing).

    ``target`` is what a reload applies to, if not ``service`` itself: the
    part of the file a worker, or the parent of workers, runs.

    Installed once the reactor runs, replacing its own SIGTERM handler,
    which would end the process by re-raising the signal: for a service
    manager, a requested stop that completes is a success.
    """

    stopping: list[bool] = []

    def onTerminate(signum: int, frame: Any) -> None:
        if stopping:  # a second one (a service manager signals every process of a group)
            return
        stopping.append(True)
        log.info("SIGTERM received; stopping")
        reactor.callFromThread(reactor.stop)

    reloader = HangupReloader(service if target is None else target, configPath)

    def onHangup(signum: int, frame: Any) -> None:
        reactor.callFromThread(reloader.hangup)

    signal.signal(signal.SIGTERM, onTerminate)
    signal.signal(signal.SIGHUP, onHangup)
