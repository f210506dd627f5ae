"""The parts of ``workers: N`` that need no process: backoff, the pool on a Clock, the split."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from duct.configuration import ConfigFile, ConfigurationError
from duct.workers.backoff import RestartBackoff
from duct.workers.config import (
    parentConfig,
    sharedListens,
    sharedProblems,
    workerConfig,
    workerCount,
)
from duct.workers.endpoints import adoptedListen, boundListen
from duct.workers.parent import STOP_MARGIN, WorkerPool
from duct.workers.stats import labelled, merged

# -- backoff ---------------------------------------------------------------------------


def test_backoff_doubles_for_a_worker_that_keeps_dying_up_to_its_maximum() -> None:
    backoff = RestartBackoff(initial=0.1, maximum=1.0, stable=10.0)
    delays = [backoff.died(0.5) for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_starts_again_after_a_worker_ran_long_enough() -> None:
    backoff = RestartBackoff(initial=0.1, maximum=30.0, stable=10.0)
    backoff.died(1.0)
    backoff.died(1.0)
    assert backoff.died(10.0) == pytest.approx(0.1)
    assert backoff.died(1.0) == pytest.approx(0.2)


# -- the pool, on a Clock ------------------------------------------------------------------


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeSockets:
    """The pool's bound sockets: a real TCP and UDP socket each, bound by nobody else."""

    def __init__(self) -> None:
        self.closed = False
        self.ports = [socket.socket(), socket.socket(type=socket.SOCK_DGRAM)]
        for sock in self.ports:
            sock.bind(("127.0.0.1", 0))
        self.ports[0].listen()

    def bind(self) -> None:
        pass

    def descriptors(self) -> list[int]:
        return [sock.fileno() for sock in self.ports]

    def close(self) -> None:
        self.closed = True
        for sock in self.ports:
            sock.close()


class Spawner:
    def __init__(self) -> None:
        self.spawned: list[tuple[Any, list[str], dict[int, Any]]] = []

    def __call__(self, protocol: Any, executable: str, argv: list[str], **kwargs: Any) -> None:
        protocol.makeConnection(FakeTransport(1000 + len(self.spawned)))
        self.spawned.append((protocol, argv, kwargs["childFDs"]))

    def process(self, number: int) -> Any:
        return [p for p, _, _ in self.spawned if p.number == number][-1]


def pool(
    clock: MemoryReactorClock, spawner: Spawner, count: int = 2, listens: Any = None
) -> WorkerPool:
    listens = ["tcp:5555", "udp:5556"] if listens is None else listens
    workers = WorkerPool(clock, clock, "/etc/duct.yml", count, listens, 10.0, spawner)
    workers.sockets = FakeSockets()  # type: ignore[assignment]
    return workers


def adopted(argv: list[str]) -> dict[str, str]:
    return dict(json.loads(argv[argv.index("--adopted") + 1]))


def die(process: Any, signal: int = 9) -> None:
    process.processEnded(Failure(ProcessTerminated(signal=signal)))


def test_workers_start_with_a_hand_off_socket_on_fd_3_and_udp_sockets_after() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner)
    workers.startService()
    assert len(spawner.spawned) == 2
    protocol, argv, childFDs = spawner.spawned[0]
    udp = workers.sockets.descriptors()[1]
    assert set(childFDs) == {0, 1, 2, 3, 4} and childFDs[4] == udp
    assert argv[argv.index("--handoff-fd") + 1] == "3"
    assert adopted(argv) == {"tcp:5555": "handoff:0:tcp:5555", "udp:5556": "adopted:4:udp:5556"}
    assert argv[1:3] == ["-m", "duct.workers"] and argv[argv.index("--number") + 1] == "1"
    info = workers.info()["1"]
    assert info == {
        "pid": 1000, "state": "starting", "restarts": 0, "connections": 0, "connections_handed": 0,
    }  # fmt: skip
    assert not clock.readers  # no worker serves yet: nothing is accepted
    protocol.outReceived(b'{"web": 4321, "pid": 1000}\n')
    assert protocol.web == 4321 and workers.info()["1"]["state"] == "running"
    assert len(clock.readers) == 1  # the TCP listener, now that a worker can take connections
    workers.stopService()
    assert not clock.readers


