"""Remote checks over SSH (use_ssh) against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from sshserver import SSHD, keygen
from twisted.application.internet import backoffPolicy
from twisted.internet.task import Clock
from twisted.logger import LogLevel

from duct.configuration import ConfigFile, ConfigurationError
from duct.lib.process import ProcessTimeout
from duct.lib.ssh import SSHPool
from duct.lib.sshcommand import SSHCommandLost
from duct.lib.sshhostkeys import ChangedHostKey, UnknownHostKey
from duct.objects import Event, Source
from duct.options import Option
from duct.service import DuctService
from duct.sources.linux import basic
from duct.stats import declaredStats, read
from duct.testing import (
    FakeDuct,
    RecordingOutput,
    SourceHarness,
    configure,
    recordingService,
    waitFor,
)


class Probe(Source):
    """A source that only runs what the test asks of it."""

    options = ()


def probe(reactor: Any, sshd: SSHD, knownHosts: str, **extra: Any) -> Source:
    duct = FakeDuct(reactor=reactor)
    config = {"service": "probe", "ssh_host": "127.0.0.1", **sshd.options(knownHosts), **extra}
    return Probe(configure(Probe, config), lambda events: None, duct)


@pytest.fixture
def knownHosts(sshd: SSHD, tmp_path: Path) -> str:
    return sshd.knownHosts(tmp_path / "known_hosts")


@pytest_twisted.ensureDeferred
async def test_run_and_read_a_file_over_ssh(reactor: Any, sshd: SSHD, knownHosts: str) -> None:
    source = probe(reactor, sshd, knownHosts)
    try:
        code, stdout, stderr = await source.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (code, stdout, stderr) == (3, "out\n", "err\n")
        assert await source.run(["echo", "it's", "a b"]) == (0, "it's a b\n", "")
        assert await source.readFile("/proc/loadavg") != b""
        assert source.hostname == "127.0.0.1"
    finally:
        await source.duct.ssh.stopService()


def running(marker: str) -> list[str]:
    """The command lines of the processes whose command line holds ``marker``."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if marker in line:
            found.append(line)
    return found


@pytest_twisted.ensureDeferred
async def test_a_command_past_its_timeout_is_killed_on_the_remote_host(
    reactor: Any, sshd: SSHD, knownHosts: str, observe_errors: Any
) -> None:
    marker = f"30.{os.getpid()}{int(reactor.seconds() * 1000) % 100000}"
    source = probe(reactor, sshd, knownHosts)
    try:
        with pytest.raises(ProcessTimeout, match="longer than 0.5s"):
            await source.run(["sh", "-c", f"sleep {marker}; echo never"], timeout=0.5)
        await waitFor(reactor, lambda: not running(marker), "the remote command to end", 5)
        assert await source.run(["true"]) == (0, "", "")  # the connection still serves
    finally:
        await source.duct.ssh.stopService()


