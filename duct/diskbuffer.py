"""Moved to `duct.buffers` and `duct.buffers.disk`; this path stays for plugins that import it."""

from duct.buffers import *  # noqa: F403
from duct.buffers.disk import *  # noqa: F403
