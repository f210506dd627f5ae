"""duct.outputs.http.HTTP: what each answer does to a batch, the bodies, the options."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

import pytest
import pytest_twisted
from httpsink import HTTPSink, listen

from duct.objects import Event
from duct.output import Unencodable
from duct.outputs.http import HTTP
from duct.protocol.riemann import EncodedEvents, encodeEvent
from duct.testing import FakeDuct, OutputHarness, StubHTTP, configure, waitFor

URL = "http://sink.example/events"


def events(count: int, prefix: str = "e", first: int = 0) -> list[Event]:
    return [
        Event("ok", f"{prefix}{i}", "d", float(i), 60.0, tags=["t"], hostname="h", evtime=1e9 + i)
        for i in range(first, first + count)
    ]


def harness(sink: HTTPSink, **config: Any) -> OutputHarness:
    """An HTTP output on a Clock, answered by ``sink`` through `StubHTTP`."""
    h = OutputHarness(HTTP, {"url": URL, "flush_interval": 0, **config})
    StubHTTP(sink).install(h.output.http)
    h.start()
    return h


# -- what each answer does, on a Clock --------------------------------------------------


def test_a_2xx_acks_the_batch() -> None:
    sink = HTTPSink(script=[204])
    h = harness(sink)
    h.send(events(3))
    assert h.drain()
    assert sink.services == ["e0", "e1", "e2"]
    assert (h.sent, h.retries, h.buffered) == (3, 0, 0)
    assert h.stats()["responses"] == {"204": 1}


def test_a_500_is_retried_and_nothing_is_lost() -> None:
    sink = HTTPSink(script=[500, 503])
    h = harness(sink, retry_initial=1.0)
    h.send(events(5))
    assert h.drain()
    assert sink.services == [f"e{i}" for i in range(5)]
    assert h.retries == 2 and h.sent == 5
    assert h.stats()["responses"] == {"500": 1, "503": 1, "200": 1}


def test_a_429_waits_for_its_retry_after() -> None:
    sink = HTTPSink(script=[(429, {"Retry-After": "2"})])
    h = harness(sink, retry_initial=0.1)
    h.send(events(2))
    h.run(0)
    assert h.retries == 1 and sink.services == []
    h.run(1.9)
    assert len(sink.requests) == 1  # the backoff alone would have retried at 0.1s
    h.run(0.1)
    assert len(sink.requests) == 2 and sink.services == ["e0", "e1"]
    assert h.buffered == 0


def test_a_retry_after_date_and_its_ceiling() -> None:
    duct = FakeDuct()
    duct.clock.advance(1_700_000_000)
    date = formatdate(1_700_000_000 + 30, usegmt=True)
    sink = HTTPSink(script=[(503, {"Retry-After": date}), (429, {"Retry-After": "86400"})])
    h = OutputHarness(HTTP, {"url": URL, "flush_interval": 0, "retry_after_max": 60}, duct)
    StubHTTP(sink).install(h.output.http)
    h.start()
    h.send(events(1))
    h.run(29)
    assert len(sink.requests) == 1
    h.run(1)
    assert len(sink.requests) == 2  # then a day asked for, capped at a minute
    h.run(59)
    assert len(sink.requests) == 2
    h.run(1)
    assert len(sink.requests) == 3 and sink.services == ["e0"]


def test_a_400_isolates_the_bad_event_and_delivers_the_rest(logged: list[Any]) -> None:
    sink = HTTPSink(refuse={"e5"})
    h = harness(sink, batch_size=8)
    h.send(events(8))
    assert h.drain()
    assert sorted(sink.services) == sorted(f"e{i}" for i in range(8) if i != 5)
    assert h.dropped == {"rejected": 1}
    assert h.stats()["events_rejected"] == 1
    text = [e.get("log_format", "") for e in logged]
    dropped = [e for e in logged if "refused {count} events" in e.get("log_format", "")]
    assert dropped, text
    assert dropped[0]["error"] == "HTTP 400: bad event e5"  # the body's first line
    assert dropped[0]["events"] == "h e5"


@pytest.mark.parametrize("code", [401, 403, 404, 407])
def test_a_destination_refusing_everyone_is_retried_and_stalls(code: int) -> None:
    sink = HTTPSink(script=[code] * 20)
    h = harness(sink, retry_initial=1.0, retry_max=4.0, stall_after=10)
    h.send(events(2))
    h.run(12)
    assert h.retries >= 3 and h.buffered == 2 and h.dropped == {}
    assert h.output.stalled
    assert h.drain()  # the script runs out: the destination takes them at last
    assert sink.services == ["e0", "e1"]


def test_413_splits_a_batch_down_to_what_fits() -> None:
    class Small(HTTPSink):
        def render_POST(self, request: Any) -> bytes:
            if len(request.content.getvalue()) > 400:
                request.content.seek(0)
                request.setResponseCode(413)
                return b"too large\n"
            return super().render_POST(request)

    sink = Small()
    h = harness(sink, batch_size=16)
    h.send(events(16))
    assert h.drain()
    assert sorted(sink.services) == sorted(f"e{i}" for i in range(16))
    assert h.dropped == {}


def test_the_token_and_the_headers_are_sent() -> None:
    sink = HTTPSink()
    h = harness(sink, token="s3cret", headers={"X-Team": "ops"})
    h.send(events(1))
    assert h.drain()
    headers = sink.requests[0]["headers"]
    assert headers.getRawHeaders("authorization") == ["Bearer s3cret"]
    assert headers.getRawHeaders("x-team") == ["ops"]


def test_riemann_bytes_pass_through_unparsed() -> None:
    sink = HTTPSink()
    h = harness(sink, format="riemann")
    assert h.output.acceptsEncoded
    relayed = EncodedEvents([encodeEvent(e) for e in events(3)])
    h.output.eventsReceived(relayed)
    h.send(events(1, first=3))
    assert h.drain()
    assert sink.services == ["e0", "e1", "e2", "e3"]
    assert sink.requests[0]["format"] == "riemann"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({}, "url"),
        ({"url": "ftp://x/"}, "url"),
        ({"url": URL, "format": "xml"}, "format"),
        ({"url": URL, "token": "t", "user": "u"}, "token"),
        ({"url": URL, "password": "p"}, "password"),
        ({"url": URL, "gzip": "yes"}, "gzip"),
        ({"url": URL, "retry_after_max": -1}, "retry_after_max"),
        ({"url": URL, "headers": {"X": ["a"]}}, "headers"),
        ({"url": URL, "token": "t", "headers": {"Authorization": "x"}}, "headers"),
        ({"url": URL, "urls": URL}, "urls"),
    ],
)
def test_bad_options_name_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"(^|; ){key}: "):
        configure(HTTP, config)


# -- against a real twisted.web server ----------------------------------------------------


async def deliver(reactor: Any, sink: HTTPSink, batches: list[list[Event]], **config: Any) -> HTTP:
    port = listen(reactor, sink)
    url = f"http://127.0.0.1:{port.getHost().port}/events"
    duct = FakeDuct(reactor=reactor)
    output = HTTP(
        configure(HTTP, {"url": url, "retry_initial": 0.05, "flush_interval": 0, **config}), duct
    )
    try:
        await output.start()
        for batch in batches:
            output.eventsReceived(batch)
        await waitFor(reactor, lambda: not output.buffer.depth, "the buffer to empty")
    finally:
        await output.stop()
        await port.stopListening()
    return output


@pytest.mark.parametrize("format", ["json", "jsonl", "riemann"])
@pytest.mark.parametrize("gzip", [False, True])
@pytest_twisted.ensureDeferred
async def test_each_body_format_decodes_at_a_real_server(
    reactor: Any, format: str, gzip: bool
) -> None:
    sink = HTTPSink()
    sent = events(30)
    sent[3].metric = float("nan")
    sent[4].attributes = {"k": "v"}
    await deliver(reactor, sink, [sent], format=format, gzip=gzip, batch_size=10)
    assert [r["format"] for r in sink.requests] == [format] * 3
    assert all(
        (r["headers"].getRawHeaders("content-encoding") is not None) == gzip for r in sink.requests
    )
    assert sink.services == [e.service for e in sent]
    got = sink.events[4]
    assert (got["host"], got["metric"], got["tags"], got["attributes"]) == (
        "h",
        4.0,
        ["t"],
        {"k": "v"},
    )
    assert got["time"] == pytest.approx(1e9 + 4)
    assert sink.events[3]["metric"] is None or sink.events[3]["metric"] != sink.events[3]["metric"]


@pytest_twisted.ensureDeferred
async def test_500_then_200_and_a_dropped_connection_lose_nothing(reactor: Any) -> None:
    sink = HTTPSink(script=[500, "drop", 502])
    output = await deliver(reactor, sink, [events(10), events(10, first=10)], batch_size=5)
    assert sorted(sink.services) == sorted(f"e{i}" for i in range(20))
    assert output.failures == 3 and output.sent == 20


@pytest_twisted.ensureDeferred
async def test_bisection_at_a_real_server(reactor: Any) -> None:
    sink = HTTPSink(refuse={"e13"})
    output = await deliver(reactor, sink, [events(40)], batch_size=40)
    assert sorted(sink.services) == sorted(f"e{i}" for i in range(40) if i != 13)
    assert output.eventsRejected == 1 and output.buffer.drops["rejected"] == 1


@pytest_twisted.ensureDeferred
async def test_a_timeout_is_retried(reactor: Any) -> None:
    from twisted.web.server import NOT_DONE_YET

    class Slow(HTTPSink):
        def render_POST(self, request: Any) -> Any:
            if not self.requests:
                self.requests.append({})
                return NOT_DONE_YET  # never answered: the client times out
            return super().render_POST(request)

    sink = Slow()
    output = await deliver(reactor, sink, [events(3)], timeout=0.2)
    assert sink.services == ["e0", "e1", "e2"] and output.failures == 1


@pytest.mark.parametrize("format", ["json", "jsonl"])
def test_a_batch_encoded_whole_or_event_by_event_reads_the_same(format: str) -> None:
    output = HTTP(configure(HTTP, {"url": "http://127.0.0.1:1/", "format": format}), FakeDuct())

    def decoded(body: bytes) -> list[Any]:
        if format == "json":
            return json.loads(body)
        return [json.loads(line) for line in body.decode().splitlines()]

    batch = events(6)
    assert decoded(output.encode(batch)) == [e.asDict() for e in batch]
    batch[1].metric = float("nan")  # written as null, and nothing refused
    batch[2].attributes = {"k": object()}  # written as its str
    body = decoded(output.encode(batch))
    assert body[1]["metric"] is None and body[2]["attributes"]["k"].startswith("<object")
    assert [e["service"] for e in body] == [e.service for e in batch]
    batch[4].attributes = {("not", "text"): "x"}  # no JSON key: that event alone is refused
    with pytest.raises(Unencodable) as refused:
        output.encode(batch)
    assert refused.value.items == [4]
    assert decoded(output.encode([batch[0], batch[5]])) == [batch[0].asDict(), batch[5].asDict()]
