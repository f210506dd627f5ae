"""elasticsearch: a cluster's health, size and per-node operation rates."""

from __future__ import annotations

from typing import Any

from duct.aggregators import Counter64
from duct.lib.http import HTTP_CLIENT_OPTIONS
from duct.objects import Event, Source
from duct.options import Option

STATUS = {"green": (2, "ok"), "yellow": (1, "warning"), "red": (0, "critical")}

CLUSTER = (  # (path in _cluster/stats, service, description)
    (("nodes", "count", "total"), "cluster.nodes", "Nodes"),
    (("indices", "count"), "indices", "Indices"),
    (("indices", "shards", "total"), "shards.total", "Shards"),
    (("indices", "shards", "primaries"), "shards.primary", "Primary shards"),
    (("indices", "docs", "count"), "documents.total", "Documents"),
    (("indices", "store", "size_in_bytes"), "documents.size", "Store size"),
)
NODE = (  # (path in a node of _nodes/stats, name): counters, as rates
    (("indices", "search", "query_total"), "search"),
    (("indices", "indexing", "delete_total"), "delete"),
    (("indices", "indexing", "index_total"), "index"),
    (("indices", "get", "total"), "get"),
)


def dig(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def holdsData(node: dict[str, Any]) -> bool:
    """False for a client (coordinating-only) node, which holds no shard."""
    if dig(node, ("attributes", "client")) == "true":
        return False
    roles = node.get("roles")
    return roles is None or any(str(role).startswith("data") for role in roles)


class ElasticSearch(Source):
    """An Elasticsearch cluster from ``_cluster/stats`` and ``_nodes/stats`` at ``url``.

    ``{service}.cluster.status``: 2 green (``ok``), 1 yellow
    (``warning``), 0 red (``critical``); ``.cluster.nodes``, ``.indices``,
    ``.shards.total``, ``.shards.primary``, ``.documents.total``,
    ``.documents.size`` (bytes) and ``.documents.rate`` (documents per
    second).  For each node holding data, by its host:
    ``.nodes.{host}.search``, ``.index``, ``.delete`` and ``.get`` per
    second.  ``{service}.state``: 1, ``ok``; 0, ``critical``, with the
    reason, when the cluster cannot be reached, refuses the credentials,
    answers an error, or nothing within ``timeout``.
    """

    sync = True
    options = (
        Option("url", "string", "http://localhost:9200", "Elasticsearch's base URL"),
        *HTTP_CLIENT_OPTIONS,
    )

    async def get(self) -> list[Event]:
        url = self.config["url"].strip().rstrip("/")
        try:
            stats = await self.http.getJson(f"{url}/_cluster/stats")
            nodes = await self.http.getJson(f"{url}/_nodes/stats")
        except Exception as e:
            return [self.createEvent("critical", f"Elasticsearch {url}: {e}", 0, "state")]
        status = STATUS.get(str(dig(stats, ("status",))))
        if status is None:
            why = f"Elasticsearch {url}: no cluster status in _cluster/stats"
            return [self.createEvent("critical", why, 0, "state")]
        metric, state = status
        events = [self.createEvent(state, f"Status {stats['status']}", metric, "cluster.status")]
        for path, name, text in CLUSTER:
            value = dig(stats, path)
            if isinstance(value, (int, float)):
                events.append(self.createEvent("ok", text, value, name))
                if name == "documents.total":
                    events.append(self.createEvent("ok", text, value, "documents.rate", None,
                                                   Counter64))  # fmt: skip
        seen = set()
        for node in (dig(nodes, ("nodes",)) or {}).values():
            host = node.get("host") if isinstance(node, dict) else None
            if not host or host in seen or not holdsData(node):
                continue
            seen.add(host)
            for path, name in NODE:
                value = dig(node, path)
                if isinstance(value, (int, float)):
                    events.append(self.createEvent("ok", name, value, f"nodes.{host}.{name}",
                                                   None, Counter64))  # fmt: skip
        return [*events, self.createEvent("ok", f"Elasticsearch {url}", 1, "state")]
