"""Configurations written for the original duct, as its documentation gives them.

Each test loads one such duct.yml and checks what it builds: the sources,
the outputs, their settings and the routes between them.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from duct.configuration import Config, ConfigFile, ConfigurationError
from duct.options import Option, OptionError, validate
from duct.outputs.logger import Logger
from duct.outputs.riemann import RiemannTCP
from duct.service import DuctService
from duct.sources.linux.basic import CPU, Memory, Network
from duct.sources.selfstats import Duct, SelfStats
from duct.testing import FakeDuct, SourceHarness

RIEMANN_OUT = "duct.outputs.riemann.RiemannTCP"


def load(tmp_path: Path, text: str, name: str = "duct.yml") -> Config:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return ConfigFile(str(path)).load()


def problems(tmp_path: Path, text: str) -> list[Any]:
    with pytest.raises(ConfigurationError) as info:
        load(tmp_path, text)
    return info.value.problems


def routes(config: Config) -> dict[str, Any]:
    return {item.config["service"]: item.config["route"] for item in config.sources}


# -- aliases, as declared options -------------------------------------------------------


def test_an_alias_sets_its_target_and_a_conflict_is_a_problem() -> None:
    options = {
        o.name: o
        for o in (
            Option("flush_interval", "number", 0.1),
            Option("interval", "number", None, "the original's name", alias_of="flush_interval"),
        )
    }
    assert validate(options, {"interval": 2.5})[0]["flush_interval"] == 2.5
    assert validate(options, {"interval": 2.5, "flush_interval": 2.5})[1] == []
    _, found = validate(options, {"interval": 2.5, "flush_interval": 1})
    assert found == [
        ("interval", "is another name for flush_interval, which is set too: give only one")
    ]


def test_every_alias_names_a_declared_option_and_says_so() -> None:
    from duct.options import declaredOptions
    from duct.output import Output
    from duct.plugins import BUILTIN_OUTPUTS, BUILTIN_SOURCES, loadClass
    from duct.source import Source

    paths = [(p, Source) for p in BUILTIN_SOURCES] + [(p, Output) for p in BUILTIN_OUTPUTS]
    aliases = 0
    for path, base in paths:
        options = declaredOptions(loadClass(path, base))
        for option in options.values():
            if option.alias_of is not None:
                aliases += 1
                assert option.alias_of in options, (path, option.name)
                assert option.alias_of in option.doc or "listen" in option.doc, option
    assert aliases >= 5


def test_the_flag_kind_takes_the_originals_numbers() -> None:
    debug = Option("debug", "flag", False)
    assert debug.check(1) is True and debug.check(0) is False and debug.check(True) is True
    with pytest.raises(OptionError):
        debug.check("yes")


# -- getting started ----------------------------------------------------------------------


def test_the_getting_started_config(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        server: localhost
        port: 5555
        interval: 1.0
        proto: udp
        sources:
            - service: cpu
              source: duct.sources.linux.basic.CPU
              interval: 1.0
              warning: {
                cpu: "> 0.5"
              }
              critical: {
                cpu: "> 0.8"
              }
        """,
    )
    [output] = config.outputs
    assert output.config["output"] == "duct.outputs.riemann.RiemannUDP"
    assert (output.config["server"], output.config["port"]) == ("localhost", 5555)
    [cpu] = config.sources
    assert cpu.cls is CPU and cpu.config["interval"] == 1.0
    assert cpu.config["critical"] == {"cpu": "> 0.8"}
    assert cpu.config["route"] == ["RiemannUDP"]  # the default output has no name


