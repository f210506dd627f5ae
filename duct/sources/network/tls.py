"""TLS: how many days the certificate of a server has left, and whether it verifies."""

from __future__ import annotations

from twisted.python.failure import Failure

from duct.lib.tls import TLS_CLIENT_OPTIONS
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.certificates import checkChain, daysLeft, fetchChain
from duct.sources.network.http import failureReason


class TLS(Source):
    """Reads the certificate ``host:port`` presents.

    ``{service}.expiry``: days until it expires (negative once it has), with
    attributes ``issuer``, ``subject`` and ``not_after``.  The state is
    ``critical``, with the reason in the description, when the chain does not
    verify against ``tls_ca`` (or the system's CAs), the certificate is not
    for ``servername`` (by default ``host``), or no handshake completes
    within ``timeout``.  With ``tls_verify: false`` only the expiry is
    reported.

    Warn ahead of the expiry with the usual rules, which apply while the
    state is ``ok``: ``warning: {'www\\.tls\\.expiry': "< 30"}``,
    ``critical: {'www\\.tls\\.expiry': "< 7"}``.
    """

    sync = True
    options = (
        Option("host", "string", None, "host to connect to (default: the source's hostname)"),
        Option("port", "integer", 443, "TCP port of the TLS server", minimum=1),
        Option(
            "servername",
            "string",
            None,
            "name the certificate must be for, sent as SNI (default: host)",
        ),  # fmt: skip
        Option(
            "timeout", "number", 10.0, "seconds to connect and complete the handshake", above=0
        ),  # fmt: skip
        *(option for option in TLS_CLIENT_OPTIONS if option.name in ("tls_ca", "tls_verify")),
    )

    async def get(self) -> Event:
        host = self.config["host"] or self.hostname
        port = self.config["port"]
        name = self.config["servername"] or host
        where = f"{host}:{port}"
        try:
            chain = await fetchChain(self.duct.reactor, host, port, self.config["timeout"], name)
        except Exception:
            reason = failureReason(Failure())
            return self.createEvent("critical", f"{where}: {reason}", None, "expiry")
        now = self.clock.seconds()
        days = daysLeft(chain, now)
        problem = checkChain(chain, name, self.config["tls_ca"], now)
        if problem is not None and self.config["tls_verify"]:
            state, description = "critical", f"{where}: {problem}"
        else:
            state = "ok"
            description = (
                f"{where}: certificate expires in {days:.0f} days ({chain.notAfter:%Y-%m-%d})"
            )
        return self.createEvent(state, description, days, "expiry", attributes=chain.attributes())
