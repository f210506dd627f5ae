"""Server certificates for the network checks: fetch a chain, check it, say what is wrong.

`fetchChain` opens a TLS connection that accepts any certificate, only to
read what the server presents.  `checkChain` then verifies that chain with
OpenSSL (`OpenSSL.crypto.X509StoreContext`) against the ``tls_ca`` file or
the system's CAs, at the source's clock time, and the name with
``service_identity``, and returns the reason it fails in plain words.
`RecordingPolicy` keeps the TLS connections an HTTP agent makes, so that
a check reads the certificate of the very connection it used.
"""

from __future__ import annotations

import ipaddress
import os
import ssl as stdlib_ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from duct.lib.process import Timeout

__all__ = ["Chain", "RecordingPolicy", "checkChain", "daysLeft", "fetchChain", "tlsFailure"]

DAY = 86400.0


def isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class Chain:
    """What a server presented: its certificate first, then any intermediates."""

    certificates: list[crypto.X509]

    @property
    def leaf(self) -> Any:
        """The server's own certificate, as a `cryptography` certificate."""
        return self.certificates[0].to_cryptography()

    @property
    def issuer(self) -> str:
        return str(self.leaf.issuer.rfc4514_string())

    @property
    def subject(self) -> str:
        return str(self.leaf.subject.rfc4514_string())

    @property
    def notAfter(self) -> datetime:
        notAfter: datetime = self.leaf.not_valid_after_utc
        return notAfter

    def attributes(self) -> dict[str, str]:
        return {"issuer": self.issuer, "subject": self.subject,
                "not_after": self.notAfter.isoformat()}  # fmt: skip


def daysLeft(chain: Chain, now: float) -> float:
    """Days from ``now`` (POSIX seconds) until the certificate expires; negative once it has."""
    return round((chain.notAfter.timestamp() - now) / DAY, 2)


@implementer(IOpenSSLClientConnectionCreator)
class _AnyCertificate:
    """TLS that accepts any certificate, sends ``servername`` (SNI), and keeps the connection."""

    def __init__(self, servername: str) -> None:
        from twisted.internet.ssl import CertificateOptions

        self.context = CertificateOptions(verify=False).getContext()
        self.servername = servername
        self.connection: SSL.Connection | None = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self.connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        if not isAddress(self.servername):
            connection.set_tlsext_host_name(self.servername.encode("idna"))
        return connection


@implementer(IHandshakeListener)
class _Handshake(Protocol):
    def __init__(self, done: Deferred[None]) -> None:
        self.done = done

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def handshakeCompleted(self) -> None:
        if not self.done.called:
            self.done.callback(None)
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.errback(reason)


async def fetchChain(
    reactor: Any, host: str, port: int, timeout: float, servername: str | None = None
) -> Chain:
    """The certificates ``host:port`` presents, unverified; `Timeout` past ``timeout`` seconds."""
    creator = _AnyCertificate(servername or host)
    protocols: list[_Handshake] = []

    def cancel(_: Deferred[None]) -> None:
        connecting.cancel()
        for protocol in protocols:
            protocol.abort()

    def build() -> _Handshake:
        protocols.append(_Handshake(done))
        return protocols[-1]

    done: Deferred[None] = Deferred(cancel)
    tcp: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    endpoint: Any = wrapClientTLS(creator, tcp)  # type: ignore[arg-type]
    connecting = endpoint.connect(Factory.forProtocol(build))
    connecting.addErrback(lambda failure: None if done.called else done.errback(failure))

    def timedOut(result: object, seconds: float) -> None:
        raise Timeout(f"no TLS handshake with {host}:{port} within {seconds:g}s")

    await done.addTimeout(timeout, reactor, onTimeoutCancel=timedOut)
    assert creator.connection is not None
    certificates = creator.connection.get_peer_cert_chain()
    if not certificates:
        raise SSL.Error(f"{host}:{port} presented no certificate")
    return Chain(list(certificates))


def _trustStore(ca: str | None) -> crypto.X509Store:
    store = crypto.X509Store()
    if ca:
        store.load_locations(ca)
        return store
    paths = stdlib_ssl.get_default_verify_paths()
    cafile = paths.cafile if paths.cafile and os.path.exists(paths.cafile) else None
    capath = paths.capath if paths.capath and os.path.isdir(paths.capath) else None
    if cafile or capath:
        store.load_locations(cafile, capath)
    return store


def checkChain(chain: Chain, host: str, ca: str | None, now: float) -> str | None:
    """Why ``chain`` is not a valid certificate for ``host`` at ``now``; None if it is.

    The chain is checked against the PEM file ``ca`` or the system's CAs.
    """
    from service_identity import CertificateError, VerificationError
    from service_identity.cryptography import (
        verify_certificate_hostname,
        verify_certificate_ip_address,
    )

    store = _trustStore(ca)
    store.set_time(datetime.fromtimestamp(now, timezone.utc))
    leaf, *intermediates = chain.certificates
    try:
        crypto.X509StoreContext(store, leaf, intermediates).verify_certificate()
    except crypto.X509StoreContextError as e:
        trusted = ca or "the system CAs"
        reason = str(e.args[0]) if e.args else str(e)
        if "expired" in reason:
            return f"certificate expired {chain.notAfter:%Y-%m-%d %H:%M} UTC ({reason})"
        return f"certificate does not verify against {trusted}: {reason} (issuer {chain.issuer})"
    try:
        if isAddress(host):
            verify_certificate_ip_address(chain.leaf, host)
        else:
            verify_certificate_hostname(chain.leaf, host)
    except (VerificationError, CertificateError) as e:
        return f"certificate is not for {host}: {e} (subject {chain.subject})"
    return None


def tlsFailure(failure: Failure) -> Failure | None:
    """The TLS error (handshake or name check) inside an HTTP client's failure, if any."""
    from service_identity import VerificationError

    if failure.check(SSL.Error, VerificationError):
        return failure
    for reason in getattr(failure.value, "reasons", None) or ():
        found = tlsFailure(reason)
        if found is not None:
            return found
    return None


@implementer(IOpenSSLClientConnectionCreator)
class _RecordingCreator:
    def __init__(self, creator: Any, seen: dict[tuple[str, int], SSL.Connection], key: Any):
        self.creator = creator
        self.seen = seen
        self.key = key

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection: SSL.Connection = self.creator.clientConnectionForTLS(tlsProtocol)
        self.seen[self.key] = connection
        return connection


@implementer(IPolicyForHTTPS)
class RecordingPolicy:
    """Wraps an `IPolicyForHTTPS` and keeps the last TLS connection made to each host and port.

    ``connections`` maps ``(host, port)`` to the `OpenSSL.SSL.Connection`,
    whose peer certificate stays readable after it closes.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.connections: dict[tuple[str, int], SSL.Connection] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        creator = self.policy.creatorForNetloc(hostname, port)
        return _RecordingCreator(creator, self.connections, (hostname.decode("ascii"), port))

    def chain(self, host: str, port: int) -> Chain | None:
        """The certificates of the last connection to ``host:port``, if there was one."""
        connection = self.connections.get((host, port))
        certificates = connection.get_peer_cert_chain() if connection is not None else None
        return Chain(list(certificates)) if certificates else None
