"""Tests for duct.utils: fork, PersistentCache and the HTTP helpers."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest
import pytest_twisted
from twisted.internet import tcp
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from duct.utils import (
    BadJSON,
    HTTPError,
    PersistentCache,
    ProcessTimeout,
    Timeout,
    fork,
    getBody,
    getJson,
)

# -- helpers -------------------------------------------------------------------


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Captured:
    """Log events at or above warning, while in a ``with`` block."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.events.append(event)

    def __enter__(self) -> Captured:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


# -- fork ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fork_output_and_exit_code(reactor: Any) -> None:
    stdout, stderr, code = await fork(
        "/bin/sh", ["-c", "echo out; echo err >&2; exit 3"], reactor=reactor
    )
    assert (stdout, stderr, code) == ("out\n", "err\n", 3)


@pytest_twisted.ensureDeferred
async def test_fork_success_and_signal(reactor: Any) -> None:
    assert await fork("/bin/sh", ["-c", "true"], reactor=reactor) == ("", "", 0)
    _, _, code = await fork("/bin/sh", ["-c", "kill -9 $$"], reactor=reactor)
    assert code == -9


@pytest_twisted.ensureDeferred
async def test_fork_decodes_invalid_utf8(reactor: Any) -> None:
    stdout, _, _ = await fork("/bin/sh", ["-c", r"printf 'a\377b'"], reactor=reactor)
    assert stdout == "a\ufffdb"


@pytest_twisted.ensureDeferred
async def test_fork_env_and_path(reactor: Any, tmp_path: Any) -> None:
    script = 'echo "$FOO"; echo "${HOME-unset}"; pwd -P'
    stdout, _, code = await fork(
        "/bin/sh", ["-c", script], env={"FOO": "bar baz"}, path=str(tmp_path), reactor=reactor
    )
    assert code == 0
    assert stdout.splitlines() == ["bar baz", "unset", os.path.realpath(tmp_path)]


@pytest_twisted.ensureDeferred
async def test_fork_default_env_is_empty_and_not_shared(reactor: Any) -> None:
    first, _, _ = await fork("/bin/sh", ["-c", 'echo "${FOO-unset}"'], reactor=reactor)
    await fork("/bin/sh", ["-c", "true"], env={"FOO": "x"}, reactor=reactor)
    second, _, _ = await fork("/bin/sh", ["-c", 'echo "${FOO-unset}"'], reactor=reactor)
    assert first == second == "unset\n"


@pytest_twisted.ensureDeferred
async def test_fork_without_reactor_uses_the_global_one() -> None:
    assert await fork("/bin/echo", ["hello"]) == ("hello\n", "", 0)


@pytest_twisted.ensureDeferred
async def test_fork_timeout_kills_the_process_and_its_children(reactor: Any) -> None:
    # The shell prints its pid and its child's, then waits on the child.
    script = "echo $$; sleep 30 & echo $!; wait"
    started = time.monotonic()
    with Captured() as log, pytest.raises(Timeout) as caught:
        await fork("/bin/sh", ["-c", script], timeout=0.3, reactor=reactor)
    assert time.monotonic() - started < 10
    assert isinstance(caught.value, ProcessTimeout)
    shell, sleeper = (int(line) for line in caught.value.stdout.split())
    # The shell was reaped before the Deferred fired.
    with pytest.raises(ProcessLookupError):
        os.kill(shell, 0)
    assert not running(sleeper)
    assert any("killing" in event["log_format"] for event in log.events)