@pytest_twisted.ensureDeferred
async def test_the_same_account_with_other_host_key_rules_gets_a_connection_of_its_own(
    reactor: Any, sshd: SSHD, knownHosts: str, tmp_path: Path
) -> None:
    strict = probe(reactor, sshd, knownHosts)
    lax = probe(reactor, sshd, str(tmp_path / "empty_known_hosts"), ssh_accept_unknown_hosts=True)
    again = probe(reactor, sshd, knownHosts)
    pool = SSHPool(reactor)
    for source in (strict, lax, again):
        source.duct.ssh = pool
    try:
        for source in (strict, lax, again):
            assert await source.run(["true"]) == (0, "", "")
        assert len(pool.hosts) == 2  # strict and again share; lax has its own
        assert {host.target.key for host in pool.hosts.values()} == {strict.commands.target.key}
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_a_connection_no_command_uses_is_closed_and_opened_again_when_needed(
    reactor: Any, sshd: SSHD, knownHosts: str
) -> None:
    clock = Clock()
    pool = SSHPool(reactor, clock=clock, idleClose=900)
    source = probe(reactor, sshd, knownHosts)
    source.duct.ssh = pool
    try:
        assert await source.run(["true"]) == (0, "", "")
        [first] = pool.hosts.values()
        clock.advance(899)
        assert await source.run(["true"]) == (0, "", "")  # used again: the wait starts over
        clock.advance(899)
        assert list(pool.hosts.values()) == [first] and first.client is not None
        clock.advance(1)
        assert pool.hosts == {} and pool.idleClosed == 1
        await waitFor(reactor, lambda: first.client is None, "the idle connection closed")
        assert await source.run(["echo", "back"]) == (0, "back\n", "")
        [second] = pool.hosts.values()
        assert second is not first and second.connects == 1
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_output_comes_as_the_remote_command_writes_it(
    reactor: Any, sshd: SSHD, knownHosts: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    script = f"echo first; echo oops >&2; while [ ! -e {go} ]; do sleep 0.02; done; echo second"
    source = probe(reactor, sshd, knownHosts)
    seen: list[tuple[str, bytes]] = []
    try:
        done = source.run(["sh", "-c", script], timeout=20, onOutput=lambda *p: seen.append(p))
        await waitFor(reactor, lambda: ("stdout", b"first\n") in seen, "the first line, early")
        await waitFor(reactor, lambda: ("stderr", b"oops\n") in seen, "stderr too")
        assert not done.called  # the command still waits for the file
        go.touch()
        assert await done == (0, "first\nsecond\n", "oops\n")
        assert b"".join(data for kind, data in seen if kind == "stdout") == b"first\nsecond\n"
    finally:
        await source.duct.ssh.stopService()


SYSTEM_SOURCES = ("CPU", "Memory", "LoadAverage", "DiskIO", "DiskFree", "Network")


async def twoPolls(reactor: Any, harness: SourceHarness) -> set[str]:
    """The services of a first poll and of a second that has events (CPU needs time between).

    Latencies are left out: they come only when the disk was busy in between.
    """
    await harness.poll()
    await waitFor(reactor, lambda: harness.poll().addCallback(bool), "a poll with events")
    assert harness.errors == [], [f.getErrorMessage() for f in harness.errors]
    return {e.service for e in harness.events if not e.service.endswith("_latency")}


@pytest_twisted.ensureDeferred
async def test_the_system_sources_over_ssh_give_the_local_services_for_the_remote_host(
    reactor: Any, sshd: SSHD, knownHosts: str
) -> None:
    duct = FakeDuct(reactor=reactor, hostname="agent.example")
    try:
        for name in SYSTEM_SOURCES:
            cls = getattr(basic, name)
            config = {"service": name.lower()}
            local = SourceHarness(cls, config, duct=duct)
            remote = SourceHarness(
                cls, {**config, "ssh_host": "127.0.0.1", **sshd.options(knownHosts)}, duct=duct
            )
            localServices = await twoPolls(reactor, local)
            remoteServices = await twoPolls(reactor, remote)
            assert localServices and remoteServices == localServices, name
            assert {e.hostname for e in local.events} == {"agent.example"}
            assert {e.hostname for e in remote.events} == {"127.0.0.1"}, name
        assert len(duct.ssh.hosts) == 1  # six sources, one connection
        assert next(iter(duct.ssh.hosts.values())).connects == 1
    finally:
        await duct.ssh.stopService()


@pytest_twisted.ensureDeferred
async def test_a_blueprint_over_two_hosts_shares_one_connection_per_host(
    reactor: Any, sshd: SSHD, knownHosts: str
) -> None:
    config = {
        "stagger": 0,
        # given once, at the top level, for every source
        "ssh_port": sshd.port,
        "ssh_username": sshd.user,
        "ssh_key": sshd.userKey,
        "ssh_knownhosts_file": knownHosts,
        "toolbox": {"system": {"defaults": {"interval": 0.2, "use_ssh": True}, "sources": [
            {"service": "load", "source": "duct.sources.linux.basic.LoadAverage"},
            {"service": "memory", "source": "duct.sources.linux.basic.Memory"},
            {"service": "network", "source": "duct.sources.linux.basic.Network"},
        ]}},
        "blueprint": [{"toolbox": "system", "sets": [{"hostname": ["127.0.0.1", "localhost"]}]}],
    }  # fmt: skip
    service, output = recordingService(reactor, config)
    wanted = {(host, name) for host in ("127.0.0.1", "localhost") for name in ("load", "memory")}

    def seen() -> set[tuple[str | None, str]]:
        return {(e.hostname, e.service) for e in output.written}

    service.startService()
    try:
        await waitFor(reactor, lambda: wanted <= seen(), "events from both hosts", 15)
        await waitFor(reactor, lambda: all(s.polls >= 3 for s in service.sources), "more polls")
    finally:
        await service.stopService()
    assert sorted(host.target.key for host in service.ssh.hosts.values()) == [
        ("127.0.0.1", sshd.port, sshd.user),
        ("localhost", sshd.port, sshd.user),
    ]
    assert [host.connects for host in service.ssh.hosts.values()] == [1, 1]
    assert [source.errors for source in service.sources] == [0] * 6, sshd.log()


@pytest_twisted.ensureDeferred
async def test_a_changed_host_key_fails_the_check_and_nothing_runs(
    reactor: Any, sshd: SSHD, tmp_path: Path, observe_errors: Any
) -> None:
    keygen(tmp_path / "other")
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    knownHosts = tmp_path / "known_hosts"
    knownHosts.write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    touched = tmp_path / "ran"
    harness = SourceHarness(
        Toucher,
        {"service": "t", "path": str(touched), "ssh_host": "127.0.0.1",
         **sshd.options(str(knownHosts))},
        duct=FakeDuct(reactor=reactor),
    )  # fmt: skip
    try:
        assert await harness.poll() == []
    finally:
        await harness.duct.ssh.stopService()
    [failure] = harness.errors
    assert failure.check(ChangedHostKey)
    message = failure.getErrorMessage()
    assert f"127.0.0.1 port {sshd.port}" in message and f"{knownHosts} line 1" in message
    stats = read(declaredStats(Toucher), harness.source)
    assert (stats["ssh_host_key_failures"], stats["ssh_failures"]) == (1, 1)
    assert not touched.exists()
    assert [e["log_level"] for e in observe_errors.take()] == [LogLevel.error]


@pytest_twisted.ensureDeferred
async def test_an_unknown_host_key_fails_unless_accepting_them_is_asked_for(
    reactor: Any, sshd: SSHD, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    missing = str(tmp_path / "no_known_hosts")
    strict = probe(reactor, sshd, missing)
    accepting = probe(reactor, sshd, missing, ssh_accept_unknown_hosts=True, ssh_host="localhost")
    try:
        with pytest.raises(
            UnknownHostKey, match=f"127.0.0.1 port {sshd.port}.* is not in {missing}"
        ):
            await strict.run(["true"])
        assert strict.commands.sshHostKeyFailures == 1
        assert await accepting.run(["echo", "ok"]) == (0, "ok\n", "")
    finally:
        await strict.duct.ssh.stopService()
        await accepting.duct.ssh.stopService()
    warnings = [
        e
        for e in logged
        if e.get("log_level") == LogLevel.warn and "accepting" in str(e.get("log_format"))
    ]
    assert [w["host"] for w in warnings] == ["localhost"]
    assert not Path(missing).exists()  # nothing is written to the file


@pytest_twisted.ensureDeferred
async def test_a_connection_dropped_during_a_poll_fails_it_and_the_next_poll_reconnects(
    reactor: Any, sshd: SSHD, knownHosts: str, observe_errors: Any
) -> None:
    duct = FakeDuct(reactor=reactor)
    duct.ssh = SSHPool(reactor, retryPolicy=backoffPolicy(initialDelay=0.05, jitter=lambda: 0))
    config = {"service": "slow", "ssh_host": "127.0.0.1", **sshd.options(knownHosts)}
    harness = SourceHarness(Slow, config, duct=duct)
    try:
        polling = harness.poll()
        host = await waitFor(reactor, lambda: next(iter(duct.ssh.hosts.values()), None), "a host")
        client = await waitFor(reactor, lambda: host.client, "the connection")
        marker = harness.source.marker
        await waitFor(reactor, lambda: running(marker), "the command to start")
        client.transport.abortConnection()
        assert await polling == []
        [failure] = harness.errors
        assert failure.check(SSHCommandLost)
        assert "connection lost while the command ran" in failure.getErrorMessage()
        harness.source.seconds = 0
        [event] = await harness.poll()
        assert event.metric == 1 and host.connects == 2
    finally:
        await duct.ssh.stopService()
    assert len(observe_errors.take()) == 1


class Toucher(Source):
    """Creates a file on its host: proof that a command ran."""

    options = (Option("path", "string", "", "file to create"),)

    async def get(self) -> None:
        await self.run(["touch", self.config["path"]])


class Slow(Source):
    """Sleeps ``seconds`` on its host, then emits 1."""

    options = ()
    seconds = 3.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.marker = f"{self.seconds}{os.getpid()}"  # a sleep no other test runs

    async def get(self) -> Event:
        sleep = f"{self.seconds}{os.getpid()}" if self.seconds else "0"
        code, stdout, _ = await self.run(["sh", "-c", f"sleep {sleep}; echo 1"])
        return self.createEvent("ok", "slow", float(stdout))


def test_duct_check_names_the_key_of_a_use_ssh_source_with_no_way_to_log_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    source = {"source": "duct.sources.linux.basic.LoadAverage", "service": "load",
              "use_ssh": True, "ssh_host": "db1"}  # fmt: skip
    with pytest.raises(ConfigurationError) as raised:
        ConfigFile.fromDict({"sources": [source]})
    [problem] = raised.value.problems
    assert problem.key == "ssh_key" and "a way to log in" in problem.message
    ConfigFile.fromDict({"sources": [source], "ssh_password": "secret"})  # inherited: fine
    with pytest.raises(ConfigurationError, match="ssh_keyfile"):
        ConfigFile.fromDict({"sources": [{**source, "ssh_keyfile": "/nonexistent/key"}]})


@pytest_twisted.ensureDeferred
async def test_an_ssh_agent_logs_in_when_no_key_is_configured(
    reactor: Any, sshd: SSHD, knownHosts: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL)
    try:
        await waitFor(reactor, socket.exists, "the agent's socket")
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket)}
        subprocess.run(["ssh-add", "-q", sshd.userKeyFile], env=env, check=True, timeout=30)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket))
        source = probe(reactor, sshd, knownHosts, ssh_keyfile=None)
        try:
            assert await source.run(["echo", "via the agent"]) == (0, "via the agent\n", "")
            [host] = source.duct.ssh.hosts.values()
            assert host.client is not None and host.client.loggedInWith == "agent key"
        finally:
            await source.duct.ssh.stopService()
    finally:
        agent.terminate()
        agent.wait(timeout=30)


