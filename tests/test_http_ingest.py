"""duct.sources.http.Ingest: each body form, each refusal, waiting for room, the token."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from agents import HTTPPeek, connectClient, makeMsg
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool

from duct.objects import Event, Output
from duct.pipeline import Pipeline, SourceFeed
from duct.sources.http import Ingest
from duct.testing import FakeDuct, configure, waitFor
from duct.web.site import QuietSite, Root


class Raw(HTTPPeek):
    """Writes only what it is told to (`HTTPPeek` without its GET)."""

    def connectionMade(self) -> None:
        self.open = True


class Held(Output):
    """An output that never writes: what it takes stays in its buffer."""

    options = ()


class Rig:
    """An Ingest source on a real listener, routed to one `Held` output."""

    def __init__(self, reactor: Any, web: bool = False, webToken: str | None = None, **config: Any):
        self.reactor = reactor
        self.duct = FakeDuct(reactor=reactor)
        self.output = Held(
            configure(Held, {"maxsize": config.pop("maxsize", 1000), "overflow": "block"}),
            self.duct,
        )
        self.pipeline = Pipeline({"held": self.output})
        feed = SourceFeed(self.pipeline)
        if not web:
            config.setdefault("listen", "tcp:0:interface=127.0.0.1")
        self.source = Ingest(configure(Ingest, {"service": "ingest", **config}), feed, self.duct)
        feed.source = self.source
        self.webToken = webToken
        self.webPort: Any = None

    async def start(self) -> Rig:
        self.source.startTimer()
        if self.source.listen:
            self.port = self.source.port.getHost().port
        else:
            root = Root({}, self.webToken)
            root.mount(self.source.webRoutes())
            self.webPort = self.reactor.listenTCP(0, QuietSite(root), interface="127.0.0.1")
            self.port = self.webPort.getHost().port
        return self

    async def stop(self) -> None:
        await self.source.stopTimer()
        if self.webPort is not None:
            await self.webPort.stopListening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.source.path}"

    @property
    def buffered(self) -> list[Event]:
        return list(self.output.buffer._items)  # type: ignore[attr-defined]

    async def post(
        self, body: bytes | str, headers: dict[str, str] | None = None, path: str | None = None
    ) -> tuple[int, Any, Any]:
        """POST ``body``; the status, the headers and the JSON answer."""
        client = HTTPClient(Agent(self.reactor, pool=HTTPConnectionPool(self.reactor, False)))
        data = body.encode() if isinstance(body, str) else body
        url = self.url if path is None else f"http://127.0.0.1:{self.port}{path}"
        response = await client.post(url, data=data, headers=headers or {}, timeout=10)
        answer = await response.content()
        return response.code, response.headers, json.loads(answer) if answer else None


@pytest_twisted.async_yield_fixture
async def rig(reactor: Any) -> AsyncIterator[Rig]:
    r = await Rig(reactor).start()
    yield r
    await r.stop()


def event(service: str, **fields: Any) -> dict[str, Any]:
    return {"host": "h", "service": service, "metric": 1.5, "ttl": 30, "time": 1e9, **fields}


# -- each body form ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["object", "array", "lines", "gzip"])
@pytest_twisted.ensureDeferred
async def test_each_json_body_form(reactor: Any, form: str) -> None:
    r = await Rig(reactor).start()
    try:
        one = event("a", tags=["x"], attributes={"k": "v", "n": 3}, state="ok", description="d")
        two = event("b")
        headers = {"Content-Type": "application/json"}
        if form == "object":
            body: bytes = json.dumps(one).encode()
        elif form == "array":
            body = json.dumps([one, two]).encode()
        else:
            body = (json.dumps(one) + "\n" + json.dumps(two) + "\n").encode()
            headers = {"Content-Type": "application/x-ndjson"}
        if form == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        code, _, answer = await r.post(body, headers)
        count = 1 if form == "object" else 2
        assert (code, answer) == (200, {"accepted": count})
        got = r.buffered
        assert [e.service for e in got] == ["a", "b"][:count]
        first = got[0]
        assert (first.hostname, first.metric, first.ttl, first.time) == ("h", 1.5, 30, 1e9)
        assert (first.tags, first.attributes) == (["x"], {"k": "v", "n": "3"})
        assert (first.state, first.description) == ("ok", "d")
        assert r.source.requests == 1 and r.source.emitted == count
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_a_missing_host_and_time_are_filled(rig: Rig) -> None:
    code, _, _ = await rig.post(json.dumps({"service": "bare"}))
    assert code == 200
    [got] = rig.buffered
    assert got.hostname == "test.example"  # the agent's
    assert abs(got.time - rig.reactor.seconds()) < 60 and got.metric is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"time": 1_700_000_000.25}, 1_700_000_000.25),
        ({"time": "2023-11-14T22:13:20.25Z"}, 1_700_000_000.25),
        ({"time": "2023-11-15T00:13:20.25+02:00"}, 1_700_000_000.25),
        ({"time_micros": 1_700_000_000_250_000}, 1_700_000_000.25),
        ({"time": 5, "time_micros": 1_700_000_000_250_000}, 1_700_000_000.25),  # micros win
    ],
)
@pytest_twisted.ensureDeferred
async def test_times_in_seconds_iso_8601_or_microseconds(
    rig: Rig, fields: dict[str, Any], expected: float
) -> None:
    body = {"service": "t", **fields}
    code, _, _ = await rig.post(json.dumps(body), {"Content-Type": "application/json"})
    assert code == 200
    [received] = rig.buffered
    assert received.time == pytest.approx(expected, abs=1e-6)


@pytest_twisted.ensureDeferred
async def test_a_riemann_msg_body(rig: Rig) -> None:
    msg = makeMsg("r", 0, 3)
    for kind in ("application/x-protobuf", "application/octet-stream"):
        code, _, answer = await rig.post(msg, {"Content-Type": kind})
        assert (code, answer) == (200, {"accepted": 3})
    assert [e.service for e in rig.buffered] == ["r.0", "r.1", "r.2"] * 2
    assert rig.buffered[0].hostname == "durability.example"


@pytest_twisted.ensureDeferred
async def test_a_large_body_is_read_in_steps(reactor: Any) -> None:
    r = await Rig(reactor, maxsize=100_000).start()
    try:
        lines = "".join(json.dumps(event(f"s{i}")) + "\n" for i in range(5000))
        code, _, answer = await r.post(lines)
        assert (code, answer) == (200, {"accepted": 5000})
        msg = makeMsg("m", 0, 5000)
        code, _, answer = await r.post(msg, {"Content-Type": "application/x-protobuf"})
        assert (code, answer) == (200, {"accepted": 5000})
        assert len(r.buffered) == 10_000 and r.buffered[-1].service == "m.4999"
        assert r.source.decodeSteps >= 8
    finally:
        await r.stop()


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            [event("a"), event("b"), event("c"), event("d", metric="x")],
            "events[3].metric: not a number",
        ),
        ([event("a"), {"metric": 1}], "events[1].service: required"),
        ([event("a", tags="x")], "events[0].tags: not a list of strings"),
        ([event("a", tags=["x", 1])], "events[0].tags[1]: not a string"),
        ([event("a", attributes={"k": [1]})], "events[0].attributes.k: not a string or a number"),
        ([event("a", ttl=-1)], "events[0].ttl: negative"),
        ([event("a", time="now")], "events[0].time: neither a number nor an ISO 8601 time"),
        ([event("a", time="2026-12-01T19:00:00")], "events[0].time: an ISO 8601 time needs"),
        ([event("a", time_micros=1.5)], "events[0].time_micros: not an integer"),
        ([event("a", metrc=1)], "events[0].metrc: unknown field"),
        ([event("a"), 7], "events[1]: not an object"),
        ('[{"service": "a"}, {"service": ', "events[1]: not valid JSON"),
        ('{"service": "a"}\n{"service": "b", "metric": NaN}', "events[1]: not valid JSON"),
        ("", "body: no events"),
        (b"\xff\xfe", "body: not UTF-8 at byte 0"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_400_names_the_field_and_the_index(rig: Rig, body: Any, error: str) -> None:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    code, _, answer = await rig.post(data)
    assert code == 400
    assert answer["error"].startswith(error), answer
    assert rig.buffered == []  # nothing of a refused request is kept
    assert rig.source.refused == {"bad_request": 1}


@pytest_twisted.ensureDeferred
async def test_a_malformed_msg_and_a_query_are_400(rig: Rig) -> None:
    code, _, answer = await rig.post(b"\x32\x05ab", {"Content-Type": "application/x-protobuf"})
    assert code == 400 and "malformed" in answer["error"]
    query = b"\x2a\x07\x0a\x05true?"  # Msg.query {string: "true?"}
    code, _, answer = await rig.post(query, {"Content-Type": "application/x-protobuf"})
    assert code == 400 and "queries" in answer["error"]
    assert rig.source.refused == {"bad_request": 2}


@pytest_twisted.ensureDeferred
async def test_413_over_max_body_before_it_is_read(reactor: Any) -> None:
    r = await Rig(reactor, max_body=1000).start()
    try:
        code, _, answer = await r.post(json.dumps([event(f"s{i}") for i in range(100)]))
        assert code == 413 and "limit of 1000 bytes" in answer["error"]
        # Headers announcing 100 MB, and no body at all: answered at once.
        peek = Raw("")
        await connectClient(reactor, r.port, peek)
        peek.transport.write(  # type: ignore[union-attr]
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await waitFor(reactor, lambda: peek.lost.called, "the connection to close")
        assert peek.status == 413 and b"100 Continue" not in bytes(peek.data)
        assert r.source.refused == {"too_large": 2}
        assert r.buffered == []
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_413_for_a_chunked_body_over_the_limit(reactor: Any) -> None:
    r = await Rig(reactor, max_body=100).start()
    try:
        peek = Raw("")
        await connectClient(reactor, r.port, peek)
        chunk = b"x" * 80
        peek.transport.write(  # type: ignore[union-attr]
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"50\r\n" + chunk + b"\r\n") * 2
        )
        await waitFor(reactor, lambda: peek.lost.called, "the connection to close")
        assert peek.status == 413 and r.source.refused == {"too_large": 1}
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_413_for_too_many_events_or_more_than_a_buffer_holds(reactor: Any) -> None:
    r = await Rig(reactor, max_events=3, maxsize=10).start()
    try:
        code, _, answer = await r.post(json.dumps([event(f"s{i}") for i in range(4)]))
        assert code == 413 and "max_events" in answer["error"]
        code, _, answer = await r.post(
            makeMsg("m", 0, 4), {"Content-Type": "application/x-protobuf"}
        )
        assert code == 413
        r.source.maxEvents = 100
        code, _, answer = await r.post(json.dumps([event(f"s{i}") for i in range(11)]))
        assert code == 413 and "maxsize" in answer["error"]
        assert r.source.refused == {"too_many_events": 2, "too_large": 1}
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_429_while_a_blocking_output_is_full(reactor: Any) -> None:
    r = await Rig(reactor, maxsize=4, max_wait=0.2, retry_after=3).start()
    try:
        assert (await r.post(json.dumps([event(f"s{i}") for i in range(4)])))[0] == 200
        code, headers, answer = await r.post(json.dumps(event("late")))
        assert code == 429 and headers.getRawHeaders("retry-after") == ["3"]
        assert "full" in answer["error"] and len(r.buffered) == 4
        assert r.source.refused == {"full": 1} and r.source.waiting == 0
        assert r.output.buffer._waiters == []  # type: ignore[attr-defined]

        # Held, not refused, when room comes within max_wait.
        r.source.maxWait = 10.0
        pending = Deferred.fromCoroutine(r.post(json.dumps(event("later"))))
        await waitFor(reactor, lambda: r.source.waiting == 1, "the request to wait")
        batch = r.output.buffer.take(2)
        assert batch is not None
        r.output.buffer.ack(batch)
        code, _, answer = await pending
        assert (code, answer) == (200, {"accepted": 1})
        assert [e.service for e in r.buffered] == ["s2", "s3", "later"]
        assert r.source.held == 2
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_the_token_is_required(reactor: Any) -> None:
    r = await Rig(reactor, token="s3cret").start()
    try:
        body = json.dumps(event("a"))
        code, headers, answer = await r.post(body)
        assert code == 401 and headers.getRawHeaders("www-authenticate") == ['Bearer realm="duct"']
        code, _, _ = await r.post(body, {"Authorization": "Bearer wrong"})
        assert code == 401
        code, _, _ = await r.post(body, {"Authorization": "Bearer s3cret"})
        assert code == 200 and [e.service for e in r.buffered] == ["a"]
        assert r.source.refused == {"unauthorized": 2}
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_on_the_web_server_its_own_token_or_the_web_token(reactor: Any) -> None:
    r = await Rig(reactor, web=True, webToken="web", token="own").start()
    try:
        body = json.dumps(event("a"))
        assert (await r.post(body, {"Authorization": "Bearer web"}))[0] == 401
        assert (await r.post(body, {"Authorization": "Bearer own"}))[0] == 200
        assert (await r.post(body, {"Authorization": "Bearer own"}, "/ingest/x"))[0] == 404
    finally:
        await r.stop()
    r = await Rig(reactor, web=True, webToken="web").start()
    try:
        assert (await r.post(json.dumps(event("a"))))[0] == 401
        assert (await r.post(json.dumps(event("a")), {"Authorization": "Bearer web"}))[0] == 200
        assert r.source.refused == {"unauthorized": 1}
    finally:
        await r.stop()


@pytest_twisted.ensureDeferred
async def test_only_post(rig: Rig) -> None:
    client = HTTPClient(Agent(rig.reactor, pool=HTTPConnectionPool(rig.reactor, False)))
    response = await client.get(rig.url, timeout=10)
    await response.content()
    assert response.code == 405 and response.headers.getRawHeaders("allow") == ["POST"]
    assert rig.source.refused == {"method": 1}


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"path": "ingest"}, "path"),
        ({"path": "/a/b"}, "path"),
        ({"path": "/"}, "path"),
        ({"max_body": 0}, "max_body"),
        ({"max_wait": -1}, "max_wait"),
        ({"token": ""}, "token"),
        ({"listen": 5}, "listen"),
    ],
)
def test_bad_options_name_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"(^|; ){key}: "):
        configure(Ingest, {"service": "ingest", **config})
