"""HTTP on treq, for plugins: the `Client` behind ``self.http``, its options, and helpers.

A plugin that fetches URLs splices `HTTP_CLIENT_OPTIONS` (``timeout``,
``headers``, ``user``, ``password`` and the TLS options of `duct.lib.tls`)
into its ``options`` and calls ``self.http.getBody(url)``,
``self.http.getJson(url)`` or ``self.http.request(method, url, ...)``.
`getBody` and `getJson` remain for plugins written before ``self.http``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import treq
from twisted.internet import protocol
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.error import ConnectingCancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

# mypy cannot check zope interfaces without a plugin, so these are Any.
from duct.lib.process import Timeout
from duct.lib.tls import TLS_CLIENT_OPTIONS, tlsFromConfig
from duct.options import Option, withDefaults

__all__ = [
    "HTTP_CLIENT_OPTIONS",
    "BadJSON",
    "Client",
    "HTTPError",
    "HTTPResponse",
    "TLSPolicy",
    "getBody",
    "getJson",
]

HTTP_CLIENT_OPTIONS: tuple[Option, ...] = (
    Option("timeout", "number", 10.0, "seconds a request may take, to its last byte", above=0),
    Option("headers", "mapping", None, "HTTP headers sent with every request (name: value)"),
    Option("user", "string", None, "user name for HTTP basic authentication"),
    Option("password", "string", None, "password for HTTP basic authentication"),
    *TLS_CLIENT_OPTIONS,
)
"""The options `Client` applies: splice them into a plugin's ``options``."""

Reactor = Any  # IReactorProcess and IReactorTime for fork; what treq needs for HTTP


class HTTPError(Exception):
    """A status outside 2xx; ``body`` is the first 200 characters of the response body,
    ``headers`` the response's `Headers` (None when not known)."""

    def __init__(
        self, method: str, url: str, code: int, body: str, headers: Headers | None = None
    ) -> None:
        super().__init__(f"{method} {url} returned {code}: {body}")
        self.method = method
        self.url = url
        self.code = code
        self.body = body
        self.headers = headers


class BadJSON(ValueError):
    """A response body that is not JSON."""

    def __init__(self, url: str, body: str) -> None:
        super().__init__(f"{url} did not return JSON: {body}")
        self.url = url
        self.body = body


def _excerpt(body: bytes, length: int = 200) -> str:
    return body[: length * 4].decode("utf-8", errors="replace")[:length]


