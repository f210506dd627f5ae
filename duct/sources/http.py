"""Ingest: events POSTed over HTTP, as JSON or as a Riemann Msg."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from duct.errors import TooLarge
from duct.lib.lograte import RateLimitedLog
from duct.listening import WORKERS_OPTION, CannotListen, listenNow, serverEndpoint
from duct.objects import Source
from duct.options import Option
from duct.protocol.riemann import EncodedEvents
from duct.sources.http_body import Answer, readBody
from duct.sources.riemann import DEFAULT_MAX_EVENTS
from duct.stats import Stat, counter, gauge
from duct.web.auth import authorized, presented
from duct.web.responses import jsonBody, jsonError

__all__ = ["DEFAULT_MAX_BODY", "Ingest"]

DEFAULT_MAX_BODY = 16 * 1024 * 1024
"""The largest request body, in bytes, unless ``max_body`` says otherwise."""


class Ingest(Source):
    """Takes events POSTed to ``path`` on the agent's web server, or on a listener of its own.

    The body is JSON, with the field names `Event.asDict` writes (host,
    service, state, metric, ttl, tags, attributes, description, time, type;
    ``service`` is required): one object, an array of them, or JSON lines.
    With ``Content-Type: application/x-protobuf`` (or
    ``application/octet-stream``) it is a Riemann ``Msg``.  Either may be
    gzipped (``Content-Encoding: gzip``).  An event without ``host`` takes
    the agent's hostname; without ``time``, the time it arrived.  The
    common options ``ttl``, ``tags`` and ``attributes`` do not apply;
    ``route``, ``warning`` and ``critical`` do.

    The answers:

    - 200 ``{"accepted": n}`` once the events are in the buffer of every
      output they are routed to (with a disk buffer, written to its file,
      and fsynced first with ``sync: always``).
    - 429, with ``Retry-After``, when an output with ``overflow: block``
      has had no room for the request's events for ``max_wait`` seconds.
      Nothing of the request is kept.
    - 400 naming the event and the field at fault (``events[3].metric:
      not a number``), or why the body does not parse.  Nothing of the
      request is kept.
    - 413 for a body over ``max_body`` (refused by its ``Content-Length``
      before it is read), more events than ``max_events``, or more than a
      blocking output's buffer could ever hold.
    - 401 without the bearer ``token`` (or the web server's ``token`` when
      this source has none and serves on the web server).

    Every refusal is counted by reason in ``refused``.  A large body is
    read a bounded step at a time and handed on in pieces of at most 1,000
    events, one per reactor turn.

    Without ``listen`` it is a route of the agent's web server (``web:``);
    with ``listen`` (a Twisted server endpoint string) it serves ``path``
    on that listener instead.
    """

    listens = True

    options = (
        Option("path", "string", "/ingest", "the path events are POSTed to (one segment)"),
        Option(
            "listen",
            "string",
            None,
            "Twisted server endpoint of a listener of its own (default: the web server)",
        ),
        Option("token", "string", None, "bearer token clients must present"),
        Option(
            "max_body", "integer", DEFAULT_MAX_BODY, "largest request body, in bytes", minimum=1
        ),
        Option(
            "max_events", "integer", DEFAULT_MAX_EVENTS, "most events in one request", minimum=1
        ),
        Option(
            "max_wait",
            "number",
            5.0,
            "seconds a request waits for room in a full output before it is answered 429",
            minimum=0,
        ),
        Option("retry_after", "integer", 1, "seconds a 429 asks the client to wait", minimum=0),
        WORKERS_OPTION,
    )

    # fmt: off
    stats: tuple[Stat, ...] = (
        counter("requests", "requests", "requests", "requests whose events were accepted"),
        counter("refused", "refused", "refused_requests", "requests refused, by reason",
                "reason"),
        counter("held", "held", "held_requests", "requests that waited for room in an output"),
        gauge("waiting", "sum", "waiting", "waiting_requests",
              "requests waiting for room in an output now"),
        counter("decode_steps", "decodeSteps", "decode_steps",
                "reactor turns taken by large bodies"),
    )
    # fmt: on

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.path: str = config["path"]
        self.segment = self.path.strip("/")
        self.listen: str | None = config["listen"]
        self.token: str | None = config["token"]
        self.maxBody: int = config["max_body"]
        self.maxEvents: int = config["max_events"]
        self.maxWait = float(config["max_wait"])
        self.retryAfter: int = config["retry_after"]
        self.requests = 0
        self.refused: dict[str, int] = {}
        """Requests refused, by reason: unauthorized, bad_request, too_large,
        too_many_events, full, method, unsupported."""
        self.held = 0
        self.waiting = 0
        self.decodeSteps = 0
        self.resource = IngestResource(self)
        self.rateLog = RateLimitedLog(self.log, self.clock)
        self.port: Any = None
        self.failure: str | None = None

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = []
        path = config.get("path")
        if isinstance(path, str) and (
            not path.startswith("/") or not path.strip("/") or "/" in path.strip("/")
        ):
            problems.append(("path", f"expected one path segment such as /ingest, got {path!r}"))
        if config.get("token") == "":
            problems.append(("token", "must not be empty (leave it out instead)"))
        return problems

    # -- where it is served ---------------------------------------------------------

    def webRoutes(self) -> Mapping[str, Any]:
        """``path`` on the agent's web server, unless this source has a listener of its own."""
        return {} if self.listen else {self.segment: self.resource}

    @property
    def down(self) -> str | None:
        """None while events can arrive; else why not (for ``/health``)."""
        if not self.listen:
            return None
        if self.port is not None:
            return None
        return self.failure or f"not listening on {self.listen}"

    def startTimer(self) -> None:
        """Listen on ``listen``, if set; raises `CannotListen` if it cannot."""
        if not self.listen or self.port is not None:
            return
        from duct.web.site import QuietSite

        root = Resource()
        resource: Any = self.resource
        root.putChild(self.segment.encode("utf-8"), resource)
        endpoint = serverEndpoint(self.duct.reactor, self.listen)
        try:
            port, pending = listenNow(endpoint, QuietSite(root), "listen", self.listen)
        except CannotListen as e:
            self.errors += 1
            self.failure = str(e)
            raise
        if port is not None:
            self._listening(port)
        elif pending is not None:
            pending.addCallbacks(self._listening, self._listenFailed)

    def _listening(self, port: Any) -> Any:
        self.port = port
        self.log.info(
            "http ingest {source} listening on {address}",
            source=self.service,
            address=port.getHost(),
        )
        return port

    def _listenFailed(self, failure: Failure) -> None:
        self.errors += 1
        self.failure = f"cannot listen on {self.listen}: {failure.getErrorMessage()}"
        self.log.failure("http ingest {source} cannot listen", failure, source=self.service)

    def stopTimer(self) -> Deferred[Any]:
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)

    # -- requests ----------------------------------------------------------------------

    def refuse(self, reason: str, message: str) -> None:
        """Count a request refused for ``reason``, and log it at a limited rate."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.rateLog.emit(
            reason,
            "http ingest {source}: a request was refused ({reason}): {message}",
            source=self.service,
            reason=reason,
            message=message,
        )

    async def turn(self) -> None:
        """Let the reactor run before the next step of a large body."""
        self.decodeSteps += 1
        await deferLater(self.clock, 0, lambda: None)

    async def ingest(self, request: Request) -> int:
        """Read the events of ``request`` and hand them on; how many were accepted.

        Raises `Answer` for a request refused.
        """
        now = self.clock.seconds()
        pieces = await readBody(
            request, self.maxBody, self.maxEvents, self.hostname, now, self.turn
        )
        count = sum(len(piece) for piece in pieces)
        if not count:
            return 0
        nbytes = None
        if all(isinstance(piece, EncodedEvents) for piece in pieces):
            nbytes = sum(piece.nbytes for piece in pieces)
        feed = self.queueBack
        try:
            checkFits = getattr(feed, "checkFits", None)
            if checkFits is not None:
                checkFits(count, nbytes)
            whenAccepting = getattr(feed, "whenAccepting", None)
            if whenAccepting is not None:
                await self._room(whenAccepting(count, nbytes))
            for n, piece in enumerate(pieces):
                if n:
                    await self.turn()
                if self.debug:
                    for event in piece.decode() if isinstance(piece, EncodedEvents) else piece:
                        self.log.info("{source}: {event!r}", source=self.service, event=event)
                result = feed(piece)
                if isinstance(result, Deferred):  # filled meanwhile: room comes as it drains
                    await self._room(result, bounded=False)
        except TooLarge as e:
            raise Answer(413, "too_large", str(e)) from None
        self.emitted += count
        self.lastEventTime = self.clock.seconds()
        return count

    async def _room(self, wait: Deferred[None], bounded: bool = True) -> None:
        """Wait for room in the routed outputs; at most ``max_wait`` when ``bounded``."""
        if wait.called:
            await wait
            return
        self.held += 1
        self.waiting += 1
        if bounded:
            wait.addTimeout(self.maxWait, self.clock)
        try:
            await wait
        except (TimeoutError, CancelledError):
            raise Answer(
                429,
                "full",
                f"outputs are full; retry in {self.retryAfter}s",
                {"Retry-After": str(self.retryAfter)},
            ) from None
        finally:
            self.waiting -= 1


class IngestResource(Resource):
    """The route of an `Ingest` source: POST only, with its own token and body limit."""

    isLeaf = True
    checksToken = True  # see duct.web.site.Root

    def __init__(self, source: Ingest) -> None:
        super().__init__()
        self.source = source

    @property
    def maxBody(self) -> int:
        """Read by `duct.web.bodylimit.LimitedRequest` before the body is."""
        return self.source.maxBody

    def tooLarge(self, size: int | None) -> None:
        limit = self.source.maxBody
        self.source.refuse("too_large", f"a body of {size or 'more than'} bytes over {limit}")

    def render(self, request: Request) -> Any:
        source = self.source
        site = getattr(request, "site", None)
        token = source.token or getattr(getattr(site, "resource", None), "token", None)
        if not authorized(request, token):
            why = "wrong bearer token" if presented(request) else "a bearer token is required"
            source.refuse("unauthorized", why)
            request.setHeader(b"www-authenticate", b'Bearer realm="duct"')
            return jsonError(request, 401, why)
        if request.postpath not in ([], [b""]):
            return jsonError(request, 404, "no such resource")
        if request.method != b"POST":
            source.refuse("method", request.method.decode("latin-1"))
            request.setHeader(b"allow", b"POST")
            return jsonError(request, 405, "POST events here")
        finished = request.notifyFinish()
        gone: list[Failure] = []
        finished.addErrback(gone.append)  # the client hung up: nothing to answer

        def answer(result: int | Failure) -> None:
            if gone:
                return
            if isinstance(result, Failure):
                error = result.value
                if not isinstance(error, Answer):
                    source.errors += 1
                    source.log.failure(
                        "http ingest {source}: a request failed", result, source=source.service
                    )
                    error = Answer(500, "error", "internal error: the events were not accepted")
                source.refuse(error.reason, error.message)
                for name, value in error.headers.items():
                    request.setHeader(name, value)
                body = jsonError(request, error.code, error.message)
            else:
                source.requests += 1
                body = jsonBody(request, {"accepted": result}, compact=True)
            request.write(body)
            request.finish()

        Deferred.fromCoroutine(source.ingest(request)).addBoth(answer)
        return NOT_DONE_YET
