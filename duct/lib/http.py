"""HTTP helpers on treq: `getBody` and `getJson`, with a timeout and clear errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import treq
from twisted.internet import protocol
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectingCancelledError
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss

# mypy cannot check zope interfaces without a plugin, so these are Any.
from duct.lib.process import Timeout

__all__ = ["BadJSON", "HTTPError", "getBody", "getJson"]

Reactor = Any  # IReactorProcess and IReactorTime for fork; what treq needs for HTTP


class HTTPError(Exception):
    """A status outside 2xx; ``body`` is the first 200 characters of the response body."""

    def __init__(self, method: str, url: str, code: int, body: str) -> None:
        super().__init__(f"{method} {url} returned {code}: {body}")
        self.method = method
        self.url = url
        self.code = code
        self.body = body


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