def test_the_originals_sample_duct_yml(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        outputs:
            - output: duct.outputs.riemann.RiemannTCP
              server: 127.0.0.1
              port: 5555
        ttl: 60.0
        interval: 1.0
        sources:
            - service: load
              source: duct.sources.linux.basic.LoadAverage
              interval: 2.0
            - service: memory
              source: duct.sources.linux.basic.Memory
              interval: 2.0
        """,
    )
    assert [i.config["interval"] for i in config.sources] == [2.0, 2.0]
    assert config.sources[1].cls is Memory
    assert routes(config) == {"load": ["RiemannTCP"], "memory": ["RiemannTCP"]}
    assert config.notes == []


# -- routing ------------------------------------------------------------------------------

ROUTING = """\
outputs:
    - output: duct.outputs.riemann.RiemannTCP
      name: riemann1
      server: riemann1.acme.com
      port: 5555
    - output: duct.outputs.riemann.RiemannTCP
      name: riemann2
      server: riemann2.acme.com
      port: 5555
    - output: duct.outputs.riemann.RiemannUDP
      name: riemannudp
      server: riemann1.acme.com
      port: 5555
sources:
    - service: cpu1
      source: duct.sources.linux.basic.CPU
      interval: 1.0
      route: riemannudp
    - service: cpu2
      source: duct.sources.linux.basic.CPU
      interval: 1.0
      route:
        - riemann1
        - riemann2
"""


def test_the_routing_guide(tmp_path: Path) -> None:
    config = load(tmp_path, ROUTING)
    assert [o.config["name"] for o in config.outputs] == ["riemann1", "riemann2", "riemannudp"]
    assert routes(config) == {"cpu1": ["riemannudp"], "cpu2": ["riemann1", "riemann2"]}
    assert config.notes == []


def test_an_unrouted_source_goes_to_the_outputs_without_a_name(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        outputs:
            - output: duct.outputs.logger.Logger
            - output: duct.outputs.null.Null
              name: archive
        sources:
            - service: load
              source: duct.sources.linux.basic.LoadAverage
            - service: cpu
              source: duct.sources.linux.basic.CPU
              route: archive
        """,
    )
    assert routes(config) == {"load": ["Logger"], "cpu": ["archive"]}
    assert config.notes == []


def test_default_route_and_star(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        ROUTING
        + """\
    - service: load
      source: duct.sources.linux.basic.LoadAverage
    - service: memory
      source: duct.sources.linux.basic.Memory
      route: "*"
default_route: riemann2
""",
    )
    assert routes(config)["load"] == ["riemann2"]
    assert routes(config)["memory"] == ["*"]


def test_a_default_route_to_no_output_is_a_problem(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, ROUTING + "default_route: nowhere\n")
    assert (problem.key, problem.item) == ("default_route", None)
    assert "'nowhere'" in problem.message


def test_every_output_named_and_no_route_goes_everywhere_with_a_note(tmp_path: Path) -> None:
    text = ROUTING + "    - service: load\n      source: duct.sources.linux.basic.LoadAverage\n"
    config = load(tmp_path, text)
    assert routes(config)["load"] is None
    [note] = config.notes
    assert "sources[2] (service: load)" in note and "the original routed them nowhere" in note


def test_the_service_routes_as_the_loader_says(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        hostname: test.example
        state_dir: STATE
        outputs:
            - output: duct.testing.RecordingOutput
            - output: duct.testing.RecordingOutput
            - output: duct.testing.RecordingOutput
              name: named
        sources:
            - service: plain
              source: duct.sources.linux.basic.LoadAverage
            - service: everywhere
              source: duct.sources.linux.basic.LoadAverage
              route: "*"
            - service: chosen
              source: duct.sources.linux.basic.LoadAverage
              route: named
        """.replace("STATE", str(tmp_path / "state")),
    )
    service = DuctService(config, reactor=Clock())
    pipeline = service.pipeline
    found = {}
    for source in service.sources:
        found[source.service] = sorted(o.name for o in pipeline.register(source).outputs)
    assert found == {
        "plain": ["RecordingOutput", "RecordingOutput-2"],
        "everywhere": ["RecordingOutput", "RecordingOutput-2", "named"],
        "chosen": ["named"],
    }


# -- blueprints ------------------------------------------------------------------------------


def test_the_blueprint_guide(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        outputs:
            - output: duct.outputs.null.Null
        toolbox:
          linux_defaults:
            defaults:
              interval: 10.0
            sources:
              - service: memory
                source: duct.sources.linux.basic.Memory
              - service: cpu
                source: duct.sources.linux.basic.CPU
        blueprint:
          - toolbox: linux_defaults
            defaults:
              interval: 10.0
            sets:
              hostname:
                - www01.acme.com
                - www02.acme.com
                - www03.acme.com
        """,
    )
    found = sorted((i.config["service"], i.config["hostname"]) for i in config.sources)
    hosts = ["www01.acme.com", "www02.acme.com", "www03.acme.com"]
    assert found == sorted((s, h) for s in ("memory", "cpu") for h in hosts)
    assert all(i.config["interval"] == 10.0 for i in config.sources)
    assert {i.cls for i in config.sources} == {Memory, CPU}


