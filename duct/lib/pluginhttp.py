"""``plugin.http``: the HTTP client every source and output has, built on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from duct.lib.http import Client

__all__ = ["PluginHTTP"]


class PluginHTTP:
    """A descriptor: ``self.http`` is a `duct.lib.http.Client` for this plugin.

    It runs on the service's reactor (``self.duct.reactor``) and applies
    the plugin's ``timeout``, ``headers``, ``user``/``password`` and TLS
    options (declared by splicing `duct.lib.http.HTTP_CLIENT_OPTIONS` into
    ``options``).  It is built on first use, so a plugin that never
    fetches a URL never imports treq or twisted.web.  A test may assign
    another client, or replace the client's ``agent`` or ``treq``.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}Client"

    @overload
    def __get__(self, plugin: None, owner: type) -> PluginHTTP: ...

    @overload
    def __get__(self, plugin: object, owner: type | None = None) -> Client: ...

    def __get__(self, plugin: Any, owner: type | None = None) -> Any:
        if plugin is None:
            return self
        client = plugin.__dict__.get(self.slot)
        if client is None:
            from duct.lib.http import Client

            client = plugin.__dict__[self.slot] = Client.forPlugin(plugin)
        return client

    def __set__(self, plugin: Any, client: Client) -> None:
        plugin.__dict__[self.slot] = client
