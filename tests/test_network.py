"""duct.sources.network: HTTP, TCP, TLS, DNS and Ping, each against a real peer on 127.0.0.1."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from netpeers import CertificateAuthority, Issued, MemoryAuthority, listenDNS, listenHTTP
from nginxserver import Nginx as NginxServer
from nginxserver import freePort
from twisted.internet.protocol import Factory, Protocol
from twisted.names import dns
from twisted.web import resource, server, static, util

from duct.objects import Event
from duct.sources.network import DNS, HTTP, TCP, TLS, Ping
from duct.testing import FakeDuct, SourceHarness, configure

# -- peers -------------------------------------------------------------------------


class Hanging(resource.Resource):
    """Answers nothing, ever: the request stays open until the client gives up."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Any] = []

    def render(self, request: Any) -> Any:
        self.pending.append(request)
        request.notifyFinish().addErrback(lambda _: None)
        return server.NOT_DONE_YET


def site() -> resource.Resource:
    root = resource.Resource()
    root.putChild(b"", static.Data(b"all systems go\n", "text/plain"))
    root.putChild(b"hang", Hanging())
    root.putChild(b"moved", util.Redirect(b"/"))
    return root


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def certificates(ca: CertificateAuthority) -> dict[str, Issued]:
    return {
        "valid": ca.issue(),
        "expired": ca.issue(notBefore=datetime.timedelta(days=-60),
                            notAfter=datetime.timedelta(days=-2)),
        "wrongname": ca.issue(names=("other.example",)),
    }  # fmt: skip


@pytest.fixture
def web(reactor: Any, certificates: dict[str, Issued]) -> Iterator[dict[str, int]]:
    """One site, over HTTP and over HTTPS with each of the certificates; their ports."""
    ports = {"http": listenHTTP(reactor, site())}
    for name, issued in certificates.items():
        ports[name] = listenHTTP(reactor, site(), issued)
    yield {name: port.getHost().port for name, port in ports.items()}
    for port in ports.values():
        port.stopListening()


def harness(reactor: Any, cls: type, **config: Any) -> SourceHarness:
    return SourceHarness(cls, {"service": "check", **config}, duct=FakeDuct(reactor=reactor))


def byService(events: list[Event]) -> dict[str, Event]:
    return {event.service: event for event in events}


# -- HTTP ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_http_latency_status_and_match(reactor: Any, web: dict[str, int]) -> None:
    url = f"http://127.0.0.1:{web['http']}/"
    events = byService(await harness(reactor, HTTP, url=url, match="systems go").poll())
    latency, status = events["check.latency"], events["check.status"]
    assert (latency.state, status.state, status.metric) == ("ok", "ok", 200)
    assert latency.metric is not None and latency.metric > 0
    assert set(events) == {"check.latency", "check.status"}  # no certificate over http

    events = byService(await harness(reactor, HTTP, url=url, match="on fire").poll())
    assert events["check.latency"].state == "critical"
    assert "the body does not contain 'on fire'" in events["check.latency"].description


@pytest_twisted.ensureDeferred
async def test_http_status_and_redirects(reactor: Any, web: dict[str, int]) -> None:
    base = f"http://127.0.0.1:{web['http']}"
    events = byService(await harness(reactor, HTTP, url=f"{base}/nowhere").poll())
    assert events["check.status"].metric == 404 and events["check.status"].state == "critical"
    assert "unexpected status 404" in events["check.latency"].description

    events = byService(await harness(reactor, HTTP, url=f"{base}/moved").poll())
    assert (events["check.status"].metric, events["check.status"].state) == (302, "ok")
    events = byService(
        await harness(reactor, HTTP, url=f"{base}/moved", expect_status=[200]).poll()
    )
    assert events["check.status"].state == "critical"
    followed = harness(reactor, HTTP, url=f"{base}/moved", follow_redirects=True, match="go")
    events = byService(await followed.poll())
    assert (events["check.status"].metric, events["check.latency"].state) == (200, "ok")


@pytest_twisted.ensureDeferred
async def test_http_timeout_and_refusal_are_critical(reactor: Any, web: dict[str, int]) -> None:
    url = f"http://127.0.0.1:{web['http']}/hang"
    [event] = await harness(reactor, HTTP, url=url, timeout=0.3).poll()
    assert (event.service, event.state) == ("check.latency", "critical")
    assert event.description == f"{url}: no complete answer within 0.3s"

    url = f"http://127.0.0.1:{freePort()}/"
    [event] = await harness(reactor, HTTP, url=url).poll()
    assert event.state == "critical" and "connection refused" in event.description