def test_original_sets_expand_to_the_cartesian_product(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        toolbox:
          web:
            defaults:
              ttl: 120.0
              tags: [web]
            sources:
              - service: load
                source: duct.sources.linux.basic.LoadAverage
                ttl: 5.0
        blueprint:
          - toolbox: web
            sets:
              hostname: [a, b, c]
              interval: [1.0, 2.0]
        """,
    )
    found = [(i.config["hostname"], i.config["interval"]) for i in config.sources]
    assert sorted(found) == sorted((h, n) for h in "abc" for n in (1.0, 2.0))
    # As in the original, the toolbox's defaults override its sources' own keys.
    assert {i.config["ttl"] for i in config.sources} == {120.0}


def test_original_sets_with_a_value_that_is_not_a_list(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path,
        """\
        toolbox:
          web:
            sources:
              - service: load
                source: duct.sources.linux.basic.LoadAverage
        blueprint:
          - toolbox: web
            sets:
              hostname: a
        """,
    )
    assert (problem.item, problem.key) == ("blueprint[0]", "sets.hostname")


# -- Riemann: a relay, TLS and failover ----------------------------------------------------


def test_a_relay_in_the_originals_words(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        outputs:
            - output: duct.outputs.riemann.RiemannTCP
              server: riemann.acme.com
              port: 5555
              interval: 2.0
              pressure: 4
              maxrate: 0
              allow_nan: false
        sources:
            - service: relay
              source: duct.sources.riemann.RiemannTCP
              port: 5556
        """,
    )
    [output] = config.outputs
    cfg = output.config
    assert output.cls is RiemannTCP
    assert (cfg["flush_interval"], cfg["max_in_flight"], cfg["maxrate"]) == (2.0, 5, 0)
    assert cfg["allow_nan"] is False and cfg["allow_non_finite"] is False
    [source] = config.sources
    assert source.config["listen"] == "tcp:5556:interface=127.0.0.1"
    assert source.config["route"] == ["RiemannTCP"]
    [note] = config.notes
    assert "port 5556 listens on 127.0.0.1 only" in note and "interface: 0.0.0.0" in note
    built = RiemannTCP(dict(cfg), FakeDuct())  # maxrate 0 is no limit, and starts
    assert built.bucket is None and built.flushInterval == 2.0 and built.maxInFlight == 5


def test_the_listener_takes_an_interface(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        sources:
            - service: relay
              source: duct.sources.riemann.RiemannTCP
              port: 5556
              interface: 0.0.0.0
        """,
    )
    assert config.sources[0].config["listen"] == "tcp:5556:interface=0.0.0.0"
    assert config.notes == []


def test_port_and_listen_together_is_a_problem(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path,
        """\
        sources:
            - service: relay
              source: duct.sources.riemann.RiemannTCP
              port: 5556
              listen: tcp:5557
        """,
    )
    assert problem.key == "port" and "listen" in problem.message


def test_pressure_minus_one_keeps_max_in_flight(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"outputs:\n  - output: {RIEMANN_OUT}\n    pressure: -1\n",
    )
    assert config.outputs[0].config["max_in_flight"] == 8


def test_riemann_tls_with_failover(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        outputs:
            - output: duct.outputs.riemann.RiemannTCP
              server: [riemann1.acme.com, riemann2.acme.com]
              failover: true
              port: 5554
              tls: true
              cert: /var/lib/puppet/ssl/certs/test.acme.com.pem
              key: /var/lib/puppet/ssl/private_keys/test.acme.com.pem
        """,
    )
    cfg = config.outputs[0].config
    assert cfg["server"] == ["riemann1.acme.com", "riemann2.acme.com"]
    assert (cfg["tls"], cfg["port"], cfg["failover"]) == (True, 5554, True)
    assert cfg["cert"].endswith("certs/test.acme.com.pem")
    assert cfg["key"].endswith("private_keys/test.acme.com.pem")
    [note] = config.notes
    assert "trust store" in note and "set ca:" in note
    output = RiemannTCP(dict(cfg), FakeDuct())
    assert output.servers == ["riemann1.acme.com", "riemann2.acme.com"]


# -- logger, include_path, path, debug ---------------------------------------------------


def test_logger_logfile_appends_json_lines(tmp_path: Path) -> None:
    logfile = tmp_path / "events.log"
    config = load(
        tmp_path,
        f"outputs:\n  - output: duct.outputs.logger.Logger\n    logfile: {logfile}\n",
    )
    cfg = config.outputs[0].config
    assert cfg["path"] == str(logfile)
    from duct.event import Event

    output = Logger(dict(cfg), FakeDuct())
    output.writeBatch([Event("ok", "load", "Load average", 0.5, 60, hostname="h")])
    output.stop()
    line = logfile.read_text().strip()
    assert '"service":"load"' in line.replace(" ", "")


