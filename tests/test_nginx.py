"""duct.sources.nginx.Nginx: on StubHTTP with the pipeline, and against a real nginx."""

from __future__ import annotations

import inspect
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from nginxserver import Nginx as NginxServer
from twisted.web.client import HTTPConnectionPool

import duct.sources.nginx as nginxSource
from duct.lib.http import HTTPError
from duct.sources.nginx import Nginx
from duct.testing import SourceHarness, StubHTTP, recordingService, waitFor


def page(active: int, accepts: int, handled: int, requests: int) -> str:
    """A stub_status page, as nginx writes it."""
    return (
        f"Active connections: {active} \n"
        "server accepts handled requests\n"
        f" {accepts} {handled} {requests} \n"
        "Reading: 1 Writing: 2 Waiting: 3 \n"
    )


def test_gauges_rates_attributes_and_a_critical_rule() -> None:
    http = StubHTTP({"/nginx_status": page(10, 100, 100, 500)})
    config = {"service": "nginx", "interval": 10, "url": "http://web:8080/nginx_status",
              "critical": {r"nginx\.requests": "> 50"}}  # fmt: skip
    harness = SourceHarness(Nginx, config, http=http, pipeline=True)
    harness.start()
    assert harness.latest("nginx.active").metric == 10
    assert [harness.latest(f"nginx.{n}").metric for n in ("reading", "writing", "waiting")] == [
        1,
        2,
        3,
    ]
    http.routes["/nginx_status"] = page(12, 120, 118, 1100)
    harness.advance(10)
    assert harness.latest("nginx.accepts").metric == 2.0  # 20 more in 10 s
    assert harness.latest("nginx.handled").metric == 1.8
    requests = harness.latest("nginx.requests")
    assert (requests.metric, requests.state) == (60.0, "critical")
    assert requests.attributes == {"server": "web", "port": "8080"}
    assert harness.latest("nginx.active").state == "ok"
    assert harness.errors == []
    assert [r.path for r in http.requests] == ["/nginx_status"] * 2


def test_an_http_error_and_a_page_that_does_not_parse_fail_the_poll(observe_errors: Any) -> None:
    http = StubHTTP({"/nginx_status": (500, "upstream exploded")})
    harness = SourceHarness(Nginx, {"service": "nginx", "interval": 10,
                                    "stats_url": "http://web/nginx_status"}, http=http)  # fmt: skip
    harness.start()
    http.routes["/nginx_status"] = "<html>Welcome to nginx!</html>"
    harness.advance(10)
    first, second = harness.errors
    assert first.check(HTTPError) and first.value.code == 500
    assert second.check(ValueError)
    assert "http://web/nginx_status is not a stub_status page" in str(second.value)
    assert harness.events == [] and harness.source.errors == 2
    [logged] = observe_errors.take()  # the second failure is counted, not logged again
    assert "upstream exploded" in logged["error"]


@pytest_twisted.ensureDeferred
async def test_duct_polls_a_real_nginx_and_counts_the_requests_it_served(
    reactor: Any, nginx: NginxServer
) -> None:
    config = {
        "stagger": 0,
        "sources": [{"source": "duct.sources.nginx.Nginx", "service": "nginx",
                     "interval": 0.5, "url": nginx.statusURL}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)

    def series(name: str) -> list[Any]:
        return [e for e in output.written if e.service == f"nginx.{name}"]

    service.startService()
    try:
        await waitFor(reactor, lambda: series("requests"), "a first rate", timeout=30)
        pool = HTTPConnectionPool(reactor, persistent=False)  # one connection each
        for _ in range(25):
            response = await treq.get(f"http://127.0.0.1:{nginx.port}/", pool=pool)
            assert await response.text() == "hello\n"
        seen = len(series("requests"))
        await waitFor(reactor, lambda: len(series("requests")) >= seen + 2, "more rates", 30)
    finally:
        await service.stopService()

    # Each rate times its interval is what the counter grew by: one request
    # per poll (the poll itself), and the 25 made after the first rate.
    for name in ("requests", "accepts", "handled"):
        rates = series(name)
        grew = sum(b.metric * (b.time - a.time) for a, b in pairwise(rates))
        assert round(grew) == (len(rates) - 1) + 25, name
    active = series("active")[-1]
    assert active.metric >= 1 and active.state == "ok"  # the poll's own connection
    assert active.attributes == {"server": "127.0.0.1", "port": str(nginx.port)}
    assert service.sources[0].errors == 0, nginx.log()


def test_the_plugin_guide_shows_this_source_and_these_tests() -> None:
    guide = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    assert Path(nginxSource.__file__).read_text().rstrip() in guide
    for shown in (
        page,
        test_gauges_rates_attributes_and_a_critical_rule,
        test_an_http_error_and_a_page_that_does_not_parse_fail_the_poll,
        test_duct_polls_a_real_nginx_and_counts_the_requests_it_served,
    ):
        assert inspect.getsource(shown).rstrip() in guide, shown.__name__