@pytest_twisted.ensureDeferred
async def test_https_verifies_and_reports_days_left(
    reactor: Any, web: dict[str, int], ca: CertificateAuthority, certificates: dict[str, Issued]
) -> None:
    url = f"https://localhost:{web['valid']}/"
    check = harness(reactor, HTTP, url=url, tls_ca=str(ca.path), match="go")
    events = byService(await check.poll())
    assert events["check.latency"].state == "ok", events["check.latency"].description
    expiry = events["check.tls.expiry"]
    left = (certificates["valid"].notAfter.timestamp() - reactor.seconds()) / 86400
    assert expiry.state == "ok" and abs(expiry.metric - left) < 0.02
    assert round(expiry.metric) == 90
    assert expiry.attributes["issuer"] == "CN=duct test CA"
    assert expiry.attributes["subject"] == "CN=localhost"


@pytest_twisted.ensureDeferred
async def test_https_verification_failures_say_why(
    reactor: Any, web: dict[str, int], ca: CertificateAuthority
) -> None:
    cases = {
        "expired": "certificate expired",
        "wrongname": "certificate is not for localhost",
    }
    for name, why in cases.items():
        url = f"https://localhost:{web[name]}/"
        [event] = await harness(reactor, HTTP, url=url, tls_ca=str(ca.path)).poll()
        assert event.state == "critical" and why in event.description, event.description
    url = f"https://localhost:{web['valid']}/"
    [event] = await harness(reactor, HTTP, url=url).poll()  # the system CAs do not know ours
    assert event.state == "critical"
    assert "does not verify against the system CAs" in event.description, event.description


@pytest_twisted.ensureDeferred
async def test_http_against_the_real_nginx(reactor: Any, nginx: NginxServer) -> None:
    events = byService(
        await harness(reactor, HTTP, url=nginx.statusURL, match="Active connections").poll()
    )
    assert events["check.status"].metric == 200
    assert events["check.latency"].state == "ok", events["check.latency"].description


def test_http_refuses_a_status_that_is_not_a_code() -> None:
    with pytest.raises(ValueError, match="expect_status"):
        configure(HTTP, {"service": "web", "expect_status": ["200"]})
    assert configure(HTTP, {"service": "web", "expect_status": 204})["expect_status"] == 204


# -- TCP -----------------------------------------------------------------------------


class Greeter(Protocol):
    """Says hello, then answers each line with the same line in capitals."""

    def connectionMade(self) -> None:
        self.transport.write(b"HELLO duct-test\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[union-attr]


@pytest.fixture
def greeter(reactor: Any) -> Iterator[int]:
    port = reactor.listenTCP(0, Factory.forProtocol(Greeter), interface="127.0.0.1")
    yield port.getHost().port
    port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tcp_connects_sends_and_matches(reactor: Any, greeter: int) -> None:
    [event] = await harness(reactor, TCP, host="127.0.0.1", port=greeter).poll()
    assert (event.service, event.state) == ("check.latency", "ok") and event.metric >= 0

    check = harness(reactor, TCP, host="127.0.0.1", port=greeter, send="ping\n", expect="PING")
    events = byService(await check.poll())
    assert events["check.latency"].state == events["check.reply"].state == "ok"

    check = harness(reactor, TCP, host="127.0.0.1", port=greeter, expect="SSH-2.0", timeout=0.3)
    events = byService(await check.poll())
    assert events["check.latency"].state == "critical"
    assert "no reply containing b'SSH-2.0'" in events["check.latency"].description
    assert "HELLO duct-test" in events["check.latency"].description


@pytest_twisted.ensureDeferred
async def test_tcp_closed_port_is_critical(reactor: Any) -> None:
    port = freePort()
    [event] = await harness(reactor, TCP, host="127.0.0.1", port=port).poll()
    assert event.state == "critical"
    assert event.description == f"127.0.0.1:{port}: connection refused"


# -- TLS -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_days_left_issuer_and_subject(
    reactor: Any, web: dict[str, int], ca: CertificateAuthority, certificates: dict[str, Issued]
) -> None:
    check = harness(reactor, TLS, host="localhost", port=web["valid"], tls_ca=str(ca.path))
    [event] = await check.poll()
    left = (certificates["valid"].notAfter.timestamp() - reactor.seconds()) / 86400
    assert event.service == "check.expiry" and abs(event.metric - left) < 0.02
    notAfter = certificates["valid"].notAfter.isoformat()
    assert event.attributes == {
        "issuer": "CN=duct test CA",
        "subject": "CN=localhost",
        "not_after": notAfter,
    }


