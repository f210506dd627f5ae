"""DNS: resolve a name against a chosen server, timed, and check the answers."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import TimeoutError
from twisted.names import client, dns, error
from twisted.python.failure import Failure

from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "CAA")

_ERRORS = {
    error.DNSNameError: "the name does not exist (NXDOMAIN)",
    error.DNSServerError: "the server failed (SERVFAIL)",
    error.DNSQueryRefusedError: "the server refused the query",
    error.DNSFormatError: "the server found the query malformed",
    error.DNSNotImplementedError: "the server does not implement the query",
}


def _name(value: Any) -> str:
    return str(value).rstrip(".").lower()


def answerText(record: dns.RRHeader) -> str:
    """One answer as text: an address, a name, the text of a TXT record, ``10 mx.example``."""
    payload: Any = record.payload
    if record.type == dns.A:
        return str(payload.dottedQuad())
    if record.type == dns.AAAA:
        return socket.inet_ntop(socket.AF_INET6, payload.address)
    if record.type == dns.MX:
        return f"{payload.preference} {_name(payload.name)}"
    if record.type == dns.TXT:
        return b"".join(payload.data).decode("utf-8", errors="replace")
    if record.type == dns.SRV:
        return f"{payload.priority} {payload.weight} {payload.port} {_name(payload.target)}"
    if record.type in (dns.CNAME, dns.NS, dns.PTR):
        return _name(payload.name)
    return str(payload)


def matches(expect: str, text: str, recordType: int) -> bool:
    """Whether an answer is ``expect``: names without case or final dot; an MX by name too."""
    wanted = expect.rstrip(".").lower() if recordType != dns.TXT else expect
    found = text.lower() if recordType != dns.TXT else text
    return found == wanted or (recordType == dns.MX and found.split(" ", 1)[-1] == wanted)


class DNS(Source):
    """Looks ``name`` up, as a ``type`` record, from ``server``.

    - ``{service}.latency``: milliseconds until the answer came;
    - ``{service}.answers``: how many records of that type the answer holds.

    Both are ``critical``, with the reason in the description, when the
    server gives no answer within ``timeout``, answers with an error (the name
    does not exist, a server failure) or with no record of that type, or when
    ``expect`` is not among the answers.  An answer is compared as text: an
    address, a name (without case or final dot), the text of a TXT record;
    an MX as ``10 mail.example.com`` or just its name.  The query goes over
    UDP, and again over TCP when the answer is truncated.  Without
    ``server``, the servers of /etc/resolv.conf are asked.
    """

    sync = True
    options = (
        Option("name", "string", None, "name to look up (default: the source's hostname)"),
        Option("type", "string", "A", "record type to ask for", choices=RECORD_TYPES),
        Option("server", "string", None, "address of the DNS server (default: /etc/resolv.conf)"),
        Option("port", "integer", 53, "port of the DNS server", minimum=1),
        Option("expect", "string", None, "an answer that must be present"),
        Option("timeout", "number", 5.0, "seconds to wait for the answer", above=0),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resolver: Any = None

    def getResolver(self) -> Any:
        if self.resolver is None:
            server = self.config["server"]
            if server:
                servers = [(server, self.config["port"])]
                self.resolver = client.Resolver(servers=servers, reactor=self.duct.reactor)
            else:
                self.resolver = client.Resolver("/etc/resolv.conf", reactor=self.duct.reactor)
        return self.resolver

    async def get(self) -> list[Event]:
        name = self.config["name"] or self.hostname
        recordType = dns.REV_TYPES[self.config["type"]]
        where = f"{self.config['type']} {name}"
        if self.config["server"]:
            where += f" from {self.config['server']}:{self.config['port']}"
        started = self.clock.seconds()
        query = dns.Query(name, recordType, dns.IN)
        try:
            answers, _, _ = await self.getResolver().query(query, timeout=(self.config["timeout"],))
        except Exception:
            failure = Failure()
            reason = next((why for kind, why in _ERRORS.items() if failure.check(kind)), None)
            if failure.check(TimeoutError):  # twisted.names gives up with defer.TimeoutError
                reason = f"no answer within {self.config['timeout']:g}s"
            return self._events("critical", f"{where}: {reason or failureReason(failure)}",
                                started, 0)  # fmt: skip
        texts = [answerText(r) for r in answers if r.type == recordType]
        expect = self.config["expect"]
        if not texts:
            return self._events("critical", f"{where}: no {self.config['type']} record",
                                started, 0)  # fmt: skip
        shown = ", ".join(texts[:5]) + (", ..." if len(texts) > 5 else "")
        if expect is not None and not any(matches(expect, t, recordType) for t in texts):
            return self._events("critical", f"{where}: {expect!r} is not among the answers "
                                f"({shown})", started, len(texts))  # fmt: skip
        return self._events("ok", f"{where}: {shown}", started, len(texts))

    def _events(self, state: str, description: str, started: float, count: int) -> list[Event]:
        elapsed = (self.clock.seconds() - started) * 1000
        return [self.createEvent(state, description, elapsed, "latency"),
                self.createEvent(state, description, count, "answers")]  # fmt: skip
