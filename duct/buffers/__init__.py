"""The bounded buffers between the pipeline and an output's writer.

- `duct.buffers.base`: `Batch` and `BufferBase`, what every buffer shares;
- `duct.buffers.memory`: `MemoryBuffer`;
- `duct.buffers.disk`: `DiskBuffer`, which survives a crash;
- `duct.buffers.segments`: the disk buffer's record format, checkpoint and files;
- `duct.buffers.recovery`: checking and repairing those files when it opens;
- `duct.buffers.readahead`: its records in memory, and its unacked batches.

`bufferFromConfig` builds the one an output's ``buffer:`` settings ask
for.  The disk buffer (and protobuf with it) is imported only when used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from duct.buffers.memory import OVERFLOW_POLICIES, Batch, BufferBase, MemoryBuffer
from duct.defaults import MAX_BYTES, MAX_DISK_BYTES, MAX_EVENTS, STATE_DIR

if TYPE_CHECKING:
    from duct.buffers.disk import DiskBuffer

__all__ = [
    "BUFFER_KEYS",
    "OVERFLOW_POLICIES",
    "SYNC_MODES",
    "Batch",
    "BufferBase",
    "MemoryBuffer",
    "bufferDirectory",
    "bufferFromConfig",
    "checkBufferSettings",
    "directoryProblem",
]

SYNC_MODES = ("always", "interval", "never")
BUFFER_KEYS = ("type", "path", "max_bytes", "sync", "sync_interval")


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"buffer.{key}: expected {expected}, got {value!r}")


def checkBufferSettings(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """An output's ``buffer`` settings, checked; ValueError names the bad key."""
    settings = config.get("buffer") or {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"buffer: expected a mapping, got {settings!r}")
    for key in settings:
        _check(key in BUFFER_KEYS, key, f"one of the keys {', '.join(BUFFER_KEYS)}", key)
    kind = settings.get("type", "memory")
    _check(kind in ("memory", "disk"), "type", "memory or disk", kind)
    maxBytes = settings.get("max_bytes")
    ok = maxBytes is None or (type(maxBytes) is int and maxBytes > 0)
    _check(ok, "max_bytes", "a positive integer", maxBytes)
    if kind == "memory":
        for key in ("path", "sync", "sync_interval"):
            _check(key not in settings, key, "no value: it is for type disk", settings.get(key))
        return settings
    sync = settings.get("sync", "interval")
    _check(sync in SYNC_MODES, "sync", " or ".join(SYNC_MODES), sync)
    interval = settings.get("sync_interval", 1.0)
    ok = type(interval) in (int, float) and math.isfinite(interval) and interval > 0
    _check(ok, "sync_interval", "a finite number of seconds", interval)
    path = settings.get("path")
    _check(path is None or (isinstance(path, str) and path != ""), "path", "a directory", path)
    return settings


def bufferDirectory(name: str, settings: Mapping[str, Any], stateDir: str) -> str:
    """Where the disk buffer of the output ``name`` keeps its files."""
    path = settings.get("path")
    if isinstance(path, str):
        return path
    return os.path.join(stateDir, "buffers", name.replace(os.sep, "_").lstrip(".") or "out")


def directoryProblem(directory: str) -> str | None:
    """Why ``directory`` cannot be made or written to, or None if it can.

    What a disk buffer will do at start (make it, then write in it), checked
    without making anything: `duct check` and the loader report the same.
    """
    path = os.path.abspath(directory)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"cannot make the directory {directory}: {path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        verb = "write in" if path == os.path.abspath(directory) else "make"
        return f"cannot {verb} the directory {directory}: {path} is not writable"
    return None


def bufferFromConfig(
    name: str,
    clock: Any,
    config: Mapping[str, Any],
    stateDir: str = STATE_DIR,
    codec: str = "event",
    expiring: bool = False,
    grouped: bool = False,
) -> MemoryBuffer | DiskBuffer:
    """The buffer an output's config asks for; ValueError names a bad ``buffer`` key.

    ``buffer.max_bytes`` replaces the output's ``max_bytes``; a disk buffer
    defaults to 1 GiB on disk, under ``<state_dir>/buffers/<output name>``.
    An ``expiring`` memory buffer keeps each event's deadline, and a
    ``grouped`` one takes items of several events (a disk buffer does
    neither).
    """
    settings = checkBufferSettings(config)
    maxBytes = settings.get("max_bytes")
    maxsize = config.get("maxsize") or MAX_EVENTS
    overflow = config.get("overflow") or "block"
    if settings.get("type", "memory") == "memory":
        maxBytes = maxBytes or config.get("max_bytes") or MAX_BYTES
        return MemoryBuffer(
            name,
            clock,
            maxsize=maxsize,
            max_bytes=maxBytes,
            overflow=overflow,
            expiring=expiring,
            grouped=grouped,
        )
    from duct.buffers.disk import DiskBuffer

    return DiskBuffer(
        name,
        clock,
        bufferDirectory(name, settings, stateDir),
        maxsize=maxsize,
        max_bytes=maxBytes or MAX_DISK_BYTES,
        overflow=overflow,
        sync=settings.get("sync", "interval"),
        sync_interval=float(settings.get("sync_interval", 1.0)),
        codec=codec,
    )
