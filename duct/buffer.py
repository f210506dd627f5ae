"""Moved to `duct.buffers.memory`; this path stays for plugins that import it."""

from duct.buffers.memory import *  # noqa: F403
