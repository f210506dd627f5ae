"""The Prometheus scrape output: names, labels, expiry and bounds on a Clock; a real scrape."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from promserver import findPrometheus, startPrometheus
from test_prometheus import Prometheus as PrometheusAPI
from test_web import Agent

from duct.errors import ConfigurationError
from duct.lib.promlabels import labelName, metricName
from duct.listening import CannotListen
from duct.objects import Event
from duct.outputs.prometheus import Prometheus
from duct.testing import FakeDuct, OutputHarness, configure, waitFor


def event(service: str, metric: Any = 1.5, ttl: Any = 60.0, **kwargs: Any) -> Event:
    kwargs.setdefault("hostname", "h1")
    return Event("ok", service, None, metric, ttl, **kwargs)


def samples(output: Prometheus) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    text = output.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def harness(**config: Any) -> OutputHarness:
    h = OutputHarness(Prometheus, {"port": 0, **config})
    h.start()
    return h


def test_names_and_labels_follow_prometheus_rules() -> None:
    assert metricName("duct_disk.sda-1/reads") == "duct_disk_sda_1_reads"
    assert metricName("9lives") == "_9lives"
    assert labelName("__meta") == "_meta"
    assert labelName("zone:a") == "zone_a"
    h = harness()
    h.send([
        event("disk.sda.reads", 12, attributes={"dc": "east", "host": "other", "a.b": "x"}),
        event("disk.sda.reads", 3, hostname="h2"),
        event("load", None),
    ])  # fmt: skip
    assert samples(h.output) == {
        ("duct_disk_sda_reads", (("a_b", "x"), ("dc", "east"), ("exported_host", "other"),
                                 ("host", "h1"))): 12.0,
        ("duct_disk_sda_reads", (("host", "h2"),)): 3.0,
    }  # fmt: skip
    assert h.sent == 3 and h.output.skipped == 1
    assert h.stats()["series"] == 2


def test_labels_allow_list_tags_label_and_prefix() -> None:
    h = harness(labels=["dc"], tags_label="tags", prefix="agent:")
    h.send([event("cpu", 0.5, attributes={"dc": "east", "rack": "9"}, tags=["a", "b"])])
    h.send([event("cpu", 0.75, attributes={"dc": "east", "rack": "10"}, tags=["a", "b"])])
    assert samples(h.output) == {
        ("agent:cpu", (("dc", "east"), ("host", "h1"), ("tags", "a,b"))): 0.75,
    }


def test_series_expire_with_their_ttl_on_the_clock() -> None:
    h = harness(default_ttl=30)
    h.send([event("short", 1, ttl=10), event("untimed", 2, ttl=None)])
    h.run(9)
    assert len(samples(h.output)) == 2
    h.run(2)  # the sweep runs every 5 seconds; a scrape sweeps too
    assert [name for name, _ in samples(h.output)] == ["duct_untimed"]
    h.send([event("short", 5, ttl=10)])  # back with a new event, until 21
    h.run(8)
    assert [name for name, _ in samples(h.output)] == ["duct_short", "duct_untimed"]
    h.run(5)
    assert [name for name, _ in samples(h.output)] == ["duct_untimed"]
    h.run(7)  # the default ttl, 30, from 0
    assert samples(h.output) == {}
    assert h.stats()["series_expired"] == 3
    assert h.stats()["series"] == 0


def test_new_series_past_max_series_are_refused_and_counted() -> None:
    h = harness(max_series=2)
    h.send([event("a", 1), event("b", 2), event("c", 3), event("a", 4)])
    assert h.drain()
    assert samples(h.output) == {
        ("duct_a", (("host", "h1"),)): 4.0,
        ("duct_b", (("host", "h1"),)): 2.0,
    }
    assert h.output.seriesRefused == 1
    assert h.stats()["events_rejected"] == 1
    assert h.dropped == {"rejected": 1}
    assert h.sent == 3
    h.run(61)  # a and b expire: c fits now
    h.send([event("c", 3)])
    assert h.drain()
    assert list(samples(h.output)) == [("duct_c", (("host", "h1"),))]


@pytest.mark.parametrize(
    "config, key",
    [
        ({"port": -1}, "port"),
        ({"max_series": 0}, "max_series"),
        ({"web_path": "a/b"}, "web_path"),
        ({"metric_path": "/"}, "metric_path"),
        ({"labels": 5}, "labels"),
        ({"default_ttl": 0}, "default_ttl"),
        ({"portt": 9100}, "portt"),
    ],
)
def test_bad_options_name_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{key}: "):
        configure(Prometheus, config)


def test_listens_on_the_configured_port_and_interface() -> None:
    duct = FakeDuct()
    h = OutputHarness(Prometheus, {"port": 9108, "interface": "::1"}, duct)
    h.start()
    (port, _, _, interface) = duct.reactor.tcpServers[0]
    assert (port, interface) == (9108, "::1")


def test_a_port_in_use_is_a_configuration_error_naming_port(reactor: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        output = Prometheus(configure(Prometheus, {"port": taken}), FakeDuct(reactor=reactor))
        with pytest.raises(CannotListen) as caught:
            output.listen()
        assert caught.value.key == "port"
        agent = Agent(
            reactor, {"outputs": [{"output": "duct.outputs.prometheus.Prometheus", "port": taken}]}
        )
        with pytest.raises(ConfigurationError, match="port"):
            agent.service.privilegedStartService()


@pytest_twisted.ensureDeferred
async def test_the_gauges_on_the_agents_web_server(reactor: Any) -> None:
    outputs = [{"output": "duct.outputs.prometheus.Prometheus", "name": "prom", "port": 0,
                "web_path": "gauges"}]  # fmt: skip
    agent = Agent(reactor, {"outputs": outputs})
    agent.start()
    try:
        agent.service.outputs["prom"].eventsReceived([event("queue.depth", 7)])
        agent.clock.advance(0)
        response = await agent.get("/gauges")
        body = (await response.text()).splitlines()
        assert 'duct_queue_depth{host="h1"} 7.0' in body
        port = agent.service.outputs["prom"].port.getHost().port
        own = await treq.get(f"http://127.0.0.1:{port}/metrics", pool=agent.pool)
        assert 'duct_queue_depth{host="h1"} 7.0' in (await own.text()).splitlines()
        missing = await treq.get(f"http://127.0.0.1:{port}/other", pool=agent.pool)
        assert missing.code == 404
        await missing.content()
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_a_real_prometheus_scrapes_the_gauges(reactor: Any, tmp_path: Path) -> None:
    binary = findPrometheus()
    assert binary, "Debian's prometheus is required: run scripts/test-deps.sh"
    duct = FakeDuct(clock=reactor, reactor=reactor)
    output = Prometheus(configure(Prometheus, {"port": 0}), duct)
    output.start()
    port = output.port.getHost().port
    prometheus = startPrometheus(binary, tmp_path, [f"127.0.0.1:{port}"])
    api = PrometheusAPI(reactor, prometheus.port)
    try:
        output.eventsReceived([
            event("web.latency", 0.25, hostname="web1", attributes={"dc": "east"}),
            event("web.requests", 42, hostname="web1"),
        ])  # fmt: skip
        await api.waitFor('up{job="duct"}', 1)
        await api.waitFor('duct_web_latency{host="web1",dc="east"}', 0.25)
        await api.waitFor('duct_web_requests{host="web1"}', 42)
        # A scrape that fails (the endpoint closed) loses nothing: what came meanwhile is there.
        await output.stopListening()
        await api.waitFor('up{job="duct"}', 0)
        output.eventsReceived([event("web.requests", 43, hostname="web1")])
        output.listen()
        await api.waitFor('up{job="duct"}', 1)
        await api.waitFor('duct_web_requests{host="web1"}', 43)
        await waitFor(reactor, lambda: output.scrapes >= 3, "scrapes")
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nprometheus said:\n{prometheus.server.output()[-3000:]}"
        ) from None
    finally:
        prometheus.stop()
        await api.pool.closeCachedConnections()
        await output.stop()
