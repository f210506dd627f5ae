"""duct.lib.http.Client, the ``self.http`` of every plugin: options, errors, TLS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.x509.oid import NameOID
from test_riemann_tls import Authority, serverOptions, write
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import LogLevel
from twisted.web.client import ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from duct.lib.http import HTTP_CLIENT_OPTIONS, BadJSON, Client, HTTPError
from duct.lib.process import Timeout
from duct.objects import Source
from duct.options import Option
from duct.testing import FakeDuct, StubHTTP, configure


class Fetcher(Source):
    options = (Option("url", "string", "http://web/", "what to fetch"), *HTTP_CLIENT_OPTIONS)


def fetcher(stub: StubHTTP | None = None, **config: Any) -> Fetcher:
    source = Fetcher(configure(Fetcher, {"service": "f", **config}), lambda e: None, FakeDuct())
    if stub is not None:
        stub.install(source.http)
    return source


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def test_the_plugins_options_are_applied_to_every_request() -> None:
    stub = StubHTTP({"/status": b"fine"})
    source = fetcher(stub, headers={"X-Team": "ops"}, user="mon", password="s3cret", timeout=2.5)
    client = source.http
    assert client is source.http  # built once
    assert client.reactor is source.duct.reactor and client.timeout == 2.5
    assert result(client.getBody("http://web/status", headers={"X-Extra": "1"})) == b"fine"
    [request] = stub.requests
    assert (request.method, request.path) == ("GET", "/status")
    assert request.header("x-team") == "ops" and request.header("x-extra") == "1"
    assert request.header("authorization") == "Basic bW9uOnMzY3JldA=="  # mon:s3cret


def test_a_plugin_without_http_options_gets_the_defaults() -> None:
    plain = Source({"service": "p"}, lambda e: None, FakeDuct())
    assert plain.http.timeout == 10.0 and plain.http.auth is None and plain.http.headers == {}


def test_status_outside_2xx_is_an_http_error_with_the_body() -> None:
    stub = StubHTTP({"/broken": (503, "down for maintenance")})
    failure = result(fetcher(stub).http.getBody("http://web/broken"))
    assert failure.check(HTTPError)
    assert failure.value.code == 503 and failure.value.body == "down for maintenance"
    assert "GET http://web/broken returned 503" in str(failure.value)
    missing = result(fetcher(stub).http.getBody("http://web/elsewhere"))
    assert missing.value.code == 404


def test_get_json_asks_for_json_and_parses_it() -> None:
    stub = StubHTTP({"/api": '{"up": true, "n": [1, 2]}', "/html": b"<html>"})
    client = fetcher(stub).http
    assert result(client.getJson("http://web/api")) == {"up": True, "n": [1, 2]}
    assert stub.requests[0].header("accept") == "application/json"
    failure = result(client.getJson("http://web/html"))
    assert failure.check(BadJSON) and failure.value.body == "<html>"


def test_request_sends_a_body_and_query_parameters() -> None:
    def echo(request: Any) -> bytes:
        return json.dumps({"args": {k.decode(): v[0].decode() for k, v in request.args.items()},
                           "body": request.content.read().decode()}).encode()  # fmt: skip

    stub = StubHTTP({"/echo": echo})
    client = fetcher(stub).http
    response = result(client.request("post", "http://web/echo", json={"a": 1}, params={"q": "x"}))
    assert response.code == 200
    assert response.json() == {"args": {"q": "x"}, "body": '{"a":1}'}
    assert stub.requests[0].method == "POST" and stub.requests[0].path == "/echo?q=x"
    assert stub.requests[0].header("content-type").startswith("application/json")
    raw = result(client.request("PUT", "http://web/echo", data="text"))
    assert raw.json()["body"] == "text"


class Hanging(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.pending.append(request)
        request.write(b"partial ")
        return NOT_DONE_YET


def test_the_timeout_covers_the_whole_body_on_the_services_clock() -> None:
    hanging = Hanging()
    stub = StubHTTP(hanging)
    source = fetcher(stub, timeout=5)
    d = source.http.getBody("http://web/slow")
    stub.flush()
    assert hanging.pending and not d.called  # headers came, the body did not end
    source.duct.clock.advance(4.9)
    assert not d.called
    source.duct.clock.advance(0.2)
    failure = result(d)
    assert failure.check(Timeout) and "timed out after 5.0s" in str(failure.value)


def test_a_stub_answers_later_on_flush() -> None:
    hanging = Hanging()
    stub = StubHTTP({"/later": hanging})
    d = fetcher(stub).http.getBody("http://web/later")
    hanging.pending[0].write(b"and done")
    hanging.pending[0].finish()
    assert not d.called
    stub.flush()
    assert result(d) == b"partial and done"


def test_a_plugin_that_never_fetches_never_imports_treq() -> None:
    # In a process of its own: duct.testing (and this file) import treq.
    code = """if True:
        import sys
        from twisted.internet.task import Clock
        from duct.sources.linux.basic import LoadAverage

        class Duct:
            clock = reactor = Clock()
            hostname = "h"

        source = LoadAverage({"service": "load"}, lambda events: None, Duct())
        source.poll()
        assert "treq" not in sys.modules and "twisted.web" not in sys.modules
        source.http
        assert "treq" in sys.modules
    """
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- TLS, against a real HTTPS server on 127.0.0.1 -----------------------------------


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        peer = request.transport.getPeerCertificate()
        if peer is None:
            return b"hello stranger"
        [name] = peer.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return b"hello " + str(name.value).encode()


def httpsServer(reactor: Any, options: Any) -> Any:
    return reactor.listenSSL(0, Site(Hello()), options, interface="127.0.0.1")


def realClient(reactor: Any, **config: Any) -> Client:
    return Client(reactor, configure(Fetcher, {"service": "tls", **config}), name="tls")


@pytest_twisted.ensureDeferred
async def test_https_is_checked_against_tls_ca_and_presents_tls_cert(
    reactor: Any, tmp_path: Path
) -> None:
    ca, clients = Authority("duct test CA"), Authority("duct client CA")
    cert, key = clients.issue("poller", server=False)
    port = httpsServer(reactor, serverOptions(ca, clientCA=clients))
    try:
        url = f"https://127.0.0.1:{port.getHost().port}/"
        client = realClient(
            reactor,
            tls_ca=write(tmp_path, "ca.pem", ca.pem),
            tls_cert=write(tmp_path, "c.pem", cert),
            tls_key=write(tmp_path, "c.key", key),
        )
        assert await client.getBody(url) == b"hello poller"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_https_from_an_unknown_ca_is_refused_unless_tls_verify_is_false(
    reactor: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    ca, other = Authority("duct test CA"), Authority("someone else")
    port = httpsServer(reactor, serverOptions(ca))
    try:
        url = f"https://127.0.0.1:{port.getHost().port}/"
        strict = realClient(reactor, tls_ca=write(tmp_path, "other.pem", other.pem))
        with pytest.raises((ResponseNeverReceived, ConnectionLost)):
            await strict.getBody(url)
        lax = realClient(reactor, tls_verify=False)
        assert await lax.getBody(url) == b"hello stranger"
        assert await lax.getBody(url) == b"hello stranger"
    finally:
        await port.stopListening()
    warnings = [e for e in logged if "tls_verify is false" in e.get("log_format", "")]
    assert [e["log_level"] for e in warnings] == [LogLevel.warn]  # once, not per request
    assert warnings[0]["name"] == "tls" and warnings[0]["host"] == "127.0.0.1"
