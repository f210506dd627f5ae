"""HAProxy: frontends, backends and servers, from its stats CSV over HTTP or its socket."""

from __future__ import annotations

import csv
from typing import Any

from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from duct.aggregators import Counter
from duct.lib.http import HTTP_CLIENT_OPTIONS
from duct.objects import Event, Source
from duct.options import Option

ROWS = (  # (CSV column, service, description, rate?), as the original duct names them
    ("scur", "sessions", "Sessions", False),
    ("stot", "session_rate", "Session rate", True),
    ("ereq", "errors_req", "Request errors", True),
    ("econ", "errors_con", "Backend connection errors", True),
    ("eresp", "errors_resp", "Response errors", True),
    ("wretr", "retries", "Retries", True),
    ("wredis", "switches", "Switches", True),
    ("bin", "bytes_in", "Bytes in", True),
    ("bout", "bytes_out", "Bytes out", True),
    ("hrsp_1xx", "code_1xx", "1xx codes", True),
    ("hrsp_2xx", "code_2xx", "2xx codes", True),
    ("hrsp_3xx", "code_3xx", "3xx codes", True),
    ("hrsp_4xx", "code_4xx", "4xx codes", True),
    ("hrsp_5xx", "code_5xx", "5xx codes", True),
)
MAX_ANSWER = 16 * 1024 * 1024


class _Answer(Protocol):
    """Sends ``show stat`` on the stats socket and collects the answer until it closes."""

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.chunks: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(b"show stat\n")

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_ANSWER:
            transport: Any = self.transport
            transport.loseConnection()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(b"".join(self.chunks))


class HAProxy(Source):
    """Frontends, backends and servers from HAProxy's stats CSV at ``url``, or its ``socket``.

    For each row, ``{service}.frontends.<proxy>.``, ``.backends.<proxy>.``
    or ``.nodes.<proxy>.<server>.`` then ``sessions`` (now) and, per second,
    ``session_rate``, ``errors_req``, ``errors_con``, ``errors_resp``,
    ``retries``, ``switches``, ``bytes_in`` and ``bytes_out`` (bits), and
    ``code_1xx`` to ``code_5xx``.  A backend has ``active``, its servers
    up, critical at 0; a server has ``checks_failed`` and ``up`` (1, or 0
    and critical when its status is DOWN).  ``{service}.state`` is critical
    when the stats cannot be read within ``timeout``.
    """

    sync = True
    options = (
        Option("url", "string", "http://localhost/haproxy?stats;csv", "URL of the stats CSV"),
        Option("socket", "string", None, "path of the stats socket, read instead of url"),
        *HTTP_CLIENT_OPTIONS,
    )

    async def get(self) -> list[Event]:
        try:
            text = (await self.fetch()).decode("utf-8", "replace")
        except Exception as e:
            return [self.createEvent("critical", f"Connection failed: {e}", 0, "state")]
        rows = list(csv.DictReader(text.lstrip("# ").splitlines()))
        if not rows or "svname" not in rows[0]:
            return [self.createEvent("critical", f"not HAProxy stats: {text[:60]!r}", 0, "state")]
        events = [self.createEvent("ok", "Connection ok", 1, "state")]
        for row in rows:
            events += self.rowEvents(row)
        return events

    async def fetch(self) -> bytes:
        if not self.config["socket"]:
            body: bytes = await self.http.getBody(self.config["url"])
            return body
        endpoint = UNIXClientEndpoint(self.duct.reactor, self.config["socket"])
        timeout = self.config["timeout"] or 10.0
        answer = _Answer()
        connecting = connectProtocol(endpoint, answer)
        connecting.addTimeout(timeout, self.clock)
        protocol = await connecting
        answer.done.addTimeout(timeout, self.clock, onTimeoutCancel=self._hangUp(protocol))
        return await answer.done

    @staticmethod
    def _hangUp(protocol: Any) -> Any:
        def cancelled(result: Any, timeout: float) -> bytes:
            protocol.transport.abortConnection()
            raise TimeoutError(f"no answer from the stats socket in {timeout:g}s")

        return cancelled

    def rowEvents(self, row: dict[str, str]) -> list[Event]:
        proxy, server = row.get("pxname") or "", row.get("svname") or ""
        events: list[Event | None] = []
        if server == "BACKEND":
            prefix = f"backends.{proxy}"
            active = _int(row.get("act"))
            if active is not None:
                state = "ok" if active > 0 else "critical"
                events.append(self.createEvent(state, f"Active servers: {active}", active,
                                               f"{prefix}.active"))  # fmt: skip
        elif server == "FRONTEND":
            prefix = f"frontends.{proxy}"
        else:
            prefix = f"nodes.{proxy}.{server}"
            events.append(self._ev(row, "chkfail", "Check failures", f"{prefix}.checks_failed"))
            status = row.get("status") or ""
            if status:
                down = status.startswith("DOWN")
                events.append(self.createEvent("critical" if down else "ok", f"Status: {status}",
                                               0 if down else 1, f"{prefix}.up"))  # fmt: skip
        for column, name, description, rate in ROWS:
            scale = 8 if column in ("bin", "bout") else 1
            events.append(self._ev(row, column, description, f"{prefix}.{name}", rate, scale))
        return [e for e in events if e is not None]

    def _ev(self, row: dict[str, str], column: str, description: str, prefix: str,
            rate: bool = True, scale: int = 1) -> Event | None:  # fmt: skip
        value = _int(row.get(column))
        if value is None:
            return None
        value *= scale
        return self.createEvent("ok", f"{description}: {value}", value, prefix,
                                aggregation=Counter if rate else None)  # fmt: skip


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
