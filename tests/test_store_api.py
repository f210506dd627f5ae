"""The store's web routes over real HTTP: /api/services, /api/series, the page and its files."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet.task import Clock, deferLater
from twisted.web.client import HTTPConnectionPool

from duct.objects import Event
from duct.outputs.store import Store
from duct.sources.linux.basic import CPU, Memory
from duct.stats import declaredStats, read
from duct.testing import FakeDuct, configure
from duct.web.site import buildSite

T0 = 1_800_000_000.0


class Served:
    """A started Store behind duct's web Site, which mounts its webRoutes()."""

    def __init__(self, store: Store, port: Any, pool: HTTPConnectionPool, clock: Clock) -> None:
        self.store = store
        self.port = port
        self.pool = pool
        self.clock = clock
        self.base = f"http://127.0.0.1:{port.getHost().port}/"

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        response = await treq.get(self.base + path, pool=self.pool, **kwargs)
        body = await response.content()
        return response.code, response.headers, body

    async def json(self, path: str) -> tuple[int, Any]:
        code, headers, body = await self.get(path)
        assert headers.getRawHeaders(b"content-type") == [b"application/json; charset=utf-8"]
        return code, json.loads(body)


@pytest_twisted.async_yield_fixture
async def served(request: Any, tmp_path: Path, reactor: Any) -> AsyncIterator[Served]:
    clock = Clock()
    clock.advance(T0 + 100)
    duct = FakeDuct(clock, hostname="web1")
    duct.reactor = reactor
    config = {"path": str(tmp_path / "store.sqlite"), "flush_interval": 0.0}
    store = Store(configure(Store, config), duct)
    duct.sources = [  # type: ignore[attr-defined]
        CPU(configure(CPU, {"service": "cpu"}), lambda events: None, duct),
        Memory(configure(Memory, {"service": "mem"}), lambda events: None, duct),
    ]
    await store.start()
    site = buildSite(duct, token=getattr(request, "param", None), plugins=store.webRoutes())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        yield Served(store, port, pool, clock)
    finally:
        await port.stopListening()
        await pool.closeCachedConnections()
        await store.stop()


async def write(served: Served, reactor: Any, events: list[Event]) -> None:
    written = served.store.sent + len(events)
    served.store.eventsReceived(events)
    for _ in range(1000):
        served.clock.advance(0)
        if served.store.sent >= written:
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the store did not write")


def ev(service: str, metric: float | None, when: float, state: str = "ok") -> Event:
    return Event(state, service, "text", metric, 60.0, hostname="web1", evtime=when)


@pytest_twisted.ensureDeferred
async def test_services_report_state_and_the_graph_type_the_sources_declare(
    served: Served, reactor: Any
) -> None:
    await write(
        served,
        reactor,
        [
            ev("cpu", 0.25, T0),
            ev("cpu.user", 0.2, T0),
            ev("cpu.guest", 0.0, T0),
            ev("mem.used", 10.0, T0, state="critical"),
            ev("mem.total", 20.0, T0),
            ev("other", None, T0),
        ],
    )
    code, body = await served.json("api/services")
    assert code == 200
    assert body["now"] == T0 + 100
    found = {
        (s["service"]): (s["state"], s["metric"], s["graph"], s["group"]) for s in body["services"]
    }
    assert found == {
        "cpu": ("ok", 0.25, "line", "cpu"),
        "cpu.user": ("ok", 0.2, "full-stack", "cpu.*"),
        "cpu.guest": ("ok", 0.0, "line", "cpu.guest"),  # the longer prefix wins
        "mem.used": ("critical", 10.0, "stack", "mem.*"),
        "mem.total": ("ok", 20.0, "line", "mem.total"),
        "other": ("ok", None, "line", "other"),
    }
    assert all(s["host"] == "web1" and s["time"] == T0 for s in body["services"])
    assert ["cpu.*", "full-stack"] in body["graphs"]
    stats = read(declaredStats(Store), served.store)
    assert stats["points_written"] == 5 and stats["queries"] == 1


@pytest_twisted.ensureDeferred
async def test_series_returns_points_in_range_downsampled_to_points(
    served: Served, reactor: Any
) -> None:
    await write(served, reactor, [ev("load", float(i), T0 + i) for i in range(100)])
    code, body = await served.json(f"api/series?host=web1&service=load&since={T0}&until={T0 + 99}")
    assert code == 200
    assert body["points"] == [[T0 + i, float(i)] for i in range(100)]

    code, body = await served.json(
        f"api/series?host=web1&service=load&since={T0}&until={T0 + 99}&points=4"
    )
    assert code == 200 and len(body["points"]) == 4
    # 99 seconds in 4 buckets of 24.75: the means of 0-24, 25-49, 50-74 and 75-99.
    assert [v for _, v in body["points"]] == pytest.approx([12.0, 37.0, 62.0, 87.0])
    assert [t - T0 for t, _ in body["points"]] == pytest.approx([12.0, 37.0, 62.0, 87.0])

    # since, relative to the server's clock (T0 + 100): the last 10 seconds.
    code, body = await served.json("api/series?host=web1&service=load&since=-10")
    assert [v for _, v in body["points"]] == [90.0 + i for i in range(10)]

    code, body = await served.json("api/series?host=web1&service=nothing")
    assert code == 404 and "nothing" in body["error"]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("service=load", "host"),
        ("host=web1", "service"),
        ("host=web1&service=load&points=many", "points"),
        ("host=web1&service=load&points=0", "points"),
        ("host=web1&service=load&since=yesterday", "since"),
        ("host=web1&service=load&until=nan", "until"),
        ("host=web1&service=load&since=200&until=100", "since"),
        ("host=%ff&service=load", "host"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    served: Served, query: str, parameter: str
) -> None:
    code, body = await served.json("api/series?" + query)
    assert code == 400
    assert body["parameter"] == parameter and body["error"].startswith(parameter + ":")
    assert read(declaredStats(Store), served.store)["bad_requests"] == 1  # in /stats and /metrics


