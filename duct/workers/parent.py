"""The parent of ``workers: N``: binds the shared sockets, runs and restarts the workers.

Which worker runs what: each shared listener runs in as many workers as
its own ``workers:`` says, or the top-level ``workers:`` if it says
nothing (``workers: 0`` keeps it in the parent).  The pool has as many
workers as the largest of those counts, and worker ``k`` (from 1) runs
every shared listener whose count is at least ``k``, with the outputs
they route to.  So worker 1 runs every shared listener, and a listener
with a count of 1 is simply moved out of the parent into a process of its
own.  A worker inherits only the sockets of the listeners it runs.

How the sockets are shared: the parent binds each listener's endpoint
once (a port in use fails its start before any worker runs) and keeps it
bound while workers come and go, so clients connecting while one
restarts are served by the others, or wait in the backlog, instead of
being refused.  On a stream endpoint (TCP, TLS, UNIX) the parent accepts
each connection and hands it to the worker that runs the listener and
holds the fewest (`duct.workers.handoff`), which adopts it, inside TLS
for a TLS listener (`duct.workers.receive`): left to the kernel, a few
long-lived connections pile up in one worker.  A UDP socket is inherited
by the workers that run it (``childFDs`` of ``spawnProcess``) and adopted
with ``reactor.adoptDatagramPort``; each datagram goes to one of the
workers reading.  Neither needs ``SO_REUSEPORT``: nothing else can bind
the port beside us, and there is no race for it between processes.

What each worker owns: its listeners' connections, and outputs of its own
with their own buffers (a disk buffer in ``<path>/worker-<n>``, or under
``<state_dir>/worker-<n>``).  A worker acknowledges a client only once the
events are in its own buffers, so at-least-once delivery and the bounds
on memory hold per worker exactly as in one process, without a second
hop between processes that would need its own acknowledgements and
buffer; and a worker restarted after a crash replays its own directory.

A worker that dies without being asked to is logged, counted and
started again after a delay (`duct.workers.backoff.RestartBackoff`, on
the parent's clock); the parent and the other workers keep serving.
Each worker's log goes into the parent's, a line at a time, with the
worker's number.  SIGTERM is forwarded to every worker and the parent waits for them to
drain (at most ``shutdown_timeout`` and a margin, then SIGKILL); SIGHUP
is forwarded so that each reloads the file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from duct.configuration import Config
from duct.errors import ConfigurationError, Problem
from duct.lib.deferreds import within
from duct.listening import CannotListen
from duct.workers.backoff import RestartBackoff
from duct.workers.config import parentConfig, sharedListens, sharedProblems, workerCount
from duct.workers.endpoints import adoptedListen, endpointType
from duct.workers.handoff import Distributor
from duct.workers.sockets import SharedSockets

HANDOFF_FD = 3
"""The worker's descriptor for its end of the hand-off socket pair; UDP sockets follow."""

STOP_MARGIN = 5.0
"""Seconds beyond ``shutdown_timeout`` a worker may take to stop before it is killed."""


class WorkerProcess(ProcessProtocol):
    """One worker process: reads what it reports on stdout, tells the pool when it ends."""

    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.web: int | None = None
        """The port of the worker's own web server on 127.0.0.1, once it reported it."""
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        self._partial = b""
        self._partialLog = b""

    def makeConnection(self, transport: Any) -> None:
        self.pid = getattr(transport, "pid", None)
        super().makeConnection(transport)

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if not isinstance(report, dict):
                continue
            listeners = report.get("listeners")
            if isinstance(listeners, list):
                self.pool.distributor.retarget(
                    self.number, {i for i in listeners if type(i) is int}
                )
            if isinstance(report.get("web"), int):
                self.web = report["web"]
                self.pool.serving(self)

    def errReceived(self, data: bytes) -> None:
        """The worker's log: each line goes into the parent's, with the worker's number."""
        lines = (self._partialLog + data).split(b"\n")
        self._partialLog = lines.pop()
        for line in lines:
            if line:
                self.pool.log.info(
                    "worker {number}: {line}",
                    number=self.number,
                    line=line.decode(errors="replace"),
                )

    def signal(self, name: str) -> None:
        transport: Any = self.transport
        try:
            transport.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None)
        signal = getattr(value, "signal", None)
        self.pool.ended(self, code, signal)
        self.ended.callback(None)