@pytest_twisted.ensureDeferred
async def test_tls_expiry_thresholds_are_the_warning_and_critical_rules(
    reactor: Any, web: dict[str, int], ca: CertificateAuthority
) -> None:
    rules = {"warning": {r"check\.expiry": "< 100"}, "critical": {r"check\.expiry": "< 7"}}
    check = SourceHarness(TLS, {"service": "check", "host": "127.0.0.1", "port": web["valid"],
                                "tls_ca": str(ca.path), **rules},
                          duct=FakeDuct(reactor=reactor), pipeline=True)  # fmt: skip
    await check.source.poll()
    assert check.latest("check.expiry").state == "warning"  # 90 days left


@pytest_twisted.ensureDeferred
async def test_tls_failures_are_critical_with_the_reason(
    reactor: Any, web: dict[str, int], ca: CertificateAuthority
) -> None:
    ca_file = str(ca.path)
    [expired] = await harness(reactor, TLS, host="localhost", port=web["expired"],
                              tls_ca=ca_file).poll()  # fmt: skip
    assert expired.state == "critical" and "certificate expired" in expired.description
    assert expired.metric is not None and -2.1 < expired.metric < -1.9  # days since

    [wrong] = await harness(reactor, TLS, host="127.0.0.1", port=web["wrongname"],
                            servername="localhost", tls_ca=ca_file).poll()  # fmt: skip
    assert wrong.state == "critical" and "certificate is not for localhost" in wrong.description
    assert wrong.attributes["subject"] == "CN=other.example"

    [untrusted] = await harness(reactor, TLS, host="localhost", port=web["valid"]).poll()
    assert untrusted.state == "critical"
    assert "does not verify against the system CAs" in untrusted.description
    [unchecked] = await harness(reactor, TLS, host="localhost", port=web["valid"],
                                tls_verify=False).poll()  # fmt: skip
    assert unchecked.state == "ok" and round(unchecked.metric) == 90

    port = freePort()
    [closed] = await harness(reactor, TLS, host="127.0.0.1", port=port).poll()
    assert closed.state == "critical" and "connection refused" in closed.description


# -- DNS -----------------------------------------------------------------------------


@pytest.fixture
def nameserver(reactor: Any) -> Iterator[int]:
    records = {
        b"www.duct.test": [dns.Record_A("192.0.2.10"), dns.Record_A("192.0.2.11")],
        b"v6.duct.test": [dns.Record_AAAA("2001:db8::1")],
        b"duct.test": [dns.Record_MX(10, b"mail.duct.test"),
                       dns.Record_TXT(b"v=spf1 -all")],
        b"alias.duct.test": [dns.Record_CNAME(b"www.duct.test")],
    }  # fmt: skip
    tcp, udp = listenDNS(reactor, MemoryAuthority(b"duct.test", records))
    yield tcp.getHost().port
    tcp.stopListening()
    udp.stopListening()


def dnsCheck(reactor: Any, port: int, **config: Any) -> SourceHarness:
    return harness(reactor, DNS, server="127.0.0.1", port=port, timeout=2, **config)


@pytest_twisted.ensureDeferred
async def test_dns_answers_and_expected_answers(reactor: Any, nameserver: int) -> None:
    events = byService(await dnsCheck(reactor, nameserver, name="www.duct.test").poll())
    assert events["check.answers"].metric == 2 and events["check.answers"].state == "ok"
    assert events["check.latency"].metric > 0
    assert "192.0.2.10" in events["check.latency"].description

    for config in (
        {"name": "www.duct.test", "expect": "192.0.2.11"},
        {"name": "v6.duct.test", "type": "AAAA", "expect": "2001:db8::1"},
        {"name": "duct.test", "type": "MX", "expect": "mail.duct.test."},
        {"name": "duct.test", "type": "MX", "expect": "10 mail.duct.test"},
        {"name": "duct.test", "type": "TXT", "expect": "v=spf1 -all"},
        {"name": "alias.duct.test", "type": "CNAME", "expect": "WWW.duct.test"},
    ):
        events = byService(await dnsCheck(reactor, nameserver, **config).poll())
        assert events["check.answers"].state == "ok", (config, events["check.answers"])

    events = byService(
        await dnsCheck(reactor, nameserver, name="www.duct.test", expect="192.0.2.99").poll()
    )
    answers = events["check.answers"]
    assert answers.state == "critical" and answers.metric == 2
    assert "'192.0.2.99' is not among the answers (192.0.2.10, 192.0.2.11)" in answers.description


