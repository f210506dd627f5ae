"""Helpers for plugins, under the names the original duct gave them.

Each lives in a module of its own: `duct.lib.process` runs processes,
`duct.lib.cache` keeps a small persistent dictionary, `duct.lib.http` fetches URLs.
"""

from duct.lib.cache import PersistentCache
from duct.lib.http import BadJSON, HTTPError, getBody, getJson
from duct.lib.process import ProcessProtocol, ProcessTimeout, Timeout, fork

__all__ = [
    "BadJSON",
    "HTTPError",
    "PersistentCache",
    "ProcessProtocol",
    "ProcessTimeout",
    "Timeout",
    "fork",
    "getBody",
    "getJson",
]
