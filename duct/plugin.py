"""Plugins enabled by name: the base classes a plugin module subclasses.

Not to be confused with `duct.plugins`, which finds source and output
classes by dotted path.  A plugin here is named in duct.yml by its
*module*::

    plugin_path: plugins        # a directory, or a list of them
    plugins:
      - audit                   # plugins/audit.py, or a module on the Python path
      - plugin: mycompany.duct_slack
        channel: "#ops"         # the plugin's own options

The module says which class is its plugin with a module-level
``plugin = TheClass``, a subclass of `EventPlugin` or `BackgroundPlugin`.
The class declares its options as sources and outputs do (``options``, a
tuple of `duct.options.Option`); they are checked before anything starts.

Every hook (`Plugin.initialize`, `Plugin.start`, `Plugin.close`,
`EventPlugin.eventsReceived`) may return nothing, return a Deferred, or be
``async def``: `callHook` adapts them all, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from duct.interfaces import IDuctEventPlugin, IDuctPlugin
from duct.options import REQUIRED, Option


def callHook(hook: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """Call a plugin hook; always a Deferred, whatever the hook returned or raised."""
    try:
        result = hook(*args)
    except Exception:  # a plugin's hook may fail in any way
        return fail()
    if isinstance(result, Deferred):
        return result
    if type(result) is CoroutineType:
        return Deferred.fromCoroutine(result)
    return succeed(result)


@implementer(IDuctPlugin)
class Plugin:
    """What every plugin has: its options, the running service, and a lifecycle.

    :param config: this plugin's validated options (with ``plugin``, its module).
    :param duct: the running `duct.service.DuctService`: ``clock``,
        ``reactor`` and ``hostname`` are there.

    The agent calls `initialize` once at start (or when a reload adds the
    plugin), then `start` once `initialize` has finished, and `close` at
    SIGTERM or when a reload removes or changes the plugin.  `close` is
    called for every plugin whose `initialize` was called, even one that
    failed, so it should cope with a half-done setup.
    """

    log = Logger()

    options: tuple[Option, ...] = (
        Option("plugin", "string", REQUIRED, "the plugin's module, on plugin_path or Python's"),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        self.config = config
        self.duct = duct
        self.clock: Any = duct.clock
        self.name: str = config["plugin"]

    def initialize(self) -> Any:
        """Set up: open connections, create files.  May return a Deferred, or be async."""

    def start(self) -> Any:
        """Begin the plugin's work, after `initialize`; it must not wait for that work to end."""

    def close(self) -> Any:
        """Stop the work and release what `initialize` set up.  May be async."""

    def webRoutes(self) -> Mapping[str, Any]:
        """Resources to serve on the web server by path segment (see `duct.web.site`)."""
        return {}


@implementer(IDuctEventPlugin)
class EventPlugin(Plugin):
    """A plugin called with every batch of the events it handles, after routing.

    ``eventTypes`` names the types it wants (`duct.event.Event.type`:
    ``metric``, ``log``, or any type a source sets); None means every
    event.  The pipeline never waits for it: each batch is queued for the
    plugin, which is called with one batch at a time.  While
    ``max_pending`` batches wait, further ones are dropped and counted.
    A call that fails is counted and logged (at a limited rate).
    """

    eventTypes: tuple[str, ...] | None = ("metric",)

    options = (
        Option("max_pending", "integer", 16, "batches that may wait for this plugin", minimum=1),
    )

    def eventsReceived(self, events: list[Any]) -> Any:
        """Handle one batch of events.  May return a Deferred, or be async."""
        raise NotImplementedError(f"{type(self).__name__} must implement eventsReceived")


class BackgroundPlugin(Plugin):
    """A plugin that runs its own work, started by `start` and stopped by `close`.

    For instance a `twisted.internet.task.LoopingCall` on ``self.clock``,
    or a coroutine it starts with ``Deferred.fromCoroutine`` and cancels in
    `close`.  It may serve web routes with `webRoutes`.
    """


__all__ = ["BackgroundPlugin", "EventPlugin", "Plugin", "callHook"]
