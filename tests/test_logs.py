"""Following log files: the follower core, LogFile, and nginx's access log sources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from nginxserver import Nginx as NginxServer

from duct.lib.accesslog import AccessLogParser
from duct.lib.cache import PersistentCache
from duct.lib.logfollow import LogFollower
from duct.sources.logs import LogFile
from duct.sources.nginx import NginxLog, NginxLogMetrics
from duct.testing import FakeDuct, SourceHarness, recordingService, waitFor

RECORDED = Path(__file__).parent / "data" / "nginx-access.log"


def test_the_follower_reads_new_lines_and_keeps_its_place_across_restarts(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old\n")
    cache = PersistentCache(str(tmp_path / "cache.json"))
    follower = LogFollower(str(log), cache)
    assert follower.read() == []  # starts at the end
    with log.open("a") as f:
        f.write("one\ntwo\nhalf")
    assert follower.read() == ["one", "two"]
    with log.open("a") as f:
        f.write(" done\n")
    again = LogFollower(str(log), PersistentCache(str(tmp_path / "cache.json")))
    assert again.read() == ["half done"]


def test_the_follower_follows_rotation_and_truncation_and_bounds_each_read(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {n}\n" for n in range(10)))
    follower = LogFollower(str(log), None, maxLines=4, history=True)
    assert follower.read() == [f"line {n}" for n in range(4)] and follower.behind
    assert follower.read() == [f"line {n}" for n in range(4, 8)]
    assert follower.read() == ["line 8", "line 9"] and not follower.behind
    os.rename(log, tmp_path / "app.log.1")
    log.write_text("new file\n")
    assert follower.read() == ["new file"] and follower.rotations == 1
    log.write_text("")
    assert follower.read() == [] and follower.truncations == 1
    log.write_text("after truncation\n")
    assert follower.read() == ["after truncation"]
    small = LogFollower(str(log), None, maxBytes=8, history=True)
    assert small.read() == ["after tr"]  # a line longer than the bound is cut


def test_logfile_matches_lines_parses_json_and_counts(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    harness = SourceHarness(LogFile, {"service": "app", "interval": 5, "file": str(log),
                                      "match": r"ERROR (?P<code>\d+)"})  # fmt: skip
    harness.start()
    log.write_text("INFO fine\nERROR 42 broke\n")
    harness.advance(5)
    [event] = harness.events
    assert (event.type, event.service, event.description) == ("log", "app", "ERROR 42 broke")
    assert event.attributes == {"code": "42", "file": str(log)}

    jlog = tmp_path / "app.jsonl"
    jlog.write_text('{"level": "warn", "n": 3}\nnot json\n[1]\n')
    counted = SourceHarness(LogFile, {"service": "j", "interval": 5, "file": str(jlog),
                                      "json": True, "history": True, "emit": "counter"},
                            pipeline=True)  # fmt: skip
    counted.start()
    with jlog.open("a") as f:
        f.write('{"level": "info"}\n' * 10)
    counted.advance(5)
    assert counted.latest("j.matches").metric == 2.0  # 10 lines in 5 s
    assert counted.latest("j.lines").metric == 2.0
    assert counted.source.invalid == 2
    assert counted.errors == []


def test_a_missing_file_is_critical_until_it_appears(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    harness = SourceHarness(LogFile, {"service": "app", "interval": 5, "file": str(log)})
    harness.start()
    state = harness.latest("app.state")
    assert state.state == "critical" and "No such file" in (state.description or "")
    log.write_text("")
    harness.advance(5)
    assert harness.latest("app.state").state == "ok"
    assert harness.errors == []


def test_the_parser_reads_nginx_and_apache_formats() -> None:
    line = RECORDED.read_text().splitlines()[1]
    for fmt in (
        "combined",
        '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
        '"$http_referer" "$http_user_agent"',
    ):
        fields = AccessLogParser(fmt).parse(line)
        assert fields is not None, fmt
        assert fields["request"] == "GET /a?x=1 HTTP/1.1"
        assert (fields["status"], fields["bytes"], fields["client"]) == (200, 6, "127.0.0.1")
        assert fields["user-agent"] == "duct-recorder/1.0"
        assert fields["referer"] == "http://ref.example/"
        assert fields["time"].isoformat() == "2026-12-01T17:12:03+00:00"
    assert AccessLogParser("common").parse("nonsense") is None


def test_nginx_log_metrics_on_a_recorded_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("")
    config = {"service": "nginx", "interval": 10, "file": str(log)}
    harness = SourceHarness(NginxLogMetrics, config, pipeline=True)
    harness.start()
    log.write_text(RECORDED.read_text() * 5 + "garbage line\n")
    harness.advance(10)
    assert harness.latest("nginx.total_requests").metric == 2.0  # 20 in 10 s
    assert harness.latest("nginx.total_rbytes").metric == (6 + 6 + 97 + 157) * 5 / 10
    assert harness.latest("nginx.status.400.requests").metric == 0.5
    assert harness.latest("nginx.status.200.rbytes").metric == (6 + 6 + 97) * 5 / 10
    assert harness.source.unparsed == 1


def test_nginx_log_events_on_a_recorded_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(RECORDED.read_text())
    harness = SourceHarness(NginxLog, {"service": "web", "file": str(log), "history": True})
    harness.start()
    first, _, _, bad = harness.events
    assert first.type == "log" and first.service == "nginx"
    assert first.attributes is not None and first.attributes["status"] == "200"
    assert first.attributes["logname"] == str(log)
    assert first.time == 1796145123.0
    assert bad.attributes is not None and bad.attributes["request"] == "GARBAGE"


def test_the_position_is_kept_under_state_dir(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(RECORDED.read_text())
    duct = FakeDuct(config={"state_dir": str(tmp_path / "state")})
    config = {"service": "web", "file": str(log), "history": True}
    assert len(SourceHarness(NginxLog, config, duct=duct).poll().result) == 4
    with log.open("a") as f:
        f.write(RECORDED.read_text().splitlines()[0] + "\n")
    assert len(SourceHarness(NginxLog, config, duct=duct).poll().result) == 1
    assert (tmp_path / "state" / "logfollow.json").exists()


@pytest_twisted.ensureDeferred
async def test_duct_follows_a_real_nginx_access_log(
    reactor: Any, nginx: NginxServer, tmp_path: Path
) -> None:
    config = {
        "stagger": 0,
        "state_dir": str(tmp_path),
        "sources": [
            {"source": "duct.sources.nginx.NginxLogMetrics", "service": "weblog",
             "interval": 0.3, "file": str(nginx.root / "access.log")},
            {"source": "duct.sources.nginx.NginxLog", "service": "weblogs",
             "interval": 0.3, "file": str(nginx.root / "access.log")},
        ],
    }  # fmt: skip
    service, output = recordingService(reactor, config)
    service.startService()
    try:

        def rated() -> bool:
            return any(e.service == "weblog.total_requests" for e in output.written)

        await waitFor(reactor, rated, "a first rate", 30)
        for _ in range(7):
            response = await treq.get(f"http://127.0.0.1:{nginx.port}/duct-log-test")
            await response.text()

        def logged() -> list[Any]:
            return [e for e in output.written if e.type == "log"
                    and "/duct-log-test" in (e.description or "")]  # fmt: skip

        await waitFor(reactor, lambda: len(logged()) >= 7, "the log events", 30)
        await waitFor(reactor, lambda: any(
            e.service == "weblog.status.200.requests" and (e.metric or 0) > 0
            for e in output.written), "a request rate", 30)  # fmt: skip
    finally:
        await service.stopService()
    assert logged()[0].attributes["status"] == "200"  # type: ignore[index]
    assert all(s.errors == 0 for s in service.sources)