def test_include_path_as_the_original_and_a_missing_one(tmp_path: Path) -> None:
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "cpu.yml").write_text(
        "sources:\n  - service: cpu\n    source: duct.sources.linux.basic.CPU\n"
    )
    config = load(
        tmp_path,
        f"""\
        include_path: [{confd}, {tmp_path / "missing.d"}]
        outputs:
            - output: duct.outputs.null.Null
        sources:
            - service: load
              source: duct.sources.linux.basic.LoadAverage
        """,
    )
    assert [i.config["service"] for i in config.sources] == ["load", "cpu"]
    assert config.sources[1].file == str(confd / "cpu.yml")
    [warning] = config.warnings
    assert "include_path" in warning and "missing.d does not exist" in warning


def test_a_sources_path_and_base_path_are_searched(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mycheck.py").write_text(
        "from duct.objects import Source\n\nclass Check(Source):\n    def get(self):\n"
        "        return self.createEvent('ok', 'fine', 1)\n"
    )
    base = tmp_path / "base"
    base.mkdir()
    (base / "myout.py").write_text(
        "from duct.objects import Output\n\nclass Out(Output):\n    pass\n"
    )
    try:
        config = load(
            tmp_path,
            f"""\
            base_path: {base}
            debug: 1
            outputs:
                - output: myout.Out
            sources:
                - service: mine
                  source: mycheck.Check
                  path: plugins
            """,
        )
    finally:
        for directory in (str(plugins), str(base)):
            if directory in sys.path:
                sys.path.remove(directory)
        sys.modules.pop("mycheck", None)
        sys.modules.pop("myout", None)
    [source] = config.sources
    assert source.cls is not None and source.cls.__name__ == "Check"
    assert source.config["debug"] is True  # the global debug, as in the original
    assert config.outputs[0].config["debug"] is True
    assert config.settings["debug"] is True


def test_a_class_not_there_yet_cannot_be_imported(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        sources:
            - service: rtsp
              source: duct.sources.media.libav.DarwinRTSP
            - service: misspelt
              source: duct.sources.network.HTTPS
        """,
    )
    assert {(p.item, p.key) for p in found} == {
        ("sources[0] (service: rtsp)", "source"),
        ("sources[1] (service: misspelt)", "source"),
    }
    for problem in found:
        assert "cannot import" in problem.message
        assert problem.file == str(tmp_path / "duct.yml")


def test_the_network_check_guide(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        sources:
            - service: googledns
              source: duct.sources.network.Ping
              interval: 60.0
              destination: 8.8.8.8
              critical: {
                googledns.latency: "> 100",
                googledns.loss: "> 0"
              }
        """,
    )
    [ping] = config.sources
    assert ping.cls is not None and ping.cls.__name__ == "Ping"
    assert ping.config["destination"] == "8.8.8.8"
    assert ping.config["interval"] == 60.0
    assert set(ping.config["critical"]) == {"googledns.latency", "googledns.loss"}


def test_the_nginx_source(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        sources:
            - service: nginx
              source: duct.sources.nginx.Nginx
              url: http://127.0.0.1/nginx_status
              interval: 10.0
        """,
    )
    [nginx] = config.sources
    assert nginx.cls is not None and nginx.cls.__name__ == "Nginx"
    assert nginx.config["url"] == "http://127.0.0.1/nginx_status"


# -- the original's service names -------------------------------------------------------


def test_the_network_source_says_how_its_labels_differ(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "sources:\n  - service: network\n    source: duct.sources.linux.basic.Network\n",
    )
    assert config.sources[0].cls is Network
    [note] = config.notes
    assert "tx_*" in note and "received" in note


def test_duct_sources_duct_is_self_monitoring_with_the_original_names(tmp_path: Path) -> None:
    config = load(tmp_path, "sources:\n  - service: duct\n    source: duct.sources.Duct\n")
    assert config.sources[0].cls is Duct and issubclass(Duct, SelfStats)
    clock = Clock()
    duct = FakeDuct(clock=clock)
    harness = SourceHarness(Duct, {"service": "duct", "interval": 10}, duct=duct)
    first = {e.service for e in harness.source.get()}
    assert "duct.sources" in first and "duct.event rate" not in first
    clock.advance(10)
    second = {e.service: e.metric for e in harness.source.get()}
    assert second["duct.event rate"] == 0.0
