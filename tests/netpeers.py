"""Peers for the network checks: a test CA and its certificates, and small servers.

`CertificateAuthority` makes a CA with ``cryptography`` and signs server certificates
for 127.0.0.1 and ``localhost``: a valid one, an expired one and one for
another name.  `listenHTTP` serves a `twisted.web` resource over HTTP or,
given a certificate, HTTPS on a free port of 127.0.0.1.  `listenDNS`
answers from records held in memory, over UDP and TCP on one port.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import ssl
from twisted.names import authority, common, dns, server

UTC = datetime.timezone.utc


@dataclass
class Issued:
    """A server certificate and its key, in PEM, and when it expires."""

    cert: bytes
    key: bytes
    notAfter: datetime.datetime

    def options(self) -> Any:
        """Twisted server TLS options presenting this certificate."""
        return ssl.PrivateCertificate.loadPEM(self.cert + self.key).options()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class CertificateAuthority:
    """A certificate authority for one test session; ``path`` is its PEM file."""

    def __init__(self, directory: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(UTC)
        self.name = _name("duct test CA")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=3650))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        names: tuple[str, ...] = ("localhost", "127.0.0.1"),
        notBefore: datetime.timedelta = datetime.timedelta(days=-1),
        notAfter: datetime.timedelta = datetime.timedelta(days=90),
    ) -> Issued:
        """A certificate for ``names`` (host names or addresses), valid relative to now."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(UTC).replace(microsecond=0)
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + notBefore)
            .not_valid_after(now + notAfter)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        keyPEM = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Issued(pem, keyPEM, now + notAfter)


def listenHTTP(reactor: Any, resource: Any, issued: Issued | None = None) -> Any:
    """Serve ``resource`` on 127.0.0.1 (HTTPS with ``issued``); returns the listening port."""
    from twisted.web.server import Site

    site = Site(resource)
    if issued is None:
        return reactor.listenTCP(0, site, interface="127.0.0.1")
    return reactor.listenSSL(0, site, issued.options(), interface="127.0.0.1")


class MemoryAuthority(authority.FileAuthority):
    """An authority for one zone whose records are given, not read from a file."""

    def __init__(self, zone: bytes, records: dict[bytes, list[Any]]) -> None:
        common.ResolverBase.__init__(self)
        soa = dns.Record_SOA(mname=b"ns." + zone, rname=b"admin." + zone, serial=1, ttl=60)
        self.soa = (zone, soa)
        self.records = {name.lower(): list(rs) for name, rs in records.items()}
        self.records.setdefault(zone, []).append(soa)
        self._cache: dict[Any, Any] = {}


def listenDNS(reactor: Any, resolver: Any) -> tuple[Any, Any]:
    """Answer from ``resolver`` over TCP and UDP on one free port; returns both ports."""
    factory = server.DNSServerFactory(authorities=[resolver])
    for _ in range(20):
        tcp = reactor.listenTCP(0, factory, interface="127.0.0.1")
        try:
            udp = reactor.listenUDP(
                tcp.getHost().port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1"
            )
        except Exception:
            tcp.stopListening()
            continue
        return tcp, udp
    raise RuntimeError("no port free for both TCP and UDP")