def test_a_worker_gets_connections_only_for_the_listeners_it_says_it_runs() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner, count=1)
    workers.startService()
    protocol = spawner.process(1)
    protocol.outReceived(b'{"web": 4321, "pid": 1000, "listeners": []}\n')
    assert workers.info()["1"]["state"] == "running"
    assert not clock.readers  # serving, but its listener failed to start: nothing is accepted
    protocol.outReceived(b'{"listeners": [0]}\n')  # a reload brought it back
    assert len(clock.readers) == 1
    protocol.outReceived(
        b'{"listeners": [0, 9, "x"]}\n'
    )  # what the parent does not share is ignored
    assert workers.distributor.links[1].listeners == {0}
    workers.stopService()


def test_a_worker_says_which_listeners_it_runs_after_a_reload() -> None:
    from twisted.internet.defer import succeed

    from duct.workers.worker import WorkerReload

    class Service:
        def reload(self, config: Any) -> Any:
            return succeed("reloaded")

    told: list[str] = []
    target = WorkerReload(Service(), 1, {}, lambda: told.append("listeners"))  # type: ignore[arg-type]
    config = ConfigFile.fromDict(CONFIG)
    results: list[Any] = []
    target.reload(config).addCallback(results.append)
    assert told == ["listeners"] and results == ["reloaded"]


def test_a_worker_inherits_only_the_sockets_of_the_listeners_it_runs() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner, count=2, listens={"tcp:5555": 1, "udp:5556": 2})
    workers.startService()
    (_, one, fds1), (_, two, fds2) = spawner.spawned
    assert set(fds1) == {0, 1, 2, 3, 4}
    assert list(adopted(one)) == ["tcp:5555", "udp:5556"]
    udp = workers.sockets.descriptors()[1]
    assert fds2 == {0: "w", 1: "r", 2: "r", 4: udp}  # no stream listener: no hand-off socket
    assert adopted(two) == {"udp:5556": "adopted:4:udp:5556"} and "--handoff-fd" not in two


def test_a_worker_that_dies_is_restarted_with_backoff_on_the_clock() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner)
    workers.startService()
    die(spawner.process(1))
    assert workers.info()["1"]["state"] == "restarting" and workers.info()["1"]["restarts"] == 1
    clock.advance(0.099)
    assert len(spawner.spawned) == 2
    clock.advance(0.002)
    assert len(spawner.spawned) == 3 and spawner.process(1).pid == 1002
    die(spawner.process(1))  # again at once: twice the delay
    clock.advance(0.199)
    assert len(spawner.spawned) == 3
    clock.advance(0.002)
    assert len(spawner.spawned) == 4
    clock.advance(60)  # ran a while: back to the first delay
    die(spawner.process(1))
    clock.advance(0.101)
    assert len(spawner.spawned) == 5
    assert workers.info()["1"]["restarts"] == 3 and workers.info()["2"]["restarts"] == 0


def test_stopping_forwards_sigterm_and_waits_for_every_worker() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner)
    workers.startService()
    one, two = spawner.process(1), spawner.process(2)
    stopped = workers.stopService()
    assert one.transport.signals == ["TERM"] and two.transport.signals == ["TERM"]
    one.processEnded(Failure(ProcessDone(0)))
    assert not stopped.called
    two.processEnded(Failure(ProcessDone(0)))
    assert stopped.called and workers.sockets.closed  # type: ignore[attr-defined]
    assert len(spawner.spawned) == 2  # a worker asked to stop is not restarted


def test_a_worker_that_does_not_stop_in_time_is_killed() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner, count=1)
    workers.startService()
    stopped = workers.stopService()
    clock.advance(10.0 + STOP_MARGIN)
    process = spawner.process(1)
    assert process.transport.signals == ["TERM", "KILL"]
    die(process)
    assert stopped.called


def test_a_restart_pending_at_stop_is_cancelled() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner, count=1)
    workers.startService()
    die(spawner.process(1))
    workers.stopService()
    clock.advance(60)
    assert len(spawner.spawned) == 1 and not clock.getDelayedCalls()


