"""Splitting one validated configuration into the parent's part and each worker's.

A listener that declares ``workers`` (the Riemann TCP and UDP listeners,
HTTP ingest with a ``listen`` of its own) on a ``tcp:``, ``ssl:``,
``unix:`` or ``udp:`` endpoint is shared: it runs in as many workers as
its own ``workers`` says, or the top-level ``workers`` if it says
nothing.  Worker ``k`` (from 1) runs every shared listener whose count is
at least ``k``, with the outputs they route to; the pool has as many
workers as the largest count.  The parent runs every other source (a
listener with ``workers: 0`` among them).  Both come from the same file,
validated whole by the parent before any worker starts; each worker reads
the file again and takes its part with `workerConfig`, so a SIGHUP reload
splits the new file the same way.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from duct.configuration import Config, Item
from duct.defaults import STATE_DIR
from duct.errors import Problem
from duct.options import declaredOptions
from duct.workers.endpoints import SHARED_TYPES, endpointType, tlsContext

WORKER_WEB = "tcp:0:interface=127.0.0.1"
"""Each worker's web server: an ephemeral local port it reports to the parent."""

__all__ = [
    "listenerWorkers",
    "parentConfig",
    "sharedListen",
    "sharedListens",
    "sharedProblems",
    "workerConfig",
    "workerCount",
]


def listenOf(item: Item) -> str | None:
    """The endpoint a listener source listens on, if it has one of its own."""
    listenOf = getattr(item.cls, "listenOf", None)
    listen = listenOf(item.config) if listenOf is not None else item.config.get("listen")
    return listen if isinstance(listen, str) else None


def sharable(item: Item) -> str | None:
    """The endpoint of a listener that workers could run, whatever its count."""
    if item.cls is None or not getattr(item.cls, "listens", False):
        return None
    if "workers" not in declaredOptions(item.cls):
        return None  # a listener that keeps state across its clients (StatsD), or no socket
    listen = listenOf(item)
    if listen is None or endpointType(listen) not in SHARED_TYPES:
        return None
    if (endpointType(listen) == "udp") != bool(getattr(item.cls, "datagrams", False)):
        return None  # an endpoint of the wrong kind: it fails in the parent, as in one process
    return listen


def listenerWorkers(config: Config, item: Item) -> int:
    """How many workers run ``item``: its own ``workers``, else the top-level one (0: none)."""
    if sharable(item) is None:
        return 0
    own = item.config.get("workers")
    return int(own if own is not None else config.get("workers") or 0)


def sharedListen(config: Config, item: Item) -> str | None:
    """The endpoint a source's workers share, or None if it runs in the parent."""
    return sharable(item) if listenerWorkers(config, item) > 0 else None


def sharedListens(config: Config) -> dict[str, int]:
    """The distinct endpoints the workers share, in the order of the sources, with their counts."""
    counts: dict[str, int] = {}
    for item in config.sources:
        listen = sharedListen(config, item)
        if listen is not None:
            counts[listen] = max(counts.get(listen, 0), listenerWorkers(config, item))
    return counts


def workerCount(config: Config) -> int:
    """How many worker processes ``config`` asks for (0: none, run everything in one)."""
    return max(sharedListens(config).values(), default=0)


def sharedProblems(config: Config) -> list[Problem]:
    """What the parent checks of the shared listeners before any worker starts.

    A TLS listener's key and certificate are read in each worker; the
    parent reads them first, so that a missing or bad file fails its start
    naming the key, rather than every worker's.
    """
    problems: list[Problem] = []
    for item in config.sources:
        listen = sharedListen(config, item)
        if listen is None or endpointType(listen) != "ssl":
            continue
        try:
            tlsContext(listen)
        except Exception as e:  # the parser raises OSError, ValueError, SSL errors...
            why = f"{type(e).__name__}: {e}"
            problems.append(Problem(item.file, item.label, "listen", f"cannot set up TLS: {why}"))
    return problems


def parentConfig(config: Config) -> Config:
    """What the parent runs: every source the workers do not, and their outputs.

    A parent left with no source and no self events keeps no output
    either: the workers own the outputs and buffers of what they receive.
    """
    sources = [item for item in config.sources if sharedListen(config, item) is None]
    outputs = config.outputs if sources or config.get("self_events") else []
    return Config(
        config.path,
        dict(config.settings),
        sources,
        list(outputs),
        config.warnings,
        config.plugins,
        config.notes,
    )


def workerConfig(config: Config, number: int, adopted: Mapping[str, str]) -> Config:
    """What worker ``number`` runs: its shared listeners, on what the parent gives it.

    Those are the listeners whose count is at least ``number``, and the
    outputs they route to.  ``adopted`` maps each endpoint the parent
    shares with this worker to what the worker listens on instead
    (`duct.workers.endpoints.adoptedListen`).  A listener on another
    endpoint (one added by a reload) is left out: its socket is bound at
    the next start.
    Each worker's state, and so each disk buffer, has a directory of its
    own (``<state_dir>/worker-<n>``, or ``<buffer path>/worker-<n>``), so
    that a restarted worker replays what it had acknowledged.
    """
    sources = []
    for item in config.sources:
        listen = sharedListen(config, item)
        if listen is None or listen not in adopted or listenerWorkers(config, item) < number:
            continue
        item = copy.deepcopy(item)
        item.config["listen"] = adopted[listen]
        sources.append(item)
    routed = routedOutputs(sources)
    stateDir = os.path.join(str(config.get("state_dir") or STATE_DIR), f"worker-{number}")
    outputs = []
    for item in config.outputs:
        if getattr(item.cls, "listens", False):
            continue  # a scrape endpoint: one port, so the parent's to serve
        if routed is not None and outputName(item) not in routed:
            continue
        item = copy.deepcopy(item)
        buffer = item.config.get("buffer")
        if isinstance(buffer, dict) and buffer.get("path"):
            buffer["path"] = os.path.join(str(buffer["path"]), f"worker-{number}")
        outputs.append(item)
    settings: dict[str, Any] = dict(config.settings)
    settings["state_dir"] = stateDir
    settings["workers"] = 0
    web = dict(config.get("web") or {})
    web["listen"] = WORKER_WEB
    settings["web"] = web
    settings["self_events"] = False
    settings["queues"] = None
    settings["jobs"] = None
    return Config(config.path, settings, sources, outputs, config.warnings, [], config.notes)


def outputName(item: Item) -> str:
    """An output's name as routes give it (an unnamed one goes by its class's name)."""
    cls = item.cls
    return str(item.config.get("name") or (cls.__name__ if cls is not None else ""))


def routedOutputs(sources: list[Item]) -> set[str] | None:
    """The names of the outputs ``sources`` route to; None for every output."""
    names: set[str] = set()
    for item in sources:
        route = item.config.get("route")
        if not route or "*" in route:
            return None
        names.update(route)
    return names
