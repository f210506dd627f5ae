"""The statistics of a parent and its workers: each process's snapshot, and their roll-up.

Each worker serves its own ``/stats`` on an ephemeral port of 127.0.0.1
that it reported to the parent; the parent fetches them when asked.  Its
``/stats`` is then `duct.stats.combine` of every snapshot (its own and the
workers'), as if one process had taken it, each statistic combined by its
roll-up (sum, min or max), with ``workers`` holding each worker's pid,
state, restarts and own snapshot, and ``parent`` the parent's.  Its
``/metrics`` has every process's figures with a ``worker`` label
(``parent`` for its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import Metric
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from duct.stats import combine, snapshot

log = Logger()

FETCH_TIMEOUT = 5.0
"""Seconds a worker has to answer; one that does not is shown without its figures."""


async def fetchSnapshot(reactor: Any, port: int, token: str | None) -> dict[str, Any] | None:
    """A worker's snapshot from its web server, or None if it does not answer."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool)
    headers = Headers({b"authorization": [f"Bearer {token}".encode()]} if token else {})
    url = f"http://127.0.0.1:{port}/stats".encode()
    try:
        d = agent.request(b"GET", url, headers)
        d.addTimeout(FETCH_TIMEOUT, reactor)
        response = await d
        body = await readBody(response)
        if response.code != 200:
            return None
        value = json.loads(body)
    except Exception as e:  # a worker restarting, or gone: its figures are left out
        log.debug("worker statistics on port {port}: {error}", port=port, error=str(e))
        return None
    return value if isinstance(value, dict) else None


async def workerSnapshots(service: Any) -> dict[str, dict[str, Any] | None]:
    """Each worker's snapshot by number (None for one not serving now)."""
    pool = service.workers
    token = (service.config.get("web") or {}).get("token")
    numbers: list[str] = []
    pending: list[Deferred[dict[str, Any] | None]] = []
    for slot in pool.slots:
        numbers.append(str(slot.number))
        process = slot.process
        if process is None or process.web is None:
            pending.append(Deferred.fromCoroutine(_none()))
        else:
            pending.append(
                Deferred.fromCoroutine(fetchSnapshot(service.reactor, process.web, token))
            )
    results = await gatherResults(pending)
    return dict(zip(numbers, results, strict=True))


async def _none() -> None:
    return None


def merged(
    parent: Mapping[str, Any], workers: Mapping[str, Any], info: Mapping[str, Any]
) -> dict[str, Any]:
    """The parent's ``/stats``: every snapshot combined, then each process's own."""
    present = [snap for snap in workers.values() if snap is not None]
    result = combine([parent, *present])
    result["parent"] = dict(parent)
    result["workers"] = {
        number: {**info.get(number, {}), "stats": workers.get(number)} for number in info
    }
    return result


async def gatherStats(service: Any) -> dict[str, Any]:
    """What the parent's ``/stats`` answers."""
    own = snapshot(service)
    workers = await workerSnapshots(service)
    return merged(own, workers, service.workers.info())


def labelled(snapshots: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[Metric]:
    """The metric families of several snapshots, each sample labelled with its ``worker``."""
    from duct.web.metrics import families

    byName: dict[str, Metric] = {}
    for worker, snap in snapshots:
        for family in families(snap):
            merged = byName.get(family.name)
            if merged is None:
                merged = byName[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
    yield from byName.values()


async def gatherFamilies(service: Any) -> list[Metric]:
    """What the parent's ``/metrics`` answers."""
    own = snapshot(service)
    workers = await workerSnapshots(service)
    snaps = [("parent", own)] + [(n, s) for n, s in workers.items() if s is not None]
    return list(labelled(snaps))
