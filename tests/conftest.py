"""Shared fixtures: the reactor, a Clock, a check that nothing logged an error, real peers."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbservers
import pytest
from carbonserver import Carbon, findCarbon, startCarbon
from dockerserver import DockerEngine, findDockerd, startDocker
from dovecotserver import DovecotServer, findDovecot, startDovecot
from influxserver import Influx, findInflux, startInflux
from muninserver import MuninServer, findMunin, startMunin
from nginxserver import Nginx, findNginx, startNginx, stopNginx
from postfixserver import MAIL_UID, PostfixServer, findPostfix, startPostfix
from promserver import PrometheusServer, findPrometheus, startPrometheus
from rabbitserver import RabbitMQ, findRabbitMQ, startRabbitMQ
from sflowprobe import SFlowProbe, findPmacctd, startProbe
from snmpserver import SNMPAgent, findSNMPD, startSNMPD
from sshserver import SSHD, findSSHD, startSSHD, stopSSHD
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from unboundserver import UnboundServer, findUnbound, startUnbound
from uwsgiserver import EmperorServer, findUwsgi, startEmperor
from vmserver import VictoriaMetrics, findVictoriaMetrics, startVictoriaMetrics


@pytest.fixture
def reactor() -> Any:
    """The running reactor, for tests that use real sockets or processes."""
    from twisted.internet import reactor as _reactor

    return _reactor


@pytest.fixture
def clock() -> Clock:
    return Clock()


class ErrorLog:
    """Collects critical and error log events while a test runs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level in (LogLevel.error, LogLevel.critical) or event.get("isError"):
            self.events.append(event)

    def take(self) -> list[dict[str, Any]]:
        """Return the errors logged so far and forget them (they were expected)."""
        events, self.events = self.events, []
        return events


@pytest.fixture(autouse=True)
def observe_errors() -> Iterator[ErrorLog]:
    """Fail any test that logged an unhandled error it did not take."""
    errors = ErrorLog()
    globalLogPublisher.addObserver(errors)
    try:
        yield errors
    finally:
        globalLogPublisher.removeObserver(errors)
    from twisted.logger import formatEvent

    unexpected = errors.events
    if unexpected:
        lines = "\n".join(formatEvent(event) for event in unexpected)
        failure = unexpected[0].get("log_failure")
        detail = failure.getTraceback() if failure is not None else ""
        pytest.fail(f"test logged {len(unexpected)} error(s):\n{lines}\n{detail}")


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted while the test runs, in order."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def _sessionServer(find: Any, start: Any, package: str, stop: Any = None) -> Iterator[Any]:
    """The server ``start(binary)`` makes, for a session; a missing ``package`` fails.

    ``stop(binary, server)`` stops it at the end, or else ``server.stop()``.
    """
    binary = find()
    if binary is None:
        pytest.fail(f"{package} is not installed: run scripts/test-deps.sh (as root) or make test")
    server = start(binary)
    try:
        yield server
    finally:
        if stop is not None:
            stop(binary, server)
        else:
            server.stop()


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """Debian's nginx serving ``/nginx_status`` on 127.0.0.1, one for the whole session.

    `make test` installs nginx (scripts/test-deps.sh); a missing one fails
    the tests that use it, since they would otherwise prove nothing.
    """
    yield from _sessionServer(
        findNginx,
        lambda binary: startNginx(binary, tmp_path_factory.mktemp("nginx")),
        "nginx",
        stopNginx,
    )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD]:
    """Debian's OpenSSH server on 127.0.0.1, for the current user, one for the whole session.

    `make test` installs it (scripts/test-deps.sh); a missing one fails the
    tests that use it.
    """
    yield from _sessionServer(
        findSSHD,
        lambda binary: startSSHD(binary, tmp_path_factory.mktemp("sshd")),
        "openssh-server",
        lambda _, server: stopSSHD(server),
    )


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    """Debian's InfluxDB 1.6 on 127.0.0.1 with a database ``duct``, one for the whole session.

    `make test` installs it (scripts/test-deps.sh); a missing one fails the
    tests that use it.
    """
    yield from _sessionServer(
        findInflux,
        lambda binary: startInflux(binary, tmp_path_factory.mktemp("influx")),
        "influxdb",
        lambda _, server: server.server.stop(),
    )


@pytest.fixture(scope="session")
def prometheus_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Debian's prometheus with its remote write receiver on, one for the whole session."""
    yield from _sessionServer(
        findPrometheus,
        lambda binary: startPrometheus(
            binary, tmp_path_factory.mktemp("prometheus"), receiver=True
        ),
        "prometheus",
    )


@pytest.fixture(scope="session")
def carbon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Carbon]:
    """Debian's carbon-cache on free ports of 127.0.0.1, one for the whole session.

    A test that stops it starts it again.  `make test` installs it
    (scripts/test-deps.sh); a missing one fails the tests that use it.
    """
    yield from _sessionServer(
        findCarbon,
        lambda binary: startCarbon(binary, tmp_path_factory.mktemp("carbon")),
        "graphite-carbon",
    )


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """Debian's victoria-metrics taking OpenTSDB's /api/put, one for the whole session.

    A test that stops it starts it again.  `make test` installs it
    (scripts/test-deps.sh); a missing one fails the tests that use it.
    """
    yield from _sessionServer(
        findVictoriaMetrics,
        lambda binary: startVictoriaMetrics(binary, tmp_path_factory.mktemp("victoria")),
        "victoria-metrics",
    )


