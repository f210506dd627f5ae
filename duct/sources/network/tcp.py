"""TCP: the time to connect to a port, and optionally a reply that must match."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from duct.lib.process import Timeout
from duct.objects import Event, Source
from duct.options import REQUIRED, Option
from duct.sources.network.http import failureReason


class _Exchange(Protocol):
    """Sends ``send`` once connected; fires ``replied`` with what came back.

    With ``expect``, it fires as soon as the reply contains it, or with all
    of the reply when the server closes; without, it closes at once.
    """

    def __init__(self, send: bytes | None, expect: bytes | None) -> None:
        self.send = send
        self.expect = expect
        self.received = b""
        self.replied: Deferred[bytes] = Deferred(lambda _: self.abort())

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        if self.send:
            transport.write(self.send)
        if self.expect is None:
            transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.expect is not None and self.expect in self.received and not self.replied.called:
            self.replied.callback(self.received)
            transport: Any = self.transport
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.replied.called:
            self.replied.callback(self.received)


class TCP(Source):
    """Connects to ``host:port``.

    ``{service}.latency``: milliseconds until the connection was made.  With
    ``send``, that text is written once connected; with ``expect``, the
    reply must contain that text before the server closes or ``timeout``
    runs out.  The state is ``critical``, with the reason in the
    description, when the connection is refused or times out, or the reply
    does not match.  ``{service}.reply``, with ``expect``: milliseconds from
    the connection to the matching reply.
    """

    sync = True
    options = (
        Option("host", "string", None, "host to connect to (default: the source's hostname)"),
        Option("port", "integer", REQUIRED, "TCP port to connect to", minimum=1),
        Option("send", "string", None, "text to send once connected"),
        Option("expect", "string", None, "text the reply must contain"),
        Option("timeout", "number", 10.0, "seconds to connect and get the reply", above=0),
    )

    async def get(self) -> list[Event]:
        host = self.config["host"] or self.hostname
        port, timeout = self.config["port"], float(self.config["timeout"])
        send, expect = (None if v is None else v.encode("utf-8")
                        for v in (self.config["send"], self.config["expect"]))  # fmt: skip
        where = f"{host}:{port}"
        reactor = self.duct.reactor
        started = self.clock.seconds()
        protocol = _Exchange(send, expect)
        endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)

        def timedOut(result: object, seconds: float) -> Any:
            raise Timeout(f"timed out after {seconds:g}s")

        try:
            connecting = endpoint.connect(Factory.forProtocol(lambda: protocol))
            await connecting.addTimeout(timeout, self.clock, onTimeoutCancel=timedOut)
        except Exception:
            elapsed = (self.clock.seconds() - started) * 1000
            reason = failureReason(Failure())
            return [self.createEvent("critical", f"{where}: {reason}", elapsed, "latency")]
        connected = self.clock.seconds()
        latency = (connected - started) * 1000
        if expect is None:
            return [self.createEvent("ok", f"{where}: connected in {latency:.0f} ms", latency,
                                     "latency")]  # fmt: skip
        left = max(timeout - (connected - started), 0.001)
        try:
            reply = await protocol.replied.addTimeout(left, self.clock, onTimeoutCancel=timedOut)
        except Timeout as e:
            reply, why = protocol.received, f"no reply containing {expect!r}: {e}"
        else:
            why = "" if expect in reply else f"the reply does not contain {expect!r}"
        waited = (self.clock.seconds() - connected) * 1000
        if why:
            why += f" (got {reply[:80]!r})"
            return [self.createEvent("critical", f"{where}: {why}", latency, "latency"),
                    self.createEvent("critical", f"{where}: {why}", waited, "reply")]  # fmt: skip
        return [self.createEvent("ok", f"{where}: connected in {latency:.0f} ms", latency,
                                 "latency"),
                self.createEvent("ok", f"{where}: reply in {waited:.0f} ms", waited,
                                 "reply")]  # fmt: skip
