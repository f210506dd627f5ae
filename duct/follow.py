"""``duct tail``: follow an agent's /events stream and print one line per event.

The stream is read as JSON lines.  After a dropped connection `Tail`
reconnects with ``since=`` the last number it saw, after a short backoff,
so nothing is printed twice and nothing is skipped unless the agent's ring
no longer holds it, which the stream reports as a gap and this prints to
stderr.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.internet import protocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

DEFAULT_URL = "http://127.0.0.1:8901/events"
MAX_LINE = 16 * 1024 * 1024
IDLE_TIMEOUT = 45.0
"""Seconds without a byte (the agent sends a heartbeat every 15) before reconnecting."""


class _Lines(protocol.Protocol):
    """Splits a response body into lines; ``done`` fires with the reason it ended."""

    def __init__(self, onLines: Callable[[list[bytes]], None], onData: Callable[[], None]) -> None:
        self.onLines = onLines
        self.onData = onData
        self.buffer = b""
        self.reason: Failure | None = None
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.onData()
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        if len(self.buffer) > MAX_LINE:
            self.buffer = b""
            self.stop()
            return
        if lines:
            self.onLines(lines)

    def stop(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.stopProducing()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.done.called:
            self.reason = reason
            self.done.callback(None)


def describe(event: dict[str, Any]) -> str:
    """One readable line: number, time, host, service, state, metric, description."""
    when = event.get("time")
    try:
        stamp = datetime.datetime.fromtimestamp(float(when)).isoformat(" ", "milliseconds")  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        stamp = "-"
    metric = event.get("metric")
    shown = "-" if metric is None else f"{metric:g}" if isinstance(metric, float) else str(metric)
    parts = [
        f"#{event.get('seq')}",
        stamp,
        str(event.get("host")),
        str(event.get("service")),
        str(event.get("state") or "-"),
        shown,
    ]
    if event.get("description"):
        parts.append(str(event["description"]).replace("\n", " "))
    return " ".join(parts)


class Tail:
    """Follows one /events URL until `stop`; `run` returns the exit status.

    :param since: print the events after this number (default: new ones only).
    :param recent: or start with the last ``recent`` events that match.
    :param raw: print each event's JSON as received instead of `describe`.
    :param service: a regex the service must match, and ``description`` one
        for the description: the agent runs them, and answers 400 with the
        reason (printed, exit status 2) for one it refuses.
    """

    def __init__(
        self,
        reactor: Any,
        url: str = DEFAULT_URL,
        since: int | None = None,
        recent: int | None = None,
        service: str | None = None,
        host: str | None = None,
        state: str | None = None,
        token: str | None = None,
        description: str | None = None,
        raw: bool = False,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        backoff: tuple[float, float] = (0.2, 5.0),
        idleTimeout: float = IDLE_TIMEOUT,
    ) -> None:
        import treq.client

        self.reactor = reactor
        self.url = url
        self.since = since
        self.recent = recent
        self.filters = {
            "service": service,
            "host": host,
            "state": state,
            "description": description,
        }
        self.headers: dict[bytes | str, bytes | str] = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.raw = raw
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.backoff = backoff
        self.idleTimeout = idleTimeout
        self.last: int | None = None
        """The number of the last event printed (or skipped by a gap)."""
        self.printed = 0
        self.reconnections = 0
        self.stopped = False
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent: Any = Agent(reactor, pool=pool)  # an IAgent; mypy does not see zope interfaces
        self.http = treq.client.HTTPClient(agent)
        self._lines: _Lines | None = None
        self._waiting: Deferred[Any] | None = None
        self._idleCall: Any = None

    def stop(self) -> None:
        """Stop following; `run` then returns 0."""
        self.stopped = True
        if self._lines is not None:
            self._lines.stop()
        if self._waiting is not None:
            self._waiting.cancel()

    def _params(self) -> dict[str, str]:
        params = {"format": "jsonl"}
        params.update({k: v for k, v in self.filters.items() if v is not None})
        if self.last is not None:
            params["since"] = str(self.last)
        elif self.since is not None:
            params["since"] = str(self.since)
        elif self.recent is not None:
            params["recent"] = str(self.recent)
        return params

    def _note(self, message: str) -> None:
        self.err.write(f"duct tail: {message}\n")
        self.err.flush()

    async def run(self) -> int:
        delay = self.backoff[0]
        while not self.stopped:
            try:
                self._waiting = self.http.get(
                    self.url, params=self._params(), headers=self.headers, unbuffered=True
                )
                response = await self._waiting
            except CancelledError:
                break
            except Exception as e:
                why = f"cannot connect to {self.url} ({e.__class__.__name__}: {e})"
            else:
                if response.code != 200:
                    body = _errorText((await response.text()).strip())
                    why = f"{self.url} answered {response.code}: {body}"
                    if 400 <= response.code < 500:
                        self._note(why)
                        return 2 if response.code == 400 else 1
                else:
                    delay = self.backoff[0]
                    why = await self._follow(response)
            finally:
                self._waiting = None
            if self.stopped:
                break
            self.reconnections += 1
            self._note(f"{why}; reconnecting in {delay:g}s")
            try:
                self._waiting = deferLater(self.reactor, delay, lambda: None)
                await self._waiting
            except CancelledError:
                break
            finally:
                self._waiting = None
            delay = min(delay * 2, self.backoff[1])
        return 0

    async def _follow(self, response: Any) -> str:
        """Print events until the stream ends; return why it ended."""
        lines = self._lines = _Lines(self._received, self._active)
        self._active()
        try:
            response.deliverBody(lines)
            await lines.done
        finally:
            self._lines = None
            if self._idleCall is not None and self._idleCall.active():
                self._idleCall.cancel()
            self._idleCall = None
        reason = lines.reason
        return f"connection lost ({reason.getErrorMessage() if reason else 'closed'})"

    def _active(self) -> None:
        """Data arrived: the connection is alive for another ``idleTimeout``."""
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(self.idleTimeout)
        else:
            self._idleCall = self.reactor.callLater(self.idleTimeout, self._idle)

    def _idle(self) -> None:
        self._note(f"nothing received for {self.idleTimeout:g}s")
        if self._lines is not None:
            self._lines.stop()

    def _received(self, lines: list[bytes]) -> None:
        for line in lines:
            if line.strip():  # an empty line is a heartbeat
                self._line(line)
        try:
            self.out.flush()
        except BrokenPipeError:
            self._readerGone()

    def _line(self, line: bytes) -> None:
        try:
            data = json.loads(line)
        except ValueError:
            self._note(f"ignoring a line that is not JSON: {line[:200]!r}")
            return
        if not isinstance(data, dict):
            return
        seq = data.get("seq")
        if isinstance(seq, int):
            if self.last is not None and seq <= self.last:
                return  # already printed before a reconnection
            self.last = seq
            self._print(line.decode("utf-8", "replace") if self.raw else describe(data))
        elif "since" in data and isinstance(data["since"], int) and len(data) == 1:
            self.last = data["since"]
        elif isinstance(data.get("gap"), dict):
            self._gap(data["gap"])
        elif "error" in data:
            self._note(f"the agent says: {data['error']}")

    def _gap(self, gap: dict[str, Any]) -> None:
        first, since, missed = gap.get("first"), gap.get("since"), gap.get("missed")
        if missed is None:
            self._note(f"the agent has no event {since} (restarted?); resuming at {first}")
        else:
            self._note(
                f"gap: {missed} events after {since} are no longer held; resuming at {first}"
            )
        if isinstance(first, int):
            self.last = first - 1

    def _print(self, text: str) -> None:
        if self.stopped:
            return
        try:
            self.out.write(text + "\n")
        except BrokenPipeError:
            self._readerGone()
            return
        self.printed += 1

    def _readerGone(self) -> None:
        """Whatever read our output (``| head``) has exited: stop quietly."""
        self.stop()
        if self.out is sys.stdout:
            # Python flushes stdout again at exit; let that go nowhere.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def _errorText(body: str) -> str:
    """The ``error`` of a JSON error answer, or the body as it came."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, str) else body
