"""The outputs that POST batches keep their connections open from one batch to the next."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from fakeapis import BulkAPI, Served
from twisted.web import resource

from duct import testing
from duct.objects import Event
from duct.outputs.elasticsearch import ElasticSearch
from duct.outputs.influxdb import InfluxDB
from duct.outputs.opentsdb import OpenTSDB
from duct.outputs.remotewrite import RemoteWrite
from duct.testing import FakeDuct, configure


class NoContent(resource.Resource):
    """Answers every POST 204, as InfluxDB, remote write receivers and VictoriaMetrics do."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def render_POST(self, request: Any) -> bytes:
        self.requests += 1
        request.content.read()
        request.setResponseCode(204)
        return b""


def connections(served: Served) -> list[Any]:
    """The server's transport of every connection made to ``served`` from now on."""
    built: list[Any] = []
    original = served.site.buildProtocol

    def build(addr: Any) -> Any:
        protocol = original(addr)
        makeConnection = protocol.makeConnection

        def made(transport: Any) -> None:
            built.append(transport)
            makeConnection(transport)

        protocol.makeConnection = made
        return protocol

    served.site.buildProtocol = build  # type: ignore[method-assign]
    return built


def events(start: int, count: int) -> list[Event]:
    return [
        Event("ok", f"svc{i % 3}", None, float(i), 60, hostname="web1", evtime=1e9 + i)
        for i in range(start, start + count)
    ]


CASES = [
    (ElasticSearch, BulkAPI, ""),
    (OpenTSDB, NoContent, ""),
    (InfluxDB, NoContent, ""),
    (RemoteWrite, NoContent, "/api/v1/write"),
]


@pytest.mark.parametrize(("cls", "api", "path"), CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest_twisted.ensureDeferred
async def test_batches_share_a_connection_and_outlive_its_close(
    reactor: Any, cls: type, api: type, path: str
) -> None:
    server = api()
    served = Served(reactor, server)
    made = connections(served)
    config = {
        "url": served.url + path,
        "batch_size": 10,
        "retry_initial": 0.05,
        "retry_max": 0.2,
        "timeout": 5,
    }
    out = cls(configure(cls, config), FakeDuct(clock=reactor, reactor=reactor))
    try:
        await out.start()
        out.eventsReceived(events(0, 50))
        await testing.waitFor(reactor, lambda: out.sent == 50, "the first batches")
        assert server.requests == 5 and len(made) == 1
        # The server closes the connection between batches: the next opens another.
        made[0].loseConnection()
        await testing.waitFor(reactor, lambda: not made[0].connected, "closed")
        out.eventsReceived(events(50, 50))
        await testing.waitFor(reactor, lambda: out.sent == 100, "the batches after", 20)
        assert out.eventsRejected == 0 and len(made) >= 2
    finally:
        await out.stop()
        await served.stop()