def test_sighup_is_forwarded_to_every_running_worker() -> None:
    clock, spawner = MemoryReactorClock(), Spawner()
    workers = pool(clock, spawner)
    workers.startService()
    workers.signal("HUP")
    assert [p.transport.signals for p, _, _ in spawner.spawned] == [["HUP"], ["HUP"]]


# -- the split of a configuration -----------------------------------------------------------

CONFIG = {
    "workers": 2,
    "state_dir": "/var/lib/duct",
    "web": {"listen": "tcp:8901", "token": "secret"},
    "outputs": [
        {"output": "duct.outputs.riemann.RiemannTCP", "name": "a", "buffer": {"type": "disk"}},
        {
            "output": "duct.outputs.riemann.RiemannTCP",
            "name": "b",
            "buffer": {"type": "disk", "path": "/srv/b"},
        },
    ],
    "sources": [
        {"service": "relay", "source": "duct.sources.riemann.RiemannTCP", "listen": "tcp:5555"},
        {"service": "udp", "source": "duct.sources.riemann.RiemannUDP", "port": 5556},
        {"service": "load", "source": "duct.sources.linux.basic.LoadAverage"},
    ],
}


def test_listeners_go_to_the_workers_and_the_rest_stays_in_the_parent() -> None:
    config = ConfigFile.fromDict(CONFIG)
    udp = "udp:5556:interface=127.0.0.1"
    assert sharedListens(config) == {"tcp:5555": 2, udp: 2}
    parent = parentConfig(config)
    assert [i.config["service"] for i in parent.sources] == ["load"]
    assert [i.config["name"] for i in parent.outputs] == ["a", "b"]
    worker = workerConfig(config, 2, {"tcp:5555": "handoff:0:tcp:5555", udp: f"adopted:4:{udp}"})
    assert [i.config["service"] for i in worker.sources] == ["relay", "udp"]
    assert worker.sources[0].config["listen"] == "handoff:0:tcp:5555"
    assert worker.sources[1].config["listen"] == f"adopted:4:{udp}"
    assert config.sources[0].config["listen"] == "tcp:5555"  # the original is untouched
    assert worker["state_dir"] == "/var/lib/duct/worker-2"
    assert worker.outputs[1].config["buffer"]["path"] == "/srv/b/worker-2"
    assert worker["web"]["listen"] == "tcp:0:interface=127.0.0.1"
    assert worker["web"]["token"] == "secret"


def test_a_parent_without_sources_of_its_own_keeps_no_outputs() -> None:
    only = {**CONFIG, "sources": CONFIG["sources"][:1]}  # type: ignore[index]
    assert parentConfig(ConfigFile.fromDict(only)).outputs == []


def test_workers_is_validated_with_the_rest_of_the_file() -> None:
    with pytest.raises(ConfigurationError, match="workers"):
        ConfigFile.fromDict({"workers": -1})


RELAY = "duct.sources.riemann.RiemannTCP"
STORE = "duct.outputs.store.Store"


def listeners(tmp: Path | None = None, **extra: Any) -> dict[str, Any]:
    """Three listeners, two outputs: ``one`` in 1 worker, ``three`` in 3, ``home`` in the parent."""
    state = str(tmp) if tmp is not None else "/var/lib/duct"
    return {
        "workers": 2,
        "state_dir": state,
        "outputs": [
            {"output": STORE, "name": "near", "path": f"{state}/near.sqlite"},
            {"output": STORE, "name": "far", "path": f"{state}/far.sqlite"},
        ],
        "sources": [
            {"service": "one", "source": RELAY, "listen": "tcp:5555", "workers": 1,
             "route": "near"},
            {"service": "three", "source": RELAY, "listen": "tcp:5556", "workers": 3,
             "route": "far"},
            {"service": "two", "source": "duct.sources.riemann.RiemannUDP", "port": 5557,
             "route": "far"},
            {"service": "home", "source": RELAY, "listen": "tcp:5558", "workers": 0,
             "route": "near"},
        ],
        **extra,
    }  # fmt: skip


def services(config: Any) -> list[str]:
    return [item.config["service"] for item in config.sources]