@pytest_twisted.ensureDeferred
async def test_points_above_the_cap_are_lowered_to_it(served: Served, reactor: Any) -> None:
    from duct.dashboard.api import MAX_POINTS

    await write(served, reactor, [ev("load", float(i), T0 - 5000 + i) for i in range(5000)])
    code, body = await served.json(
        f"api/series?host=web1&service=load&since={T0 - 5000}&points=100000"
    )
    assert code == 200 and 0 < len(body["points"]) <= MAX_POINTS


@pytest_twisted.ensureDeferred
async def test_the_api_root_lists_its_endpoints_with_or_without_a_slash(served: Served) -> None:
    for path in ("api", "api/"):
        code, body = await served.json(path)
        assert (code, body) == (200, {"endpoints": ["services", "series"]}), path


@pytest_twisted.ensureDeferred
async def test_a_stopped_store_answers_503(served: Served) -> None:
    await served.store.stop()
    code, body = await served.json("api/services")
    assert code == 503 and "not running" in body["error"]


@pytest_twisted.ensureDeferred
async def test_the_page_inlines_its_script_and_style_and_allows_only_them(
    served: Served,
) -> None:
    code, headers, body = await served.get("")
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    page = body.decode("utf-8")
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "new EventSource(" in script and "access_token" in script
    assert "--critical" in style
    assert 'src="' not in page and 'rel="stylesheet"' not in page  # nothing else to fetch

    [policy] = headers.getRawHeaders(b"content-security-policy")
    rules = dict(rule.strip().split(" ", 1) for rule in policy.decode().split(";"))
    assert rules["default-src"] == "'none'" and rules["connect-src"] == "'self'"
    for kind, text in (("script-src", script), ("style-src", style)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert rules[kind] == f"'sha256-{digest}'"

    for missing in ("dashboard.js", "static/dashboard.js", "index.html/x", "api/nothing"):
        code, headers, body = await served.get(missing)
        assert code == 404, missing
        assert headers.getRawHeaders(b"content-type") == [b"application/json; charset=utf-8"]
        assert json.loads(body) == {"error": f"no such resource: /{missing}"}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("served", ["s3cret"], indirect=True)
async def test_with_a_token_the_page_opens_with_it_in_the_url_and_the_api_takes_the_header(
    served: Served,
) -> None:
    code, _, _ = await served.get("")
    assert code == 401
    code, _, body = await served.get("?access_token=s3cret")
    assert code == 200 and b"<script>" in body
    code, _, _ = await served.get("api/services")
    assert code == 401
    code, _, body = await served.get("api/services", headers={"Authorization": "Bearer s3cret"})
    assert code == 200 and "services" in json.loads(body)


class _PendingStore:
    """A store whose queries wait until the test answers them."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.badRequests = 0
        self.queries: list[Any] = []

    def graphs(self) -> Any:
        from duct.graphs import GraphMap

        return GraphMap()

    def query(self, work: Any) -> Any:
        from twisted.internet.defer import Deferred

        d: Deferred[Any] = Deferred()
        self.queries.append(d)
        return d


def test_a_client_that_leaves_cancels_its_answer_and_gets_nothing_written() -> None:
    from twisted.internet.defer import CancelledError
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure
    from twisted.web.server import NOT_DONE_YET
    from twisted.web.test.requesthelper import DummyRequest

    from duct.dashboard.api import ServicesResource

    store = _PendingStore()
    resource = ServicesResource(store)
    request = DummyRequest([b""])
    assert resource.render_GET(request) is NOT_DONE_YET
    (query,) = store.queries
    request.processingFailed(Failure(ConnectionDone()))  # the client has gone
    assert query.called  # cancelled, not left waiting for the store
    query.addErrback(lambda f: f.trap(CancelledError))
    query.callback([])  # the store answers late: ignored
    assert request.written == [] and request.finished == 0

    store.queries.clear()
    staying = DummyRequest([b""])
    resource.render_GET(staying)
    store.queries[0].callback([])
    assert staying.finished == 1 and b'"services":[]' in b"".join(staying.written)
