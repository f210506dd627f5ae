"""POST a body with an output's HTTP client and read the answer whatever its status.

`Client.request` fails on a status outside 2xx with a short excerpt of
the body; an output whose destination explains a refusal in the body (an
OpenTSDB ``details`` answer, an Elasticsearch ``_bulk`` answer) needs all
of it.  `post` uses the same client (its headers, authentication, TLS and
``timeout``) and returns every response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import treq
from twisted.internet.defer import Deferred

from duct.lib.http import Client, HTTPResponse
from duct.lib.process import Timeout

__all__ = ["KeptConnections", "post"]


class KeptConnections:
    """For an output that POSTs its batches: connections kept open between batches.

    Up to one a batch in flight (``maxInFlight``), opened by `createClient`
    on ``self.http`` and closed by `closeClient`.
    """

    http: Client
    maxInFlight: int
    _pool: Any = None

    def createClient(self) -> None:
        self._pool = self.http.keepConnections(self.maxInFlight)

    def closeClient(self) -> Any:
        pool, self._pool = self._pool, None
        return pool.closeCachedConnections() if pool is not None else None


def post(
    client: Client, url: str, body: bytes, headers: Mapping[str, str] | None = None
) -> Deferred[HTTPResponse]:
    """POST ``body`` to ``url``; fires with the response read to its end, any status.

    Fails with `Timeout` past the client's ``timeout`` and with the
    connection's error when there is no response.
    """
    kwargs: dict[str, Any] = {
        "unbuffered": True,
        "headers": {**client.headers, **(headers or {})},
        "data": body,
    }
    if client.auth is not None:
        kwargs["auth"] = client.auth

    async def send() -> HTTPResponse:
        response = await client.treq.request("POST", url, **kwargs)
        content = await treq.content(response)
        return HTTPResponse(url, response.code, response.headers, content)

    def timedOut(result: object, timeout: float) -> HTTPResponse:
        raise Timeout(f"POST {url} timed out after {timeout}s")

    d = Deferred.fromCoroutine(send())
    if client.timeout:
        d.addTimeout(client.timeout, client.reactor, onTimeoutCancel=timedOut)
    return d