def test_each_listener_runs_in_as_many_workers_as_it_says() -> None:
    config = ConfigFile.fromDict(listeners())
    udp = "udp:5557:interface=127.0.0.1"
    assert sharedListens(config) == {"tcp:5555": 1, "tcp:5556": 3, udp: 2}
    assert workerCount(config) == 3  # the largest count, above the top-level 2
    assert services(parentConfig(config)) == ["home"]
    every = {listen: f"taken over: {listen}" for listen in sharedListens(config)}
    one, two, three = (workerConfig(config, n, every) for n in (1, 2, 3))
    assert services(one) == ["one", "three", "two"]
    assert services(two) == ["three", "two"]
    assert services(three) == ["three"]
    # Each worker keeps the outputs its listeners route to, and no other.
    assert [o.config["name"] for o in one.outputs] == ["near", "far"]
    assert [o.config["name"] for o in two.outputs] == ["far"]
    assert [o.config["name"] for o in three.outputs] == ["far"]


def test_a_worker_takes_its_listeners_on_what_the_parent_gives_it() -> None:
    config = ConfigFile.fromDict(listeners())
    udp = "udp:5557:interface=127.0.0.1"
    given = {"tcp:5556": "handoff:1:tcp:5556", udp: f"adopted:4:{udp}"}
    worker = workerConfig(config, 2, given)
    assert [i.config["listen"] for i in worker.sources] == [given["tcp:5556"], given[udp]]
    assert services(workerConfig(config, 2, {"tcp:5556": "handoff:1:tcp:5556"})) == ["three"]


def test_a_listener_on_an_endpoint_of_the_wrong_kind_stays_in_the_parent() -> None:
    data = listeners()
    data["sources"][0]["listen"] = "udp:5555"  # a TCP listener: it fails there, as alone
    config = ConfigFile.fromDict(data)
    assert "udp:5555" not in sharedListens(config)
    assert services(parentConfig(config)) == ["one", "home"]


def test_without_a_shared_listener_there_are_no_workers() -> None:
    config = ConfigFile.fromDict({**listeners(), "sources": listeners()["sources"][3:]})
    assert workerCount(config) == 0 and sharedListens(config) == {}


def test_a_source_workers_count_is_inherited_from_the_top_level_or_its_own() -> None:
    data = listeners(workers=0)
    config = ConfigFile.fromDict(data)
    assert sharedListens(config) == {"tcp:5555": 1, "tcp:5556": 3}  # two has no count now
    assert services(parentConfig(config)) == ["two", "home"]


@pytest.mark.parametrize(
    ("value", "why"),
    [("two", "expected an integer"), (-1, "must be at least 0"), (1.5, "expected an integer")],
)
def test_a_bad_listener_workers_is_a_problem_naming_the_file_and_key(value: Any, why: str) -> None:
    data = listeners()
    data["sources"][1]["workers"] = value
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile.fromDict(data, path="/etc/duct.yml")
    (problem,) = raised.value.problems
    assert (problem.file, problem.key) == ("/etc/duct.yml", "workers")
    assert problem.item is not None and problem.item.startswith("sources[1]")
    assert str(problem).startswith("/etc/duct.yml: sources[1] (service: three): workers: ")


def test_workers_is_declared_by_the_listeners_that_workers_can_run() -> None:
    from duct.options import declaredOptions
    from duct.sources.http import Ingest
    from duct.sources.riemann import RiemannTCP, RiemannUDP
    from duct.sources.statsd import StatsD

    for cls in (RiemannTCP, RiemannUDP, Ingest):
        assert "workers" in declaredOptions(cls)
    assert "workers" not in declaredOptions(StatsD)  # it sums what arrives: one process