class Slot:
    """Worker number ``number``: the process running now, and its history."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.process: WorkerProcess | None = None
        self.startedAt = 0.0
        self.starts = 0
        self.restarts = 0
        self.backoff = RestartBackoff()
        self.pending: Any = None

    def info(self) -> dict[str, Any]:
        process = self.process
        state = "running" if process is not None and process.web else "starting"
        if process is None:
            state = "restarting" if self.pending is not None else "stopped"
        return {
            "pid": process.pid if process is not None else None,
            "state": state,
            "restarts": self.restarts,
        }


Spawner = Callable[..., Any]


class WorkerPool(Service):
    """Runs ``count`` workers on the sockets it binds; restarts those that die.

    :param reactor: spawns the processes and binds the sockets.
    :param clock: times the restarts and the stop.
    :param configPath: the file each worker reads (the parent validated it).
    :param count: how many workers.
    :param listens: the endpoints the workers share; a mapping gives how many
        workers run each (the first ones), a list has every worker run each.
    :param timeout: the stop's ``shutdown_timeout``.
    :param spawner: ``reactor.spawnProcess`` unless given (tests pass a fake).
    """

    name = "workers"
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        clock: Any,
        configPath: str,
        count: int,
        listens: list[str] | Mapping[str, int],
        timeout: float = 10.0,
        spawner: Spawner | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.configPath = configPath
        self.listens = list(listens)
        self.counts = dict(listens) if isinstance(listens, Mapping) else None
        self.timeout = timeout
        self.sockets = SharedSockets(reactor, self.listens)
        self.spawner: Spawner = spawner if spawner is not None else reactor.spawnProcess
        self.slots = [Slot(number) for number in range(1, count + 1)]
        self.distributor = Distributor(reactor, {})
        """Accepts on the stream listeners, once bound, and hands the connections out."""
        self._bound = False

    # -- starting ------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind the shared sockets; a port in use is a ConfigurationError naming it."""
        super().privilegedStartService()
        self.bind()

    def bind(self) -> None:
        if self._bound:
            return
        try:
            self.sockets.bind()
        except CannotListen as e:
            raise ConfigurationError([Problem(self.configPath, "workers", e.key, str(e))]) from None
        self._bound = True
        streams = {
            index: port
            for index, (listen, port) in enumerate(
                zip(self.listens, self.sockets.ports, strict=True)
            )
            if endpointType(listen) != "udp"
        }
        self.distributor = Distributor(self.reactor, streams)

    def startService(self) -> None:
        self.bind()
        super().startService()
        for slot in self.slots:
            self.spawn(slot)

    def listensFor(self, number: int) -> list[int]:
        """The indexes in ``listens`` of the endpoints worker ``number`` runs."""
        counts = self.counts
        return [
            index
            for index, listen in enumerate(self.listens)
            if counts is None or counts[listen] >= number
        ]

    def argv(self, number: int, adopted: dict[str, str], handOff: bool) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "duct.workers",
            "--config",
            self.configPath,
            "--number",
            str(number),
            "--adopted",
            json.dumps(adopted),
        ]
        return argv + ["--handoff-fd", str(HANDOFF_FD)] if handOff else argv

    def spawn(self, slot: Slot) -> None:
        """Start worker ``slot``: its socket pair for connections on fd 3, UDP sockets after."""
        slot.pending = None
        process = WorkerProcess(self, slot.number)
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        descriptors = self.sockets.descriptors()
        indexes = self.listensFor(slot.number)
        streams = {i for i in indexes if endpointType(self.listens[i]) != "udp"}
        theirs = self.distributor.link(slot.number, streams) if streams else None
        if theirs is not None:
            childFDs[HANDOFF_FD] = theirs.fileno()
        adopted: dict[str, str] = {}
        fd = HANDOFF_FD + 1
        for index in indexes:
            listen = self.listens[index]
            if index in streams:
                adopted[listen] = adoptedListen(listen, index)
            else:
                childFDs[fd] = descriptors[index]
                adopted[listen] = adoptedListen(listen, index, fd)
                fd += 1
        argv = self.argv(slot.number, adopted, theirs is not None)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        slot.process = process
        slot.startedAt = self.clock.seconds()
        slot.starts += 1
        try:
            self.spawner(process, argv[0], argv, env=env, childFDs=childFDs)
        finally:
            if theirs is not None:
                theirs.close()  # the worker has its own copy now
        self.log.info("worker {number} started (pid {pid})", number=slot.number, pid=process.pid)

    def serving(self, process: WorkerProcess) -> None:
        self.distributor.ready(process.number)
        self.log.info(
            "worker {number} (pid {pid}) serving; its statistics on 127.0.0.1:{web}",
            number=process.number,
            pid=process.pid,
            web=process.web,
        )

    # -- a worker that ends ----------------------------------------------------------

    def ended(self, process: WorkerProcess, code: int | None, signal: int | None) -> None:
        slot = self.slots[process.number - 1]
        if slot.process is not process:
            return
        slot.process = None
        self.distributor.unlink(slot.number)
        if not self.running:
            self.log.info(
                "worker {number} (pid {pid}) stopped, status {code}, signal {signal}",
                number=slot.number,
                pid=process.pid,
                code=code,
                signal=signal,
            )
            return
        slot.restarts += 1
        delay = slot.backoff.died(self.clock.seconds() - slot.startedAt)
        self.log.warn(
            "worker {number} (pid {pid}) died (status {code}, signal {signal}); "
            "restarting it in {delay:.1f}s ({restarts} restarts so far)",
            number=slot.number,
            pid=process.pid,
            code=code,
            signal=signal,
            delay=delay,
            restarts=slot.restarts,
        )
        slot.pending = self.clock.callLater(delay, self.spawn, slot)

    # -- signals and stopping ----------------------------------------------------------

    def processes(self) -> list[WorkerProcess]:
        return [slot.process for slot in self.slots if slot.process is not None]

    def signal(self, name: str) -> None:
        """Send signal ``name`` (``"HUP"``, ``"TERM"``) to every running worker."""
        for process in self.processes():
            process.signal(name)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.distributor.stop()  # new connections wait in the backlog for the next start
        for slot in self.slots:
            if slot.pending is not None and slot.pending.active():
                slot.pending.cancel()
            slot.pending = None
        running = self.processes()
        self.signal("TERM")
        ended = DeferredList([p.ended for p in running])
        if not await within(ended, self.timeout + STOP_MARGIN, self.clock):
            for process in running:
                if not process.ended.called:
                    self.log.warn("worker {number} did not stop; killing it", number=process.number)
                    process.signal("KILL")
            await ended
        self.sockets.close()
        self._bound = False

    def info(self) -> dict[str, dict[str, Any]]:
        """Each worker's pid, state, restarts and connections, by number."""
        return {
            str(slot.number): {**slot.info(), **self.distributor.info(slot.number)}
            for slot in self.slots
        }


