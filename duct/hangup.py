"""SIGHUP: reopen files, read the configuration file again, apply it.

The file is read and validated off the reactor thread, within the limits of
`duct.yamlfile`, so that a slow, huge or hostile file never stops the agent
from serving; only the result is applied on the reactor thread
(`duct.reload.applyConfig`).  Plugin modules a new file names are imported
on that thread too.

Signals that arrive while a reload is in progress are coalesced: at most one
more reload waits, and it reads the file as it is when it begins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.configuration import Config, ConfigFile
from duct.errors import ConfigurationError

__all__ = ["HangupReloader", "Runner", "hangup", "inline", "reloadFromFile", "threadRunner"]

log = Logger()

Runner = Callable[[Callable[[], Config]], "Deferred[Config]"]
"""Runs a blocking call somewhere and fires with its result (or its failure)."""


def inline(call: Callable[[], Config]) -> Deferred[Config]:
    """Run ``call`` at once, on this thread: for a reactor without threads (a Clock)."""
    return maybeDeferred(call)


def threadRunner(reactor: Any) -> Runner:
    """Run calls on ``reactor``'s thread pool; `inline` if it has none (a test's Clock)."""
    getThreadPool = getattr(reactor, "getThreadPool", None)
    if getThreadPool is None:
        return inline

    def run(call: Callable[[], Config]) -> Deferred[Config]:
        return deferToThreadPool(reactor, getThreadPool(), call)

    return run


def _readConfig(path: str) -> Config:
    return ConfigFile(path).load()  # touches no shared state: safe off the reactor


def reloadFromFile(agent: Any, path: str, runner: Runner | None = None) -> Deferred[bool]:
    """Read and validate ``path`` with ``runner``, then apply it; fires True if applied.

    ``runner`` defaults to the thread pool of the agent's reactor.  An
    invalid file (or one whose plugins cannot be built) changes nothing:
    each problem is logged at error level, and the agent keeps running as
    it was.
    """
    run = runner or threadRunner(getattr(agent, "reactor", None))

    def apply(config: Config) -> Deferred[bool]:
        for warning in config.warnings:
            log.warn("{warning}", warning=warning)
        return agent.reload(config).addCallback(lambda _: True)

    def failed(failure: Failure) -> bool:
        if isinstance(failure.value, ConfigurationError):
            _logProblems(path, failure.value)
        else:
            log.failure("configuration reload from {path} failed", failure, path=path)
        return False

    d = run(lambda: _readConfig(path))
    return d.addCallback(apply).addErrback(failed)


def _logProblems(path: str, error: ConfigurationError) -> None:
    log.error(
        "configuration reload: {path} has {count} problem(s); keeping the running configuration",
        path=path,
        count=len(error.problems),
    )
    for problem in error.problems:
        log.error("configuration reload: {problem}", problem=str(problem))


def hangup(agent: Any, path: str | None, runner: Runner | None = None) -> Deferred[bool]:
    """What one SIGHUP does: reopen files (for logrotate), then reload ``path`` if given."""
    log.info("SIGHUP: reopening files; reloading {path}", path=path or "(no file)")
    agent.reopen()
    if path is None:
        return succeed(False)
    return reloadFromFile(agent, path, runner)


class HangupReloader:
    """SIGHUP for a running agent: one reload at a time, at most one waiting."""

    def __init__(self, agent: Any, path: str | None, runner: Runner | None = None) -> None:
        self.agent, self.path = agent, path
        self.runner = runner
        self.busy = False
        self._waiting: list[Deferred[bool]] = []

    def hangup(self) -> Deferred[bool]:
        """Reopen files and reload, or have the reload in progress followed by one more.

        Fires True once a reload that covers this signal has applied the file.
        """
        if not self.busy or self.path is None:
            return self._begin()
        self.agent.reopen()
        if not self._waiting:
            log.info("SIGHUP during a reload: {path} is read again once it ends", path=self.path)
        waiter: Deferred[bool] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def _begin(self) -> Deferred[bool]:
        self.busy = self.path is not None
        d = hangup(self.agent, self.path, self.runner)
        return d.addBoth(self._ended)

    def _ended(self, applied: bool) -> bool:
        self.busy = False
        waiting, self._waiting = self._waiting, []
        if waiting:
            self.busy = True
            d = reloadFromFile(self.agent, self.path or "", self.runner).addBoth(self._ended)
            for waiter in waiting:
                d.addCallback(_fire, waiter)
        return applied


def _fire(result: bool, waiter: Deferred[bool]) -> bool:
    waiter.callback(result)
    return result
