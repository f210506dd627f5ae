"""RiemannTCP over TLS, against a real TLS server with certificates made for each test."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_riemann_output import RiemannServer, makeEvents, waitFor
from twisted.internet import ssl
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent

from duct.outputs.riemann import RiemannTCP
from duct.testing import FakeDuct, configure


class Authority:
    """A CA that signs certificates, all kept as PEM."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    def _builder(self, subject: x509.Name, public: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, server: bool) -> tuple[bytes, bytes]:
        """A certificate and its key, in PEM, for a server (127.0.0.1/2, localhost) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            self._builder(subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.2")),
                    ]
                ),
                critical=False,
            )
        usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else None
        usage = usage or x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        keyPem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), keyPem


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def serverOptions(ca: Authority, clientCA: Authority | None = None) -> Any:
    cert, key = ca.issue("riemann.test", server=True)
    server = ssl.PrivateCertificate.loadPEM(cert + key)
    if clientCA is None:
        return server.options()
    return ssl.CertificateOptions(
        privateKey=server.privateKey.original,
        certificate=server.original,
        verify=True,
        caCerts=[ssl.Certificate.loadPEM(clientCA.pem).original],
        requireCertificate=True,
    )


def listenTLS(
    reactor: Any, server: RiemannServer, options: Any, port: int = 0, interface: str = "127.0.0.1"
) -> int:
    server.port = reactor.listenSSL(port, server, options, interface=interface)
    server.portNumber = server.port.getHost().port
    return server.portNumber


def tlsOutput(reactor: Any, port: int, **config: Any) -> RiemannTCP:
    config = {"server": "127.0.0.1", "port": port, "tls": True, "reconnect_max": 0.2, **config}
    output = RiemannTCP(configure(RiemannTCP, config), FakeDuct(clock=reactor))
    output.createClient()
    return output


async def deliver(reactor: Any, output: RiemannTCP, server: RiemannServer, count: int = 3) -> None:
    try:
        output.eventsReceived(makeEvents(count))
        await output.flush()
    finally:
        await output.stop()
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_tls_with_the_right_ca(reactor: Any, tmp_path: Path) -> None:
    ca = Authority("test CA")
    server = RiemannServer(reactor)
    port = listenTLS(reactor, server, serverOptions(ca))
    output = tlsOutput(reactor, port, ca=write(tmp_path, "ca.pem", ca.pem))
    await deliver(reactor, output, server)
    assert server.services == ["0", "1", "2"]
    assert output.sent == 3


@pytest_twisted.ensureDeferred
async def test_tls_by_hostname(reactor: Any, tmp_path: Path) -> None:
    ca = Authority("test CA")
    server = RiemannServer(reactor)
    port = listenTLS(reactor, server, serverOptions(ca))
    # "localhost" may resolve to ::1 first: the endpoint tries each address.
    output = tlsOutput(reactor, port, server="localhost", ca=write(tmp_path, "ca.pem", ca.pem))
    await deliver(reactor, output, server)
    assert server.services == ["0", "1", "2"]


@pytest_twisted.ensureDeferred
async def test_tls_with_another_ca_is_refused(
    reactor: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    server = RiemannServer(reactor)
    port = listenTLS(reactor, server, serverOptions(Authority("server CA")))
    other = write(tmp_path, "other.pem", Authority("another CA").pem)
    output = tlsOutput(reactor, port, ca=other)
    try:
        output.eventsReceived(makeEvents(3))
        await waitFor(
            reactor,
            lambda: any("cannot connect" in e.get("log_format", "") for e in logged),
            "a logged TLS failure",
        )
        await deferLater(reactor, 0.5, lambda: None)  # a few more attempts, backing off
        assert not output.connected and output.sent == 0
    finally:
        await output.stop()
        await server.stop()
    assert server.events == [] and output.buffer.depth == 3
    failures = [e for e in logged if "cannot connect" in e.get("log_format", "")]
    assert failures and all(e["log_level"] == LogLevel.warn for e in failures)
    assert f"127.0.0.1:{port}" in formatEvent(failures[0])
    assert "certificate verify failed" in formatEvent(failures[0])
    # Each failed handshake is a failed attempt for ClientService, which backs off further.
    attempts = [e["attempt"] for e in logged if "Scheduling retry" in e.get("log_format", "")]
    assert len(attempts) >= 2 and attempts == list(range(1, len(attempts) + 1))


@pytest_twisted.ensureDeferred
async def test_a_failed_handshake_fails_over_to_the_next_server(
    reactor: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    ca = Authority("test CA")
    impostor = RiemannServer(reactor)
    port = listenTLS(reactor, impostor, serverOptions(Authority("another CA")))
    server = RiemannServer(reactor)
    listenTLS(reactor, server, serverOptions(ca), port=port, interface="127.0.0.2")
    output = tlsOutput(
        reactor, port, server=["127.0.0.1", "127.0.0.2"], ca=write(tmp_path, "ca.pem", ca.pem)
    )
    try:
        await deliver(reactor, output, server)
    finally:
        await impostor.stop()
    assert server.services == ["0", "1", "2"] and impostor.events == []
    failures = [formatEvent(e) for e in logged if "cannot connect" in e.get("log_format", "")]
    assert failures and f"127.0.0.1:{port}" in failures[0]


@pytest_twisted.ensureDeferred
async def test_tls_without_verification_warns(
    reactor: Any, tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    server = RiemannServer(reactor)
    port = listenTLS(reactor, server, serverOptions(Authority("unknown CA")))
    output = tlsOutput(reactor, port, tls_verify=False, name="riemann-insecure")
    await deliver(reactor, output, server)
    assert server.services == ["0", "1", "2"]
    warnings = [
        formatEvent(e)
        for e in logged
        if e["log_level"] == LogLevel.warn and "tls_verify" in formatEvent(e)
    ]
    assert len(warnings) == 1 and "riemann-insecure" in warnings[0]


@pytest_twisted.ensureDeferred
async def test_tls_presents_the_client_certificate(reactor: Any, tmp_path: Path) -> None:
    ca = Authority("server CA")
    clients = Authority("client CA")
    server = RiemannServer(reactor)
    port = listenTLS(reactor, server, serverOptions(ca, clientCA=clients))
    cert, key = clients.issue("duct-client", server=False)
    output = tlsOutput(
        reactor,
        port,
        ca=write(tmp_path, "ca.pem", ca.pem),
        cert=write(tmp_path, "client.pem", cert),
        key=write(tmp_path, "client.key", key),
    )
    try:
        output.eventsReceived(makeEvents(2))
        await output.flush()
        peer = server.connections[0].transport.getPeerCertificate()
    finally:
        await output.stop()
        await server.stop()
    assert server.services == ["0", "1"]
    names = peer.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [name.value for name in names] == ["duct-client"]
