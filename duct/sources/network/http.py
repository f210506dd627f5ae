"""HTTP: one request to a URL, timed, its status and body checked."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from duct.lib.http import HTTP_CLIENT_OPTIONS, TLSPolicy, _BodyReader
from duct.lib.process import Timeout
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.certificates import (
    RecordingPolicy,
    checkChain,
    daysLeft,
    fetchChain,
    tlsFailure,
)


def failureReason(failure: Failure) -> str:
    """A failed connection or request in a few words."""
    if failure.check(Timeout):
        return failure.getErrorMessage()
    if failure.check(ConnectionRefusedError):
        return "connection refused"
    if failure.check(DNSLookupError):
        return f"cannot resolve the host name ({failure.getErrorMessage()})"
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(failureReason(reason) for reason in reasons)
    return failure.getErrorMessage() or type(failure.value).__name__


class HTTP(Source):
    """Requests ``url`` and checks the answer.

    - ``{service}.latency``: milliseconds until the whole body has arrived;
    - ``{service}.status``: the status code;
    - ``{service}.tls.expiry``: for an ``https`` URL, days until the server's
      certificate expires, read from the connection of the request itself,
      with ``issuer`` and ``subject`` attributes.

    The state is ``critical``, with the reason in the description, when the
    status is not one of ``expect_status`` (by default: any below 400), the
    body lacks ``match``, the request fails or takes longer than
    ``timeout``.  An ``https`` URL's certificate and name are checked
    (``tls_ca``, or the system's CAs); when they do not verify, the check
    opens a second connection that accepts any certificate, only to say why
    (expired, not for this name, not from a trusted CA).  Add rules to warn
    about a certificate that expires soon, for example
    ``warning: {'web\\.tls\\.expiry': "< 30"}``.
    """

    sync = True
    options = (
        Option("url", "string", None, "URL to request (default: http://{hostname}/)"),
        Option("method", "string", "GET", "HTTP method of the request"),
        Option("match", "string", None, "text the response body must contain"),
        Option("useragent", "string", "Duct HTTP checker", "User-Agent header of the request"),
        Option(
            "expect_status",
            "any",
            None,
            "status code, or list of codes, that are ok (default: any below 400)",
        ),  # fmt: skip
        Option("body", "string", None, "request body"),
        Option("follow_redirects", "boolean", False, "follow redirects, and check the last answer"),
        *HTTP_CLIENT_OPTIONS,
    )

    @classmethod
    def optionProblems(cls, config: dict[str, Any]) -> list[tuple[str, str]]:
        expected = config.get("expect_status")
        codes = expected if isinstance(expected, list) else [expected]
        if expected is not None and not all(
            isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes
        ):
            return [
                ("expect_status", f"expected a status code or a list of them, got {expected!r}")
            ]
        return []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reactor = self.duct.reactor
        self.tlsPolicy = RecordingPolicy(TLSPolicy(self.config, self.service))
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http.agent = Agent(
            reactor, contextFactory=self.tlsPolicy, connectTimeout=self.http.timeout, pool=pool
        )

    def statusIsExpected(self, code: int) -> bool:
        expected = self.config["expect_status"]
        if expected is None:
            return code < 400
        return code in expected if isinstance(expected, list) else code == expected

    async def _fetch(self, url: str) -> tuple[int, bytes]:
        client = self.http
        headers = {"User-Agent": self.config["useragent"], **client.headers}
        kwargs: dict[str, Any] = {
            "headers": headers,
            "unbuffered": True,
            "allow_redirects": self.config["follow_redirects"],
        }
        if client.auth is not None:
            kwargs["auth"] = client.auth
        if self.config["body"] is not None:
            kwargs["data"] = self.config["body"].encode("utf-8")
        response = await client.treq.request(self.config["method"].upper(), url, **kwargs)
        reader = _BodyReader()
        response.deliverBody(reader)
        return response.code, await reader.finished

    async def get(self) -> list[Event]:
        url = self.config["url"] or f"http://{self.hostname}/"
        parts = urlsplit(url)
        host, tls = parts.hostname or "", parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        timeout = self.http.timeout
        started = self.clock.seconds()

        def timedOut(result: object, seconds: float) -> tuple[int, bytes]:
            raise Timeout(f"no complete answer within {seconds:g}s")

        try:
            request = Deferred.fromCoroutine(self._fetch(url))
            code, body = await request.addTimeout(timeout, self.clock, onTimeoutCancel=timedOut)
        except Exception:
            failure = Failure()
            elapsed = (self.clock.seconds() - started) * 1000
            reason = failureReason(failure)
            if tls and tlsFailure(failure) is not None:
                reason = await self._explainTLS(host, port, timeout) or reason
            self.log.info("{source}: {url} failed: {reason}", source=self.service, url=url,
                          reason=reason)  # fmt: skip
            return [self.createEvent("critical", f"{url}: {reason}", elapsed, "latency")]
        elapsed = (self.clock.seconds() - started) * 1000
        problems = []
        if not self.statusIsExpected(code):
            problems.append(f"unexpected status {code}")
        match = self.config["match"]
        if match is not None and match.encode("utf-8") not in body:
            problems.append(f"the body does not contain {match!r}")
        state = "critical" if problems else "ok"
        why = "; ".join(problems) or f"{code} in {elapsed:.0f} ms"
        events = [
            self.createEvent(state, f"{url}: {why}", elapsed, "latency"),
            self.createEvent("ok" if self.statusIsExpected(code) else "critical",
                             f"{url}: status {code}", code, "status"),
        ]  # fmt: skip
        chain = self.tlsPolicy.chain(host, port) if tls else None
        if chain is not None:
            days = daysLeft(chain, self.clock.seconds())
            expires = (
                f"certificate of {host} expires in {days:.0f} days ({chain.notAfter:%Y-%m-%d})"
            )
            events.append(self.createEvent("ok", expires, days, "tls.expiry",
                                           attributes=chain.attributes()))  # fmt: skip
        return events

    async def _explainTLS(self, host: str, port: int, timeout: float) -> str | None:
        """Why the certificate of ``host:port`` did not verify, from a second connection."""
        try:
            chain = await fetchChain(self.duct.reactor, host, port, timeout)
        except Exception as e:
            self.log.debug("{source}: no certificate from {host}: {e}", source=self.service,
                           host=host, e=e)  # fmt: skip
            return None
        reason = checkChain(chain, host, self.config["tls_ca"], self.clock.seconds())
        return f"TLS: {reason}" if reason else None
