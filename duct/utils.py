"""Helpers for plugins, under the names the original duct gave them.

Each lives in a module of its own: `duct.process` runs processes,
`duct.cache` keeps a small persistent dictionary, `duct.http` fetches URLs.
"""

from duct.cache import PersistentCache
from duct.http import BadJSON, HTTPError, getBody, getJson
from duct.process import ProcessProtocol, ProcessTimeout, Timeout, fork

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