@pytest.mark.parametrize(
    ("listen", "bound", "adopted"),
    [
        ("tcp:5555", "tcp:5555", "handoff:2:tcp:5555"),
        ("tcp:5555:interface=\\:\\:1", "tcp:5555:interface=\\:\\:1",
         "handoff:2:tcp:5555:interface=\\:\\:1"),
        ("tcp6:5555", "tcp6:5555", "handoff:2:tcp6:5555"),
        ("ssl:5556:privateKey=key.pem:certKey=cert.pem:interface=0.0.0.0",
         "tcp:5556:interface=0.0.0.0",
         "handoff:2:ssl:5556:privateKey=key.pem:certKey=cert.pem:interface=0.0.0.0"),
        ("ssl:5556:privateKey=k.pem:interface=\\:\\:1:backlog=9",
         "tcp:5556:interface=\\:\\:1:backlog=9",
         "handoff:2:ssl:5556:privateKey=k.pem:interface=\\:\\:1:backlog=9"),
        ("unix:/run/duct.sock:mode=660", "unix:/run/duct.sock:mode=660",
         "handoff:2:unix:/run/duct.sock:mode=660"),
        ("udp:5557:interface=0.0.0.0", "udp:5557:interface=0.0.0.0",
         "adopted:7:udp:5557:interface=0.0.0.0"),
    ],
)  # fmt: skip
def test_endpoints_are_bound_by_the_parent_and_adopted_by_a_worker(
    listen: str, bound: str, adopted: str
) -> None:
    assert boundListen(listen) == bound
    assert adoptedListen(listen, 2, fd=7) == adopted


def test_a_tls_listener_with_a_missing_certificate_fails_the_parent_naming_the_key(
    tmp_path: Path,
) -> None:
    data = listeners(tmp_path)
    key = tmp_path / "missing.pem"
    data["sources"][0]["listen"] = f"ssl:0:privateKey={key}"
    config = ConfigFile.fromDict(data, path="/etc/duct.yml")
    (problem,) = sharedProblems(config)
    assert str(problem).startswith("/etc/duct.yml: sources[0] (service: one): listen: ")
    assert "missing.pem" in problem.message
    from duct.workers.parent import buildParent

    with pytest.raises(ConfigurationError, match="cannot set up TLS"):
        buildParent(lambda part: None, config, Clock(), "/etc/duct.yml")


def test_a_udp_listen_that_is_not_a_udp_endpoint_is_a_problem() -> None:
    data = listeners()
    data["sources"][2]["listen"] = "tcp:5557"
    with pytest.raises(ConfigurationError, match=r"sources\[2\].*listen: expected udp:PORT"):
        ConfigFile.fromDict(data)


# -- statistics -------------------------------------------------------------------------------


def snap(emitted: int, sent: int, pid: int) -> dict[str, Any]:
    source = {"class": "duct.sources.riemann.RiemannTCP", "emitted": emitted, "polls": 0}
    output = {"class": "duct.outputs.riemann.RiemannTCP", "events_sent": sent, "connected": True}
    return {
        "time": 1.0,
        "hostname": "h",
        "process": {"pid": pid, "rss_bytes": 100},
        "sources": {"relay": source},
        "outputs": {"sink": output},
        "totals": {},
    }


def test_the_parent_stats_roll_up_the_workers_and_show_each() -> None:
    parent = {**snap(0, 0, 1), "sources": {}, "outputs": {}}
    workers = {"1": snap(30, 30, 2), "2": snap(12, 10, 3)}
    info = {
        "1": {"pid": 2, "state": "running", "restarts": 0},
        "2": {"pid": 3, "state": "running", "restarts": 1},
    }
    result = merged(parent, workers, info)
    assert result["sources"]["relay"]["emitted"] == 42
    assert result["totals"]["outputs"]["events_sent"] == 40
    assert result["process"]["rss_bytes"] == 300 and result["process"]["processes"] == 3
    assert (
        result["workers"]["2"]["restarts"] == 1 and result["workers"]["2"]["stats"] == workers["2"]
    )


def test_a_worker_that_does_not_answer_is_shown_without_figures() -> None:
    parent = {**snap(0, 0, 1), "sources": {}, "outputs": {}}
    info = {"1": {"pid": None, "state": "restarting", "restarts": 1}, "2": {"pid": 3}}
    result = merged(parent, {"1": None, "2": snap(5, 5, 3)}, info)
    assert result["workers"]["1"]["stats"] is None and result["sources"]["relay"]["emitted"] == 5


def test_metrics_carry_a_worker_label() -> None:
    families = {f.name: f for f in labelled([("1", snap(3, 3, 2)), ("2", snap(4, 4, 3))])}
    samples = families["duct_source_events_emitted"].samples
    assert {(s.labels["worker"], s.value) for s in samples} == {("1", 3.0), ("2", 4.0)}
    assert len(families["duct_info"].samples) == 2
