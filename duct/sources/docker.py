"""Docker containers' memory, CPU and block IO, from the Engine API on its UNIX socket."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from duct.aggregators import Counter64
from duct.lib.lograte import RateLimitedLog
from duct.lib.tcpclient import reason
from duct.objects import Event, Source
from duct.options import Option
from duct.stats import counter

MAX_BODY = 16 * 1024 * 1024
"""The largest answer read from the Engine API, in bytes."""

DEFAULT_TIMEOUT = 10.0
"""Seconds one request may take when the ``timeout`` option is not set."""


class EngineError(Exception):
    """The Engine API answered with an error, or with something that is not JSON."""


_DONE = Failure(ResponseDone())


class _Body(Protocol):
    def __init__(self, finished: Deferred[bytes], limit: int) -> None:
        self.finished = finished
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            transport: Any = self.transport
            transport.stopProducing()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if self.size > self.limit:
            self.finished.errback(EngineError(f"answer larger than {self.limit} bytes"))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


@implementer(IAgentEndpointFactory)
class _UNIXEndpoints:
    """Every URL is the one socket at ``path`` (what `Agent.usingEndpointFactory` needs)."""

    def __init__(self, reactor: Any, path: str, timeout: float) -> None:
        self.reactor = reactor
        self.path = path
        self.timeout = timeout

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self.reactor, self.path, timeout=int(self.timeout) or 1)


class EngineAPI:
    """GETs JSON from the Docker Engine API at ``url``: ``unix:/path`` or ``http://host:port``."""

    def __init__(self, reactor: Any, url: str, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        if url.startswith("unix:"):
            self.base = "http://docker"
            self.agent = Agent.usingEndpointFactory(
                reactor, _UNIXEndpoints(reactor, url[len("unix:") :], timeout)
            )
        else:
            self.base = url.rstrip("/")
            self.agent = Agent(reactor, connectTimeout=timeout)

    def getJson(self, path: str) -> Deferred[Any]:
        url = f"{self.base}{path}"

        async def get() -> Any:
            headers = Headers({b"accept": [b"application/json"]})
            response = await self.agent.request(b"GET", url.encode("ascii"), headers)
            finished: Deferred[bytes] = Deferred()
            response.deliverBody(_Body(finished, MAX_BODY))
            body = await finished
            if not 200 <= response.code < 300:
                raise EngineError(f"GET {path}: {response.code} {body[:200]!r}")
            try:
                return json.loads(body)
            except ValueError:
                raise EngineError(f"GET {path}: not JSON: {body[:200]!r}") from None

        d = Deferred.fromCoroutine(get())
        d.addTimeout(self.timeout, self.reactor)
        return d


def containerName(container: dict[str, Any], detail: dict[str, Any] | None) -> str:
    """The container's first name, or its ``MARATHON_APP_ID`` when its environment has one."""
    for var in ((detail or {}).get("Config") or {}).get("Env") or []:
        if isinstance(var, str) and var.startswith("MARATHON_APP_ID="):
            return var.split("=", 1)[1].lstrip("/")
    names = container.get("Names") or [container.get("Id", "")[:12]]
    return str(names[0]).lstrip("/")


def figures(stats: dict[str, Any]) -> dict[str, float]:
    """``mem_limit``, ``mem_used`` and the ``io_<op>`` byte counts of one stats answer."""
    got: dict[str, float] = {}
    memory = stats.get("memory_stats") or {}
    for key, name in (("limit", "mem_limit"), ("usage", "mem_used")):
        if isinstance(memory.get(key), (int, float)):
            got[name] = memory[key]
    ios = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    totals: dict[str, float] = {}
    for item in ios:
        if isinstance(item, dict) and isinstance(item.get("value"), (int, float)):
            op = f"io_{str(item.get('op', '')).lower()}"
            totals[op] = totals.get(op, 0) + item["value"]  # summed over devices
    got.update(totals)
    return got


def cpuTimes(stats: dict[str, Any]) -> tuple[float, float] | None:
    """The system's and the container's CPU time so far, in nanoseconds, if the answer has them."""
    cpu = stats.get("cpu_stats") or {}
    system, total = cpu.get("system_cpu_usage"), (cpu.get("cpu_usage") or {}).get("total_usage")
    if isinstance(system, (int, float)) and isinstance(total, (int, float)):
        return float(system), float(total)
    return None


class ContainerStats(Source):
    """Memory, CPU and block IO of each running Docker container, from the Engine API.

    For each container (named by its first name, or by ``MARATHON_APP_ID``
    in its environment): ``{service}.{name}.mem_limit`` and ``.mem_used``
    in bytes; ``.cpu``, the percentage of the whole system's CPU time it
    used since the previous poll; and ``.io_read``, ``.io_write``,
    ``.io_sync``, ``.io_async`` and ``.io_total`` in bytes per second
    (as the cgroup reports them).  At most ``max_containers`` are read
    each poll, a few at a time, each request within ``timeout`` seconds
    (default 10).  If the API cannot be read,
    ``{service}.state`` is ``critical``; a container that cannot be read
    is left out, counted (``skipped``) and logged at a bounded rate.
    """

    options = (
        Option("url", "string", "unix:/var/run/docker.sock",
               "the Engine API: unix:/path/to/socket or http://host:port"),
        Option("max_containers", "integer", 1000, "most containers read each poll", minimum=1),
        Option("concurrency", "integer", 4, "containers read at the same time", minimum=1),
    )  # fmt: skip
    stats = (counter("skipped", "skipped", "skipped", "containers that could not be read"),)

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        timeout = self.config["timeout"] or DEFAULT_TIMEOUT
        self.api = EngineAPI(getattr(duct, "reactor", self.clock), self.config["url"], timeout)
        self.cpu: dict[str, tuple[float, float]] = {}
        """Each container's last system and container CPU times, by id."""
        self.skipped = 0
        self._skipLog = RateLimitedLog(self.log, self.clock, interval=60.0)

    async def get(self) -> list[Event]:
        try:
            containers = await self.api.getJson("/containers/json")
            if not isinstance(containers, list):
                raise EngineError("/containers/json is not a list")
        except Exception as e:
            error = reason(e)
            return [self.createEvent("critical", f"Error reading containers: {error}", 0, "state")]
        semaphore = DeferredSemaphore(self.config["concurrency"])
        wanted = [c for c in containers[: self.config["max_containers"]] if isinstance(c, dict)]
        reads = [semaphore.run(self._container, c) for c in wanted]
        results = await gatherResults(reads)
        self.cpu = {cid: times for cid, times, _ in results if cid and times is not None}
        return [event for _, _, events in results for event in events]

    async def _container(
        self, container: dict[str, Any]
    ) -> tuple[str, tuple[float, float] | None, list[Event]]:
        cid = str(container.get("Id") or "")
        try:
            path = quote(cid, safe="")
            stats = await self.api.getJson(f"/containers/{path}/stats?stream=false")
            detail = await self.api.getJson(f"/containers/{path}/json")
            if not isinstance(stats, dict) or not isinstance(detail, dict):
                raise EngineError("an answer that is not an object")
        except Exception as e:
            self.skipped += 1
            self._skipLog.emit("skipped", "docker {source}: container {id} could not be read:"
                               " {why}", source=self.service, id=cid[:12],
                               why=reason(e))  # fmt: skip
            return cid, None, []
        name = containerName(container, detail)
        events = []
        for key, value in figures(stats).items():
            aggregation = Counter64 if key.startswith("io_") else None
            events.append(self.createEvent("ok", "", value, f"{name}.{key}",
                                           aggregation=aggregation))  # fmt: skip
        times = cpuTimes(stats)
        last = self.cpu.get(cid)
        if times is not None and last is not None:
            systemDelta, containerDelta = times[0] - last[0], times[1] - last[1]
            if systemDelta > 0 and containerDelta >= 0:
                percent = containerDelta / systemDelta * 100
                events.append(self.createEvent("ok", f"{percent:.2f}% CPU", percent,
                                               f"{name}.cpu"))  # fmt: skip
        return cid, times, events
