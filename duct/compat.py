"""What a duct.yml written for the original duct means here.

The loader (`duct.configuration`) calls these once each item is checked:

- `addImportPath`: the original's ``path`` on a source, and the global
  ``base_path`` of the asyncio fork, put a directory on Python's path
  before the source classes are imported;
- `inheritDebug`: the global ``debug`` is every source's and output's
  default, as in the original;
- `resolveRoute`: a source with no ``route`` goes to ``default_route`` if
  there is one, else to every output that has no ``name`` (what the
  original's ``routeEvent`` does), else to every output;
- `compatNotes`: a line for each place a configuration relies on a
  meaning that differs here on purpose, for ``duct check`` to print.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from duct.configuration import Item

ALL_OUTPUTS = "*"
"""A route to every output (the asyncio fork's spelling)."""


def addImportPath(directory: Any, relativeTo: str | None = None) -> None:
    """Append ``directory`` (relative to the file ``relativeTo``) to ``sys.path`` if it exists."""
    if not isinstance(directory, str) or not directory:
        return
    path = os.path.expanduser(directory)
    if relativeTo is not None and not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(relativeTo)), path)
    path = os.path.normpath(path)
    if os.path.isdir(path) and path not in sys.path:
        sys.path.append(path)


def inheritDebug(item: Item, settings: Mapping[str, Any]) -> None:
    """The global ``debug`` as the item's default."""
    if settings.get("debug") and isinstance(item.config, Mapping) and "debug" not in item.config:
        item.config = {**item.config, "debug": True}


def unnamedOutputs(outputs: Iterable[Item]) -> list[str]:
    """The names the loader gave the outputs configured without a ``name``."""
    return [
        item.config.get("name") or item.cls.__name__
        for item in outputs
        if item.unnamed and item.cls is not None
    ]


def resolveRoute(item: Item, defaultRoute: list[str] | None, unnamed: list[str]) -> None:
    """Set the route of a source configured without one; an explicit route stays."""
    if item.config.get("route"):
        return
    if defaultRoute:
        item.config["route"] = list(defaultRoute)
    elif unnamed:
        item.config["route"] = list(dict.fromkeys(unnamed))
    # else: None, every output (the original would route the events nowhere)


def _where(item: Item) -> str:
    return f"{item.file}: {item.label}"


def _sourceNotes(item: Item, allNamed: bool) -> list[str]:
    notes: list[str] = []
    cfg = item.config
    path = cfg.get("source")
    if path == "duct.sources.riemann.RiemannTCP" and cfg.get("port") is not None:
        if cfg.get("interface") is None:
            notes.append(
                f"{_where(item)}: port {cfg['port']} listens on 127.0.0.1 only (the original "
                "listened on every interface); add interface: 0.0.0.0 for that"
            )
    if path == "duct.sources.linux.basic.Network":
        notes.append(
            f"{_where(item)}: tx_* counts bytes and packets sent and rx_* received "
            "(the original labelled received traffic tx_*)"
        )
    if path == "duct.sources.Duct":
        notes.append(
            f"{_where(item)}: duct.sources.Duct also sends every /stats figure "
            "(see duct.sources.selfstats.SelfStats)"
        )
    if allNamed and not cfg.get("route"):  # see resolveRoute
        notes.append(
            f"{_where(item)}: no route, and every output has a name: its events go to every "
            "output (the original routed them nowhere); set route or default_route"
        )
    return notes


def _outputNotes(item: Item) -> list[str]:
    notes: list[str] = []
    cfg = item.config
    if cfg.get("output") != "duct.outputs.riemann.RiemannTCP":
        return notes
    if cfg.get("tls") and cfg.get("tls_verify") and not cfg.get("ca") and not cfg.get("endpoint"):
        notes.append(
            f"{_where(item)}: tls checks the server's certificate against the system's trust "
            "store (the original checked nothing); set ca: to your CA (a Puppet CA, say)"
        )
    servers = cfg.get("server")
    if isinstance(servers, list) and len(servers) > 1 and not cfg.get("failover"):
        notes.append(
            f"{_where(item)}: the servers listed are tried in turn, with or without failover"
        )
    return notes


def compatNotes(sources: Iterable[Item], outputs: Iterable[Item]) -> list[str]:
    """A line for each meaning of the original duct this configuration relies on and
    that differs here."""
    outputs = [item for item in outputs if item.cls is not None]
    allNamed = bool(outputs) and not unnamedOutputs(outputs)
    notes: list[str] = []
    sources = [item for item in sources if item.cls is not None]
    for item in sources:
        notes += _sourceNotes(item, allNamed)
    for item in outputs:
        notes += _outputNotes(item)
    return notes
