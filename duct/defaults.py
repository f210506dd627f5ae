"""Defaults that several parts of duct share, defined once."""

from __future__ import annotations

from typing import Any

STATE_DIR = "/var/lib/duct"
"""Where outputs keep disk buffers and stores when ``state_dir`` is not set."""


def stateDir(duct: Any) -> str:
    """The ``state_dir`` of the service a plugin runs in (`STATE_DIR` if it sets none)."""
    config = getattr(duct, "config", None) or {}
    return str(config.get("state_dir") or STATE_DIR)


MAX_EVENTS = 100_000
"""Most events an output's memory buffer holds (``maxsize``)."""

MAX_BYTES = 64 * 1024 * 1024
"""Most bytes an output's memory buffer holds (``max_bytes``)."""

MAX_DISK_BYTES = 1024 * 1024 * 1024
"""Most bytes a disk buffer holds on disk."""

RING_SIZE = 10_000
"""Most recent events ``/events`` keeps (``web: {ring_size}``)."""

RING_MAX_BYTES = 32 * 1024 * 1024
"""Most bytes those recent events hold (``web: {ring_max_bytes}``)."""
