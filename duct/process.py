"""Moved to `duct.lib.process`; this path stays for plugins that import it."""

from duct.lib.process import *  # noqa: F403