class _BodyReader(protocol.Protocol):
    """Reads a response body into a Deferred; cancelling it drops the connection."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.finished: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def _isCancellation(failure: Failure) -> bool:
    if failure.check(CancelledError, ConnectingCancelledError, TimeoutError):
        return True
    if failure.check(ResponseFailed):  # also ResponseNeverReceived
        reasons: list[Failure] = getattr(failure.value, "reasons", [])
        return any(_isCancellation(r) for r in reasons)
    return False


def getBody(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str | bytes] | None = None,
    data: bytes | str | dict[str, Any] | list[Any] | None = None,
    timeout: float = 30.0,
    reactor: Reactor | None = None,
) -> Deferred[bytes]:
    """Request ``url`` and return a Deferred of the response body.

    :param data: the request body: bytes or str as is, a dict or a list
        sent as JSON with content-type ``application/json``.
    :param timeout: seconds for the whole request.  With a ``reactor`` the
        limit covers connecting, the response and its body; without one,
        treq's own timeout applies, which stops at the response headers.
    :param reactor: the reactor to use; ``None`` lets treq use its default.

    Each request has its own connection, closed once it is done.

    Fails with `HTTPError` for a status outside 2xx and `Timeout` when the
    limit is reached.
    """
    method = method.upper()
    kwargs: dict[str, Any] = {"reactor": reactor, "unbuffered": True, "persistent": False}
    if headers:
        kwargs["headers"] = dict(headers)
    if isinstance(data, (dict, list)):
        kwargs["json"] = data
    elif isinstance(data, str):
        kwargs["data"] = data.encode("utf-8")
    elif data is not None:
        kwargs["data"] = data
    if reactor is None and timeout:
        kwargs["timeout"] = timeout

    async def request() -> bytes:
        response = await treq.request(method, url, **kwargs)
        reader = _BodyReader()
        response.deliverBody(reader)
        body = await reader.finished
        if not 200 <= response.code < 300:
            raise HTTPError(method, url, response.code, _excerpt(body))
        return body

    def timedOut(result: object, seconds: float) -> bytes:
        raise Timeout(f"{method} {url} timed out after {seconds}s")

    def translate(failure: Failure) -> Failure:
        # treq's own timeout cancels the request; tell the caller plainly.
        if _isCancellation(failure):
            raise Timeout(f"{method} {url} timed out after {timeout}s")
        return failure

    d = Deferred.fromCoroutine(request())
    if reactor is not None and timeout:
        d.addTimeout(timeout, reactor, onTimeoutCancel=timedOut)
    elif timeout:
        d.addErrback(translate)
    return d


def getJson(
    url: str,
    method: str = "GET",
    headers: Mapping[str, str | bytes] | None = None,
    data: bytes | str | dict[str, Any] | list[Any] | None = None,
    timeout: float = 30.0,
    reactor: Reactor | None = None,
) -> Deferred[Any]:
    """Like `getBody`, but parse the body as JSON; fails with `BadJSON` if it is not."""
    allHeaders: dict[str, str | bytes] = dict(headers or {})
    if not any(name.lower() == "accept" for name in allHeaders):
        allHeaders["Accept"] = "application/json"

    def parse(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError as e:
            raise BadJSON(url, _excerpt(body)) from e

    d = getBody(url, method, allHeaders, data, timeout, reactor)
    return d.addCallback(parse)


class _Settings:
    """Holds `HTTP_CLIENT_OPTIONS`, so that `withDefaults` fills them for any plugin."""

    options = HTTP_CLIENT_OPTIONS


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """Which TLS an `Agent` uses for each server, from the TLS options of a config.

    Like `twisted.web.client.BrowserLikePolicyForHTTPS`, it checks each
    server's certificate and name, against ``tls_ca`` (or the system's
    CAs), and presents ``tls_cert`` when set.  The options for a server
    are built once and kept.
    """

    def __init__(self, config: Mapping[str, Any], name: str = "") -> None:
        self.config = config
        self.name = name
        self._creators: dict[str, Any] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        host = hostname.decode("ascii")
        creator = self._creators.get(host)
        if creator is None:
            creator = self._creators[host] = tlsFromConfig(host, self.config, self.name)
        return creator


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body that is all there at once: written in one go, on no cooperator."""

    def __init__(self, body: bytes | str) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.length = len(self.body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class HTTPResponse:
    """A response read to its end: ``code``, ``headers`` (`Headers`) and ``body`` (bytes)."""

    def __init__(self, url: str, code: int, headers: Headers, body: bytes) -> None:
        self.url = url
        self.code = code
        self.headers = headers
        self.body = body

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; `BadJSON` if it is not."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise BadJSON(self.url, _excerpt(self.body)) from e


class Client:
    """HTTP requests on treq, with a plugin's HTTP and TLS options applied.

    Every request has the configured ``headers``, basic authentication
    when ``user`` is set, and a ``timeout`` that covers connecting, the
    response and its whole body (`Timeout` when it runs out).  A status
    outside 2xx fails with `HTTPError`.  Each request has a connection of
    its own, closed once it is done, unless `keepConnections` was called.

    :param reactor: where connections and timeouts run (``duct.reactor``).
    :param config: a plugin's config; options it lacks take the defaults of
        `HTTP_CLIENT_OPTIONS`.
    :param name: names the plugin in log lines (a false ``tls_verify``).

    ``agent`` (an `IAgent`) is built on first use; set it to send the
    requests elsewhere, or set ``treq`` to any object with treq's
    ``request`` (a `treq.testing.StubTreq`, as `duct.testing.StubHTTP` does).
    """

    log = Logger()

    def __init__(self, reactor: Any, config: Mapping[str, Any] | None = None, name: str = ""):
        self.reactor = reactor
        self.config = withDefaults(_Settings, config or {})
        self.name = name
        self.timeout = float(self.config["timeout"])
        self.headers: dict[str, Any] = dict(self.config["headers"] or {})
        user = self.config["user"]
        self.auth: tuple[str, str] | None = (
            (user, self.config["password"] or "") if user is not None else None
        )
        self._agent: Any = None
        self._treq: Any = None

    @classmethod
    def forPlugin(cls, plugin: Any) -> Client:
        """The client for a source or output: its reactor, its config, its name."""
        name = getattr(plugin, "service", None) or getattr(plugin, "name", None)
        return cls(plugin.duct.reactor, plugin.config, str(name or ""))

    def _newAgent(self, pool: HTTPConnectionPool) -> Agent:
        return Agent(
            self.reactor,
            contextFactory=TLSPolicy(self.config, self.name),
            connectTimeout=self.timeout,
            pool=pool,
        )

    @property
    def agent(self) -> Any:
        if self._agent is None:
            self._agent = self._newAgent(HTTPConnectionPool(self.reactor, persistent=False))
        return self._agent

    @agent.setter
    def agent(self, agent: Any) -> None:
        self._agent = agent
        self._treq = None

    def keepConnections(self, perHost: int) -> HTTPConnectionPool | None:
        """Keep up to ``perHost`` connections to each host open between requests.

        For an output that sends batch after batch to one place: each
        request then costs no new connection (nor TLS handshake).  A
        request that fails on a connection the server closed is not sent
        again behind the caller's back.  Returns the pool, whose
        ``closeCachedConnections`` closes them, or None when an agent or
        a treq was set already (a test's), which is left as it is.
        """
        if self._agent is not None or self._treq is not None:
            return None
        pool = HTTPConnectionPool(self.reactor, persistent=True)
        pool.maxPersistentPerHost = perHost
        pool.retryAutomatically = False
        self.agent = self._newAgent(pool)
        return pool

    @property
    def treq(self) -> Any:
        if self._treq is None:
            from treq.client import HTTPClient

            produce: Any = _BytesProducer  # an IBodyProducer, which mypy cannot see
            self._treq = HTTPClient(self.agent, data_to_body_producer=produce)
        return self._treq

    @treq.setter
    def treq(self, client: Any) -> None:
        self._treq = client

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, Any] | None = None,
        data: bytes | str | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Deferred[HTTPResponse]:
        """Send a request; the Deferred fires with the `HTTPResponse`, read to its end.

        :param data: the body, bytes or text (sent as UTF-8).
        :param json: a value sent as JSON instead of ``data``.
        :param timeout: seconds for this request instead of the configured ``timeout``.
        """
        method = method.upper()
        seconds = self.timeout if timeout is None else timeout
        allHeaders = {**self.headers, **(headers or {})}
        kwargs: dict[str, Any] = {"unbuffered": True, "headers": allHeaders}
        if self.auth is not None:
            kwargs["auth"] = self.auth
        if params:
            kwargs["params"] = dict(params)
        if json is not None:
            kwargs["json"] = json
        elif data is not None:
            kwargs["data"] = data.encode("utf-8") if isinstance(data, str) else data

        async def send() -> HTTPResponse:
            response = await self.treq.request(method, url, **kwargs)
            reader = _BodyReader()
            response.deliverBody(reader)
            body = await reader.finished
            if not 200 <= response.code < 300:
                raise HTTPError(method, url, response.code, _excerpt(body), response.headers)
            return HTTPResponse(url, response.code, response.headers, body)

        def timedOut(result: object, timeout: float) -> HTTPResponse:
            raise Timeout(f"{method} {url} timed out after {timeout}s")

        d = Deferred.fromCoroutine(send())
        if seconds:
            d.addTimeout(seconds, self.reactor, onTimeoutCancel=timedOut)
        return d

    def getBody(self, url: str, **kwargs: Any) -> Deferred[bytes]:
        """GET ``url`` (or ``method=``), and return its body; arguments as for `request`."""
        method = kwargs.pop("method", "GET")
        return self.request(method, url, **kwargs).addCallback(lambda r: r.body)

    def getJson(self, url: str, **kwargs: Any) -> Deferred[Any]:
        """Like `getBody`, with ``Accept: application/json``, parsed; `BadJSON` if it is not."""
        headers = dict(kwargs.pop("headers", None) or {})
        if not any(name.lower() == "accept" for name in headers):
            headers["Accept"] = "application/json"
        method = kwargs.pop("method", "GET")
        d = self.request(method, url, headers=headers, **kwargs)
        return d.addCallback(HTTPResponse.json)