@pytest_twisted.ensureDeferred
async def test_dns_missing_names_and_servers_are_critical(reactor: Any, nameserver: int) -> None:
    events = byService(await dnsCheck(reactor, nameserver, name="nope.duct.test").poll())
    assert events["check.answers"].state == "critical"
    assert "the name does not exist" in events["check.answers"].description

    events = byService(await dnsCheck(reactor, nameserver, name="v6.duct.test").poll())
    assert events["check.answers"].state == "critical" and events["check.answers"].metric == 0
    assert "no A record" in events["check.answers"].description

    silent = freePort()
    check = harness(reactor, DNS, server="127.0.0.1", port=silent, name="www.duct.test",
                    timeout=0.3)  # fmt: skip
    events = byService(await check.poll())
    assert events["check.latency"].state == "critical"
    assert "no answer within 0.3s" in events["check.latency"].description


# -- Ping ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_loopback(reactor: Any) -> None:
    check = harness(reactor, Ping, destination="127.0.0.1", count=2, wait=0.2)
    events = byService(await check.poll())
    assert (events["check.loss"].metric, events["check.loss"].state) == (0.0, "ok")
    assert events["check.latency"].metric > 0


@pytest_twisted.ensureDeferred
async def test_ping_unroutable_address_is_total_loss(reactor: Any) -> None:
    # TEST-NET-2: routed nowhere (TEST-NET-1's 192.0.2.1 is the gateway of some containers)
    check = harness(reactor, Ping, destination="198.51.100.1", count=2, wait=0.2, timeout=1)
    [loss] = await check.poll()
    assert (loss.service, loss.metric, loss.state) == ("check.loss", 100.0, "critical")
    assert "198.51.100.1" in loss.description


def test_ping_reads_the_summaries_of_the_usual_pings() -> None:
    from duct.sources.network.ping import parseSummary

    iputils = ("2 packets transmitted, 1 received, +1 errors, 50% packet loss, time 1001ms\n"
               "rtt min/avg/max/mdev = 0.027/0.268/0.509/0.241 ms\n")  # fmt: skip
    busybox = ("2 packets transmitted, 2 packets received, 0% packet loss\n"
               "round-trip min/avg/max = 0.1/0.2/0.3 ms\n")  # fmt: skip
    assert parseSummary(iputils) == (2, 1, 0.268)
    assert parseSummary(iputils).loss == 50.0  # type: ignore[union-attr]
    assert parseSummary(busybox) == (2, 2, 0.2)
    assert parseSummary("ping: nowhere: Name or service not known\n") is None


def test_the_network_checks_keep_the_original_paths(tmp_path: Path) -> None:
    for cls in (HTTP, TCP, TLS, DNS, Ping):
        assert cls.__module__ == "duct.sources.network"
    checked = configure(Ping, {"service": "gw", "destination": "10.0.0.1"})
    assert checked["destination"] == "10.0.0.1"


# -- on a Clock --------------------------------------------------------------------


def test_http_on_a_clock_sends_the_request_and_times_out_at_its_time() -> None:
    """The request as configured, and a timeout that is the source's clock's."""
    from duct.testing import StubHTTP

    hanging = Hanging()
    http = StubHTTP({"/health": "ok", "/slow": hanging})
    config = {"service": "web", "url": "http://web/health", "method": "post", "body": "ping",
              "headers": {"X-Probe": "1"}, "user": "me", "password": "pw"}  # fmt: skip
    check = SourceHarness(HTTP, config, http=http)
    check.start()
    assert check.latest("web.status").metric == 200
    [request] = http.requests
    assert (request.method, request.body, request.header("X-Probe")) == ("POST", b"ping", "1")
    assert request.header("User-Agent") == "Duct HTTP checker"
    assert (
        request.header(
            "Authorization",
        )
        is not None
    )

    slow = SourceHarness(HTTP, {"service": "web", "url": "http://web/slow", "timeout": 5},
                         http=http)  # fmt: skip
    slow.start()
    assert slow.events == [] and hanging.pending
    slow.advance(4.9)
    assert slow.events == []
    slow.advance(0.1)
    event = slow.latest("web.latency")
    assert event.state == "critical" and event.metric == 5000.0
    assert event.description == "http://web/slow: no complete answer within 5s"
