"""Moved to `duct.lib.http`; this path stays for plugins that import it."""

from duct.lib.http import *  # noqa: F403