@pytest_twisted.ensureDeferred
async def test_fork_timeout_fires_even_if_a_descendant_escapes(reactor: Any) -> None:
    # The subshell exits at once, so its sleep is re-parented: the kill cannot
    # find it, yet it holds our stdout open.
    script = "(sleep 30 & echo $!); sleep 30"
    started = time.monotonic()
    with Captured(), pytest.raises(ProcessTimeout) as caught:
        await fork("/bin/sh", ["-c", script], timeout=0.3, reactor=reactor)
    escaped = int(caught.value.stdout.split()[0])
    try:
        assert time.monotonic() - started < 10
    finally:
        os.kill(escaped, signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_fork_timeout_is_cancelled_when_the_process_ends(reactor: Any) -> None:
    before = len(reactor.getDelayedCalls())
    assert await fork("/bin/sh", ["-c", "exit 0"], timeout=60, reactor=reactor) == ("", "", 0)
    assert len(reactor.getDelayedCalls()) <= before


@pytest_twisted.ensureDeferred
async def test_fork_cancel_kills_the_process(reactor: Any) -> None:
    before = {p.pid for p in psutil.Process().children()}
    d = fork("/bin/sh", ["-c", "exec sleep 30"], reactor=reactor)
    [pid] = {p.pid for p in psutil.Process().children()} - before
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    # SIGKILL was sent at once; give the reactor a moment to reap the child.
    for _ in range(500):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await deferLater(reactor, 0.01)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest_twisted.ensureDeferred
async def test_fork_missing_executable_fails(reactor: Any) -> None:
    with pytest.raises(FileNotFoundError):
        await fork("/nonexistent/program", reactor=reactor)


def deferLater(reactor: Any, seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as _deferLater

    return _deferLater(reactor, seconds, lambda: None)


# -- PersistentCache ---------------------------------------------------------


def test_cache_set_get_contains_delete(tmp_path: Any, clock: Clock) -> None:
    cache = PersistentCache(str(tmp_path / "cache"), clock=clock)
    assert not cache.contains("a")
    with pytest.raises(KeyError):
        cache.get("a")
    clock.advance(100)
    cache.set("a", {"n": 1})
    assert cache.contains("a")
    assert cache.get("a") == (100.0, {"n": 1})
    clock.advance(5)
    cache.set("a", [2])
    assert cache.get("a") == (105.0, [2])
    cache.delete("a")
    assert not cache.contains("a")
    with pytest.raises(KeyError):
        cache.delete("a")


def test_cache_expire(tmp_path: Any, clock: Clock) -> None:
    path = str(tmp_path / "cache")
    cache = PersistentCache(path, clock=clock)
    cache.set("old", 1)
    clock.advance(50)
    cache.set("new", 2)
    clock.advance(20)
    cache.expire(60)  # "old" is 70s old, "new" 20s
    assert not cache.contains("old")
    assert cache.get("new") == (50.0, 2)
    assert not PersistentCache(path, clock=clock).contains("old")


def test_cache_uses_time_without_clock(tmp_path: Any) -> None:
    cache = PersistentCache(str(tmp_path / "cache"))
    before = time.time()
    cache.set("k", "v")
    stamp, value = cache.get("k")
    assert before <= stamp <= time.time() and value == "v"


def test_cache_survives_a_new_instance(tmp_path: Any, clock: Clock) -> None:
    path = str(tmp_path / "sub" / "dir" / "cache")  # the parent is created
    clock.advance(7)
    PersistentCache(path, clock=clock).set("k", {"list": [1, 2], "s": "é"})
    again = PersistentCache(path, clock=clock)
    assert again.get("k") == (7.0, {"list": [1, 2], "s": "é"})


def test_cache_instances_sharing_a_path_see_each_other(tmp_path: Any, clock: Clock) -> None:
    path = str(tmp_path / "cache")
    first = PersistentCache(path, clock=clock)
    second = PersistentCache(path, clock=clock)
    first.set("a", 1)
    second.set("b", 2)
    assert first.contains("b") and second.contains("a")


def test_cache_file_is_json_replaced_atomically(tmp_path: Any, clock: Clock) -> None:
    path = tmp_path / "cache"
    cache = PersistentCache(str(path), clock=clock)
    cache.set("a", 1)
    inode = path.stat().st_ino
    cache.set("b", "two")
    # A new file took the old one's place, and no temporary file remains.
    assert path.stat().st_ino != inode
    assert os.listdir(tmp_path) == ["cache"]
    data = json.loads(path.read_text())
    assert data["entries"] == {"a": [0.0, 1], "b": [0.0, "two"]}


def test_cache_rejects_bad_keys_and_values(tmp_path: Any, clock: Clock) -> None:
    path = tmp_path / "cache"
    cache = PersistentCache(str(path), clock=clock)
    cache.set("a", 1)
    with pytest.raises(TypeError):
        cache.set(1, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cache.set("b", object())
    # Nothing changed, in memory or on disk.
    assert not cache.contains("b")
    assert list(json.loads(path.read_text())["entries"]) == ["a"]
    assert os.listdir(tmp_path) == ["cache"]


@pytest.mark.parametrize(
    "content",
    [b"\x80\x81garbage\xff", b"{not json", b"[1, 2]", b'{"entries": {"k": "no stamp"}}'],
)
def test_cache_corrupt_file_is_logged_once_and_ignored(
    tmp_path: Any, clock: Clock, content: bytes
) -> None:
    path = tmp_path / "cache"
    path.write_bytes(content)
    with Captured() as log:
        cache = PersistentCache(str(path), clock=clock)
        assert not cache.contains("k")
        assert not cache.contains("k")  # the same bad file is not reported again
    assert len(log.events) == 1
    assert log.events[0]["log_level"] == LogLevel.warn
    assert log.events[0]["path"] == str(path)
    # The cache keeps working and repairs the file.
    cache.set("k", "v")
    assert cache.get("k") == (0.0, "v")
    assert PersistentCache(str(path), clock=clock).get("k") == (0.0, "v")


def test_cache_unwritable_location_keeps_working_in_memory(tmp_path: Any, clock: Clock) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = str(blocker / "cache")  # its parent is a file: cannot be created
    with Captured() as log:
        cache = PersistentCache(path, clock=clock)
        cache.set("a", 1)
        cache.set("b", 2)
    assert cache.get("a") == (0.0, 1) and cache.get("b") == (0.0, 2)
    assert len(log.events) == 1 and log.events[0]["path"] == path


# -- HTTP ------------------------------------------------------------------------


class TrackingSite(Site):
    """A Site that remembers its open connections, so a test can close them."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.connections: dict[Any, Deferred[None]] = {}  # transport: closed

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        assert proto is not None
        made, lost = proto.makeConnection, proto.connectionLost
        closed: Deferred[None] = Deferred()
        transports: list[Any] = []

        def makeConnection(transport: Any) -> None:
            transports.append(transport)
            self.connections[transport] = closed
            made(transport)

        def connectionLost(reason: Any) -> None:
            try:
                lost(reason)
            finally:
                for transport in transports:
                    self.connections.pop(transport, None)
                closed.callback(None)

        proto.makeConnection = makeConnection
        proto.connectionLost = connectionLost
        return proto


class Leaf(Resource):
    isLeaf = True

    def __init__(self, render: Any) -> None:
        super().__init__()
        self.render = render  # type: ignore[method-assign]


def respond(code: int, body: bytes, contentType: bytes = b"application/json") -> Leaf:
    def render(request: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", contentType)
        return body

    return Leaf(render)


class Server:
    def __init__(self, reactor: Any) -> None:
        self.root = Resource()
        self.received: list[tuple[bytes, bytes | None, bytes]] = []
        self.site = TrackingSite(self.root)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.portNumber: int = self.port.getHost().port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.portNumber}/{path}"

    def clients(self, reactor: Any) -> list[Any]:
        """Client connections to this server still known to the reactor."""
        port = self.portNumber
        selectables = reactor.getReaders() + reactor.getWriters()
        return [s for s in selectables if isinstance(s, tcp.Client) and s.addr[1] == port]

    def add(self, name: str, resource: Resource) -> None:
        self.root.putChild(name.encode(), resource)


@pytest_twisted.async_yield_fixture
async def server(reactor: Any) -> AsyncIterator[Server]:
    srv = Server(reactor)

    def echo(request: Any) -> bytes:
        body = request.content.read()
        srv.received.append((request.method, request.getHeader(b"content-type"), body))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"method": request.method.decode(), "body": body.decode()}).encode()

    def hang(request: Any) -> Any:
        return NOT_DONE_YET

    def stall(request: Any) -> Any:
        request.setHeader(b"content-length", b"100")
        request.write(b"partial")
        return NOT_DONE_YET

    srv.add("ok", respond(200, b'{"a": [1, 2], "b": "\xc3\xa9"}'))
    srv.add("missing", respond(404, b"no such thing " * 50, b"text/plain"))
    srv.add("broken", respond(500, b"oops", b"text/plain"))
    srv.add("html", respond(200, b"<html>not json</html>", b"text/html"))
    srv.add("echo", Leaf(echo))
    srv.add("hang", Leaf(hang))
    srv.add("stall", Leaf(stall))
    try:
        yield srv
    finally:
        await srv.port.stopListening()
        for transport in list(srv.site.connections):
            transport.abortConnection()
        await DeferredList(list(srv.site.connections.values()))
        # Let the client ends finish closing too, so nothing outlives the test.
        for _ in range(100):
            if not srv.clients(reactor):
                break
            await deferLater(reactor, 0)
        assert not srv.clients(reactor)


@pytest_twisted.ensureDeferred
async def test_getJson_parses_a_200(server: Server, reactor: Any) -> None:
    assert await getJson(server.url("ok"), reactor=reactor) == {"a": [1, 2], "b": "é"}


@pytest_twisted.ensureDeferred
async def test_getBody_returns_bytes_without_reactor(server: Server) -> None:
    body = await getBody(server.url("ok"))
    assert body == b'{"a": [1, 2], "b": "\xc3\xa9"}'


@pytest_twisted.ensureDeferred
async def test_getBody_404_raises_HTTPError(server: Server, reactor: Any) -> None:
    url = server.url("missing")
    with pytest.raises(HTTPError) as caught:
        await getBody(url, reactor=reactor)
    error = caught.value
    assert error.code == 404 and error.url == url
    assert len(error.body) == 200 and error.body.startswith("no such thing")
    assert str(error).startswith(f"GET {url} returned 404: no such thing")


@pytest_twisted.ensureDeferred
async def test_getJson_500_raises_HTTPError(server: Server, reactor: Any) -> None:
    with pytest.raises(HTTPError) as caught:
        await getJson(server.url("broken"), reactor=reactor)
    assert caught.value.code == 500 and caught.value.body == "oops"


@pytest_twisted.ensureDeferred
async def test_getJson_non_json_raises(server: Server, reactor: Any) -> None:
    url = server.url("html")
    with pytest.raises(BadJSON) as caught:
        await getJson(url, reactor=reactor)
    assert isinstance(caught.value, ValueError)
    assert url in str(caught.value) and "<html>" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_post_dict_arrives_as_json(server: Server, reactor: Any) -> None:
    answer = await getJson(
        server.url("echo"), method="POST", data={"x": [1, "two"]}, reactor=reactor
    )
    assert answer["method"] == "POST"
    [(method, contentType, body)] = server.received
    assert method == b"POST"
    assert contentType is not None and contentType.startswith(b"application/json")
    assert json.loads(body) == {"x": [1, "two"]}


@pytest_twisted.ensureDeferred
async def test_post_bytes_and_headers(server: Server, reactor: Any) -> None:
    await getBody(
        server.url("echo"),
        method="PUT",
        headers={"Content-Type": "text/plain"},
        data=b"raw body",
        reactor=reactor,
    )
    assert server.received == [(b"PUT", b"text/plain", b"raw body")]


@pytest_twisted.ensureDeferred
async def test_no_answer_times_out(server: Server, reactor: Any) -> None:
    url = server.url("hang")
    started = time.monotonic()
    with pytest.raises(Timeout) as caught:
        await getJson(url, timeout=0.3, reactor=reactor)
    assert time.monotonic() - started < 5
    assert url in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_no_answer_times_out_without_reactor(server: Server) -> None:
    url = server.url("hang")
    with pytest.raises(Timeout) as caught:
        await getBody(url, timeout=0.3)
    assert url in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_stalled_body_times_out_and_drops_the_connection(
    server: Server, reactor: Any
) -> None:
    with pytest.raises(Timeout):
        await getBody(server.url("stall"), timeout=0.3, reactor=reactor)
    # The client closed its end: the server sees the connection go.
    await DeferredList(list(server.site.connections.values()))
    assert not server.site.connections


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_not_a_timeout(reactor: Any) -> None:
    port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/"
    await port.stopListening()
    with pytest.raises(Exception) as caught:
        await getBody(url, timeout=5, reactor=reactor)
    assert not isinstance(caught.value, Timeout)
