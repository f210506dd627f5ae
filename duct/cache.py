"""Moved to `duct.lib.cache`; this path stays for plugins that import it."""

from duct.lib.cache import *  # noqa: F403
