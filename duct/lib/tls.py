"""Client TLS: the options every plugin that connects out shares, and what they build.

A plugin splices `TLS_CLIENT_OPTIONS` into its ``options`` and calls
`tlsFromConfig` (or `clientTLSOptions`) for the host it connects to.  The
server's certificate is checked by default; switching that off is logged
as a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger

from duct.options import Option

__all__ = ["TLS_CLIENT_OPTIONS", "clientTLSOptions", "tlsFromConfig"]

log = Logger()

TLS_CLIENT_OPTIONS: tuple[Option, ...] = (
    Option("tls_ca", "string", None, "PEM file of the CAs to trust (default: the system's)"),
    Option("tls_cert", "string", None, "PEM file of a client certificate to present"),
    Option("tls_key", "string", None, "PEM file of the client key (default: in tls_cert)"),
    Option("tls_verify", "boolean", True, "check the server's certificate and name"),
)


def tlsFromConfig(hostname: str, config: Mapping[str, Any], name: str = "") -> Any:
    """The TLS options for ``hostname`` from a config with `TLS_CLIENT_OPTIONS`.

    A false ``tls_verify`` is logged as a warning naming ``name``.
    """
    verify = config.get("tls_verify") is not False
    if not verify:
        log.warn(
            "{name}: tls_verify is false: the certificate of {host} is not checked",
            name=name or "a plugin",
            host=hostname,
        )
    return clientTLSOptions(
        hostname, config.get("tls_ca"), config.get("tls_cert"), config.get("tls_key"), verify
    )


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


_BEGIN = b"-----BEGIN CERTIFICATE-----"


def clientTLSOptions(
    hostname: str,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    verify: bool = True,
) -> Any:
    """The TLS options a client connection to ``hostname`` uses.

    ``ca`` is a PEM file of one or more CA certificates; without it the
    system's trust store is used.  ``cert`` is the client's certificate in
    PEM, and ``key`` its private key (or None when ``cert`` holds both).
    Without ``verify``, any server certificate is accepted.
    """
    from twisted.internet import ssl

    client = None
    if cert:
        pem = _read(cert)
        if key:
            pem = pem.rstrip(b"\n") + b"\n" + _read(key)
        client = ssl.PrivateCertificate.loadPEM(pem)
    if not verify:
        if client is None:
            return ssl.CertificateOptions(verify=False)
        return ssl.CertificateOptions(
            verify=False, privateKey=client.privateKey.original, certificate=client.original
        )
    if ca:
        blocks = [_BEGIN + part for part in _read(ca).split(_BEGIN)[1:]]
        if not blocks:
            raise ValueError(f"{ca} holds no PEM certificate")
        certificates = [ssl.Certificate.loadPEM(block) for block in blocks]
        trust: Any = (
            certificates[0]
            if len(certificates) == 1
            else ssl.trustRootFromCertificates(certificates)
        )
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client)
