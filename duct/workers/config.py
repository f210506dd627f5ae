"""Splitting one validated configuration into the parent's part and each worker's.

A worker runs the listener sources that listen on a plain ``tcp:``
endpoint (the Riemann TCP listener, HTTP ingest, ...), with the outputs
they route to, and nothing else.  The parent runs every other source.
Both come from the same file, validated whole by the parent before any
worker starts; each worker reads the file again and takes its part with
`workerConfig`, so a SIGHUP reload splits the new file the same way.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from duct.configuration import Config, Item
from duct.defaults import STATE_DIR

WORKER_WEB = "tcp:0:interface=127.0.0.1"
"""Each worker's web server: an ephemeral local port it reports to the parent."""


def workerCount(config: Config) -> int:
    """How many worker processes ``config`` asks for (0: none, run everything in one)."""
    return int(config.get("workers") or 0)


def sharedListen(item: Item) -> str | None:
    """The endpoint a source's workers share, or None if it runs in the parent.

    Only listeners on a plain TCP endpoint are shared: a socket the parent
    binds can be adopted as it is, whereas TLS or UNIX endpoints would need
    their wrapping rebuilt in the worker.
    """
    if not getattr(item.cls, "listens", False):
        return None
    listen = item.config.get("listen")
    if isinstance(listen, str) and listen.startswith("tcp:"):
        return listen
    return None


def sharedListens(config: Config) -> list[str]:
    """The distinct endpoints the workers share, in the order of the sources."""
    seen: list[str] = []
    for item in config.sources:
        listen = sharedListen(item)
        if listen is not None and listen not in seen:
            seen.append(listen)
    return seen


def parentConfig(config: Config) -> Config:
    """What the parent runs: every source the workers do not, and their outputs.

    A parent left with no source and no self events keeps no output
    either: the workers own the outputs and buffers of what they receive.
    """
    sources = [item for item in config.sources if sharedListen(item) is None]
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


def adoptedListen(index: int, listen: str) -> str:
    """The endpoint a worker listens on instead: the inherited descriptor ``index``.

    Twisted's ``systemd:`` endpoint adopts a descriptor passed from fd 3 up
    (``LISTEN_FDS``/``LISTEN_PID``, which `duct.workers.__main__` sets).
    """
    parts = listen.replace("\\:", "\0").split(":")[2:]  # an escaped colon is no separator
    options = dict(part.split("=", 1) for part in parts if "=" in part)
    domain = "INET6" if "\0" in options.get("interface", "") else "INET"
    return f"systemd:domain={domain}:index={index}"


def workerConfig(config: Config, number: int, listens: list[str]) -> Config:
    """What worker ``number`` runs: the shared listeners, on the inherited sockets.

    ``listens`` are the endpoints the parent bound, in the order of the
    descriptors the worker inherited.  A listener on another endpoint (one
    added by a reload) is left out: its socket is bound at the next start.
    Each worker's state, and so each disk buffer, has a directory of its
    own (``<state_dir>/worker-<n>``, or ``<buffer path>/worker-<n>``), so
    that a restarted worker replays what it had acknowledged.
    """
    sources = []
    for item in config.sources:
        listen = sharedListen(item)
        if listen is None or listen not in listens:
            continue
        item = copy.deepcopy(item)
        item.config["listen"] = adoptedListen(listens.index(listen), listen)
        sources.append(item)
    stateDir = os.path.join(str(config.get("state_dir") or STATE_DIR), f"worker-{number}")
    outputs = []
    for item in config.outputs:
        if getattr(item.cls, "listens", False):
            continue  # a scrape endpoint: one port, so the parent's to serve
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
