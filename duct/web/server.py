"""WebServer: listens on ``web: {listen}`` with the Site of `duct.web.site`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from duct.errors import ConfigurationError, Problem
from duct.listening import CannotListen, listenNow
from duct.web.site import AnyResource, Root, buildSite, pluginRoutes

DEFAULT_LISTEN = "tcp:8901:interface=127.0.0.1"


def extraResources(service: Any) -> dict[str, AnyResource]:
    """duct's own resources beyond /stats, /metrics and /health, by path segment.

    ``/events`` is the live event stream, served from the service's ring;
    ``/api/jobs`` the jobs (`duct.jobs.resource`).
    """
    from duct.jobs.resource import JobsResource
    from duct.web.events.resource import eventsResource

    jobs = {"api/jobs": JobsResource(service)}  # /api/jobs (see duct.web.site.Root)
    if service.ring is None:  # a service built without web: has no ring
        return jobs
    return {"events": eventsResource(service.ring, service.clock), **jobs}


class WebServer(Service):
    """The web server of a `duct.service.DuctService`.

    Built with the service: plugin routes that clash are then a
    ConfigurationError.  `startService` listens, and raises
    ConfigurationError naming the address if it cannot (a port in use);
    `stopService` stops listening and closes the open connections.

    :param service: the running service (``reactor``, ``sources``, ``outputs``).
    :param settings: the validated ``web:`` mapping (``listen``, ``token``).
    :param file: the configuration file, for error messages.
    """

    log = Logger()

    def __init__(self, service: Any, settings: Mapping[str, Any], file: str = "<config>") -> None:
        self.duct = service
        self.file = file
        self.listen: str = settings.get("listen") or DEFAULT_LISTEN
        self.token: str | None = settings.get("token")
        routes, problems = pluginRoutes(service)
        if problems:
            raise ConfigurationError(problems)
        extras = extraResources(service)
        self.events: Any = extras.get("events")
        """The /events resource: its ``stats()`` go into /stats."""
        self.site = buildSite(service, self.token, extras, routes)
        self.root: Root = self.site.resource
        self.factory = WrappingFactory(self.site)
        self.port: Any = None
        """The listening port once bound: ``port.getHost()`` is its address."""
        self._pending: Deferred[Any] | None = None

    def privilegedStartService(self) -> None:
        """Listen (before twistd drops privileges); see `startService`."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """Listen, unless already bound.  A port in use raises ConfigurationError."""
        super().startService()
        try:
            self._listen()
        except ConfigurationError:
            self.running = 0
            raise

    def _listen(self) -> None:
        if self.port is not None or self._pending is not None:
            return
        endpoint = serverFromString(self.duct.reactor, self.listen)
        try:
            port, pending = listenNow(endpoint, self.factory, "listen", self.listen)
        except CannotListen as e:
            raise ConfigurationError([Problem(self.file, "web", "listen", str(e))]) from None
        if port is not None:
            self._listening(port)
        elif pending is not None:  # an endpoint that listens later: its failure is logged
            self._pending = pending
            pending.addCallbacks(self._listening, self._listenFailed)

    def _listening(self, port: Any) -> Any:
        self._pending = None
        self.port = port
        self.log.info("web server listening on {address}", address=port.getHost())
        return port

    def _listenFailed(self, failure: Failure) -> None:
        self._pending = None
        self.log.failure("web server cannot listen on {listen}", failure, listen=self.listen)

    def stopService(self) -> Deferred[None]:
        """Stop listening; close the connections still open (idle or streaming)."""
        super().stopService()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.cancel()
        for protocol in list(self.factory.protocols):
            protocol.transport.loseConnection()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)

    def update(self, settings: Mapping[str, Any]) -> None:
        """Take a new token, and mount the plugins' routes again (after a reload).

        Routes that clash are logged and left out; a change of ``listen`` needs
        a restart (logged).
        """
        self.token = settings.get("token")
        self.root.token = self.token
        if (settings.get("listen") or DEFAULT_LISTEN) != self.listen:
            self.log.warn(
                "web: listen changed to {new}; it applies at the next restart, "
                "still listening on {old}",
                new=settings.get("listen"),
                old=self.listen,
            )
        self.remount()

    def remount(self) -> None:
        """Mount the current plugins' routes; clashes are logged and left out."""
        routes, problems = pluginRoutes(self.duct)
        for problem in problems:
            self.log.error("web: {problem}; not mounted", problem=str(problem))
        self.root.mount(routes)
