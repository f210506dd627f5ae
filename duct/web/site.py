"""The Site: the root resource, the built-in routes, and the routes plugins add.

``/stats``, ``/metrics`` and ``/health`` are built in, ``/events`` is
reserved for the live event stream, and further built-in resources come
in through ``extra``.  A source, an output or a plugin of ``plugins:`` may add routes with
``webRoutes(self) -> Mapping[str, AnyResource]``: each key is one path
segment (``"api"`` answers ``/api`` and below), and ``""`` answers ``/``.
Without a ``""`` route, ``/`` answers a JSON index of the routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from duct import __version__
from duct.errors import Problem
from duct.web.auth import OPEN_ROUTES, Unauthorized, authorized, presented
from duct.web.bodylimit import LimitedRequest
from duct.web.health import HealthResource
from duct.web.metrics import MetricsResource
from duct.web.responses import jsonBody, notFound
from duct.web.stats import StatsResource

AnyResource = Any
"""An `twisted.web.resource.AnyResource` provider (mypy sees no zope interfaces)."""

RESERVED = frozenset({"stats", "metrics", "health", "events"})
"""Path segments of duct's own routes, which no plugin may claim."""


def builtinResources(service: Any) -> dict[str, AnyResource]:
    """``/stats``, ``/metrics`` and ``/health`` for ``service``."""
    return {
        "stats": StatsResource(service),
        "metrics": MetricsResource(service),
        "health": HealthResource(service),
    }


def pluginRoutes(service: Any) -> tuple[dict[str, AnyResource], list[Problem]]:
    """The routes ``service``'s sources and outputs claim, and the problems among them.

    A segment that is reserved, that holds a ``/``, or that another plugin
    claimed first is a problem naming the item of the plugin at fault; the
    first claim keeps the segment.
    """
    routes: dict[str, AnyResource] = {}
    owners: dict[str, str] = {}
    problems: list[Problem] = []
    plugins: list[tuple[Any, Any]] = [(s, _item(service, s)) for s in service.sources]
    plugins += [(o, _outputItem(service, n)) for n, o in service.outputs.items()]
    host = getattr(service, "pluginHost", None)  # plugins enabled by name (duct.pluginhost)
    if host is not None:
        plugins += host.routed()
    for plugin, item in plugins:
        claim = getattr(plugin, "webRoutes", None)
        if claim is None:
            continue
        file = item.file if item is not None else "<config>"
        label = item.label if item is not None else type(plugin).__name__
        for segment, resource in dict(claim()).items():
            where = f"/{segment}" if segment else "/"
            if not isinstance(segment, str) or "/" in segment:
                message = f"web route {segment!r} is not a single path segment"
            elif segment in RESERVED:
                message = f"web route {where} is duct's own; choose another path"
            elif segment in routes:
                message = f"web route {where} is already served by {owners[segment]}"
            else:
                routes[segment] = resource
                owners[segment] = label
                continue
            problems.append(Problem(file, label, None, message))
    return routes, problems


def _outputItem(service: Any, name: str) -> Any:
    try:
        return service.roster.outputItem(name)
    except (KeyError, AttributeError):
        return None


def _item(service: Any, source: Any) -> Any:
    try:
        return service.itemOf(source)
    except (KeyError, AttributeError):
        return None


class Root(Resource):
    """Finds the resource for the first path segment, checking the token first."""

    def __init__(
        self,
        builtins: Mapping[str, AnyResource],
        token: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.builtins = dict(builtins)
        self.token = token
        self.info = dict(info or {})
        self.plugins: dict[str, AnyResource] = {}

    def mount(self, routes: Mapping[str, AnyResource]) -> None:
        """Serve ``routes`` (plugin routes, already checked) from now on, instead of the last."""
        self.plugins = {k: v for k, v in routes.items() if k not in self.builtins}

    def routes(self) -> list[str]:
        names = sorted({*self.builtins, *self.plugins} - {"api/jobs"})
        return ["/"] + [f"/{name}" for name in names if name]

    def routeFor(self, segment: str) -> AnyResource | None:
        """The resource serving the path segment ``segment``, if one does."""
        resource = self.builtins.get(segment)
        return resource if resource is not None else self.plugins.get(segment)

    def getChildWithDefault(self, path: bytes, request: Request) -> AnyResource:
        segment = path.decode("utf-8", "replace")
        resource = self.routeFor(segment)
        postpath = request.postpath or []
        if segment == "api" and postpath[:1] == [b"jobs"] and "api/jobs" in self.builtins:
            # /api/jobs is duct's own; the rest of /api stays a plugin's (the store's).
            (request.prepath or []).append(postpath.pop(0))
            resource = self.builtins["api/jobs"]
        # A route that checks tokens itself (``checksToken``: its own, or this one) is
        # handed the request as it came.
        checked = segment in OPEN_ROUTES or getattr(resource, "checksToken", False)
        if not checked and not authorized(request, self.token):
            return Unauthorized(presented=presented(request))
        if resource is not None:
            return resource
        if segment == "" and not request.postpath:
            return Index(self)
        home = self.plugins.get("")
        if home is not None and segment and not getattr(home, "isLeaf", False):
            # What no route claims goes to the plugin serving "/" (a dashboard's files).
            child: AnyResource = home.getChildWithDefault(path, request)
            return child
        return notFound(request)


class Index(Resource):
    """``/`` when no plugin serves it: what this server answers."""

    isLeaf = True

    def __init__(self, root: Root) -> None:
        super().__init__()
        self.root = root

    def render_GET(self, request: Request) -> bytes:
        return jsonBody(request, {**self.root.info, "routes": self.root.routes()})


class QuietSite(Site):
    """A Site that logs requests at debug level, as structured fields, and shows
    clients no traceback (the log has it)."""

    noisy = False
    displayTracebacks = False
    requestFactory = LimitedRequest  # a route's maxBody is refused before it is read
    _log = Logger()

    def log(self, request: Request) -> None:  # type: ignore[override]
        self._log.debug(
            "web: {method} {path} {code}",
            method=request.method.decode("ascii", "replace"),
            path=request.uri.decode("utf-8", "replace"),
            code=request.code,
        )


def buildSite(
    service: Any,
    token: str | None = None,
    extra: Mapping[str, AnyResource] | None = None,
    plugins: Mapping[str, AnyResource] | None = None,
) -> Site:
    """The Site for ``service``: built-in routes, ``extra`` built-in resources, plugin routes.

    ``extra`` adds duct's own resources by segment (``{"events": ...}``);
    ``plugins`` are routes already checked with `pluginRoutes`.
    """
    builtins: dict[str, AnyResource] = {**builtinResources(service), **(extra or {})}
    info = {"name": "duct", "version": __version__, "hostname": getattr(service, "hostname", None)}
    root = Root(builtins, token, info)
    root.mount(plugins or {})
    return QuietSite(root)