class ParentReload:
    """What a SIGHUP reloads in the parent: the workers (signalled), and its own part."""

    def __init__(self, service: Any, pool: WorkerPool) -> None:
        self.service = service
        self.pool = pool

    def reopen(self) -> None:
        self.service.reopen()

    def reload(self, config: Config) -> Deferred[None]:
        if workerCount(config) != len(self.pool.slots):
            self.pool.log.warn("workers: a new number of workers applies at the next restart")
        self.pool.signal("HUP")
        result: Deferred[None] = self.service.reload(parentConfig(config))
        return result


def buildParent(make: Callable[[Config], Any], config: Config, reactor: Any, path: str) -> Any:
    """The parent agent for ``config`` (built by ``make``), with its `WorkerPool` as ``workers``.

    ``config`` is the whole configuration, already validated; what only
    the parent checks of the shared listeners (`sharedProblems`) raises
    ConfigurationError here, before anything starts.
    """
    problems = sharedProblems(config)
    if problems:
        raise ConfigurationError(problems)
    service = make(parentConfig(config))
    pool = WorkerPool(
        reactor,
        service.clock,
        path,
        workerCount(config),
        sharedListens(config),
        float(config.get("shutdown_timeout") or 0.0),
    )
    pool.setServiceParent(service)  # the last child: the first to stop
    service.workers = pool
    service.reloadTarget = ParentReload(service, pool)
    return service