@pytest.fixture(scope="session")
def apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's apache2 with mod_status on 127.0.0.1, one for the whole session."""
    from webservers import apache as make
    from webservers import findApache

    root = tmp_path_factory.mktemp("apache")
    yield from _sessionServer(findApache, lambda binary: started(make(binary, root)), "apache2")


@pytest.fixture(scope="session")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's haproxy with stats over HTTP and a socket, one for the whole session."""
    from webservers import findHAProxy
    from webservers import haproxy as make

    root = tmp_path_factory.mktemp("haproxy")
    yield from _sessionServer(findHAProxy, lambda binary: started(make(binary, root)), "haproxy")


@pytest.fixture(scope="session")
def node_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's prometheus-node-exporter on 127.0.0.1, one for the whole session."""
    from webservers import findNodeExporter, nodeExporter

    root = tmp_path_factory.mktemp("node_exporter")
    yield from _sessionServer(
        findNodeExporter,
        lambda binary: started(nodeExporter(binary, root)),
        "prometheus-node-exporter",
    )


def started(server: Any) -> Any:
    """``server``, once its ``start`` returned."""
    server.start()
    return server


@pytest.fixture(scope="session")
def sflow_probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFlowProbe]:
    """Debian's pmacctd exporting sFlow of one port's traffic on lo, one for the whole session."""
    root = tmp_path_factory.mktemp("pmacctd")
    yield from _sessionServer(findPmacctd, lambda binary: startProbe(binary, root), "pmacct")


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """Debian's dockerd on a private socket with two busybox containers, one per session."""
    root = tmp_path_factory.mktemp("docker")
    yield from _sessionServer(findDockerd, lambda binary: startDocker(binary, root), "docker.io")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[dbservers.Server]:
    """Debian's redis-server on 127.0.0.1, one for the whole session."""
    yield from _sessionServer(dbservers.findRedis, dbservers.startRedis, "redis-server")


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[dbservers.Server]:
    """Debian's memcached on 127.0.0.1, one for the whole session."""
    yield from _sessionServer(dbservers.findMemcached, dbservers.startMemcached, "memcached")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dbservers.Server]:
    """Debian's PostgreSQL 15 on 127.0.0.1 (trust auth, user postgres), one per session."""
    yield from _sessionServer(dbservers.findPostgres, dbservers.startPostgres, "postgresql")


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[dbservers.Server]:
    """Debian's MariaDB on 127.0.0.1 with a user duct (password duct), one per session."""
    yield from _sessionServer(dbservers.findMariaDB, dbservers.startMariaDB, "mariadb-server")


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQ]:
    """Debian's RabbitMQ with its management API, on free ports, one for the whole session."""
    yield from _sessionServer(findRabbitMQ, lambda _: startRabbitMQ(), "rabbitmq-server")


@pytest.fixture(scope="session")
def munin_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MuninServer]:
    """Debian's munin-node on 127.0.0.1 with two plugins of its own, one for the whole session."""
    root = tmp_path_factory.mktemp("munin")
    yield from _sessionServer(findMunin, lambda binary: startMunin(binary, root), "munin-node")


@pytest.fixture(scope="session")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnboundServer]:
    """Debian's unbound on 127.0.0.1 with a control socket, one for the whole session."""
    root = tmp_path_factory.mktemp("unbound")
    yield from _sessionServer(findUnbound, lambda binary: startUnbound(binary, root), "unbound")


@pytest.fixture(scope="session")
def postfix() -> Iterator[PostfixServer]:
    """A private instance of Debian's postfix with smtpd on 127.0.0.1, for the whole session.

    Its directory is under /tmp, open to the postfix user (pytest's tmp is not).
    """
    root = Path(tempfile.mkdtemp(prefix="duct-postfix-"))
    yield from _sessionServer(findPostfix, lambda binary: startPostfix(binary, root), "postfix")


@pytest.fixture(scope="session")
def uwsgi_emperor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmperorServer]:
    """Debian's uWSGI as an Emperor with one Python vassal and its stats server, for the session."""
    root = tmp_path_factory.mktemp("uwsgi")
    yield from _sessionServer(findUwsgi, lambda binary: startEmperor(binary, root), "uwsgi")


@pytest.fixture(scope="session")
def dovecot(postfix: PostfixServer) -> Iterator[DovecotServer]:
    """Debian's dovecot serving over IMAP the maildirs the session's postfix delivers to.

    It also checks the logins of the postfix's SMTP AUTH listener.
    """
    root = Path(tempfile.mkdtemp(prefix="duct-dovecot-"))

    def start(binary: str) -> DovecotServer:
        return startDovecot(binary, root, postfix.root / "mail", MAIL_UID, postfix.sasl)

    yield from _sessionServer(findDovecot, start, "dovecot-imapd")


@pytest.fixture(scope="session")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SNMPAgent]:
    """Debian's snmpd on 127.0.0.1 with a v2c community and a v3 user, for the whole session."""
    root = tmp_path_factory.mktemp("snmpd")
    yield from _sessionServer(findSNMPD, lambda binary: startSNMPD(binary, root), "snmpd")


@pytest.fixture(scope="session")
def charon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's strongSwan charon with a private config and one tunnel up, for the session."""
    from strongswanserver import findCharon, startCharon

    root = tmp_path_factory.mktemp("strongswan")
    yield from _sessionServer(findCharon, lambda binary: startCharon(binary, root), "strongswan")