@pytest_twisted.ensureDeferred
async def test_the_original_blueprint_example_runs_over_ssh(
    reactor: Any, sshd: SSHD, knownHosts: str, tmp_path: Path
) -> None:
    """The toolbox and blueprint of the original's blueprints guide, word for word,
    with our hosts and the SSH settings given once at the top."""
    path = tmp_path / "duct.yml"
    path.write_text(
        f"""\
stagger: 0
ssh_port: {sshd.port}
ssh_username: {sshd.user}
ssh_keyfile: {sshd.userKeyFile}
ssh_knownhosts_file: {knownHosts}

toolbox:
  linux_defaults:
    defaults:
      use_ssh: True
      interval: 10.0
    sources:
      - service: memory
        source: duct.sources.linux.basic.Memory
      - service: cpu
        source: duct.sources.linux.basic.CPU

blueprint:
  - toolbox: linux_defaults
    defaults:
      interval: 0.2
    sets:
      hostname:
        - 127.0.0.1
        - localhost

outputs:
  - output: duct.testing.RecordingOutput
    name: out
    flush_interval: 0
"""
    )
    config = ConfigFile(str(path)).load()
    built = sorted((item.config["hostname"], item.config["service"]) for item in config.sources)
    assert built == [
        ("127.0.0.1", "cpu"),
        ("127.0.0.1", "memory"),
        ("localhost", "cpu"),
        ("localhost", "memory"),
    ]
    service = DuctService(config, reactor=reactor)
    output = service.outputs["out"]
    assert isinstance(output, RecordingOutput)
    # CPU emits from its second poll on: both services from both hosts, over SSH.
    wanted = {(host, name) for host in ("127.0.0.1", "localhost") for name in ("memory", "cpu")}
    service.startService()
    try:
        await waitFor(
            reactor,
            lambda: wanted <= {(e.hostname, e.service) for e in output.written},
            "memory and cpu events from both hosts",
            20,
        )
    finally:
        await service.stopService()
    assert sorted(h.target.host for h in service.ssh.hosts.values()) == ["127.0.0.1", "localhost"]
