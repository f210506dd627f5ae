"""The simple outputs: JSONLines, Logger and Null, driven by a Clock."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from duct.objects import Event, Output
from duct.outputs.file import JSONLines
from duct.outputs.logger import Logger
from duct.outputs.null import Null
from duct.testing import FakeDuct, configure

T0 = 1_700_000_000.123456


def makeOutput(cls: type[Output], **config: Any) -> tuple[Any, Any]:
    duct = FakeDuct()
    return cls(configure(cls, config), duct), duct.clock


def makeEvents(n: int, start: int = 0, **kwargs: Any) -> list[Event]:
    return [
        Event(
            "ok",
            f"svc.{i}",
            f"event {i}",
            float(i) + 0.5,
            60.0,
            tags=["a", "b"],
            hostname="h1.example",
            evtime=T0 + i,
            attributes={"dc": "east"},
            **kwargs,
        )
        for i in range(start, start + n)
    ]


def _rejectConstant(name: str) -> None:
    raise ValueError(f"invalid JSON constant {name}")


def readLines(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file strictly: NaN or Infinity are errors."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line, parse_constant=_rejectConstant) for line in text.splitlines()]


# -- JSONLines -----------------------------------------------------------------


def test_jsonlines_writes_after_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    output, clock = makeOutput(JSONLines, path=str(path), flush_interval=2.0)
    output.eventsReceived(makeEvents(3))

    clock.advance(1.9)
    assert not path.exists()  # opened lazily, on the first write
    clock.advance(0.2)

    lines = readLines(path)
    assert [line["service"] for line in lines] == ["svc.0", "svc.1", "svc.2"]
    first = lines[0]
    assert first["host"] == "h1.example"
    assert first["metric"] == 0.5
    assert first["state"] == "ok"
    assert first["tags"] == ["a", "b"]
    assert first["attributes"] == {"dc": "east"}
    assert first["description"] == "event 0"
    assert first["time"] == T0  # microseconds survive
    assert first["type"] == "metric"
    assert output.sent == 3
    assert output.buffer.depth == 0


def test_jsonlines_nan_and_infinity_become_null(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    output, clock = makeOutput(JSONLines, path=str(path))
    events = makeEvents(3)
    events[1].metric = float("nan")
    events[2].metric = float("inf")
    events[2].ttl = float("-inf")
    output.eventsReceived(events)
    clock.advance(1.0)

    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    lines = readLines(path)
    assert [line["metric"] for line in lines] == [0.5, None, None]
    assert lines[2]["ttl"] is None
    assert lines[1]["service"] == "svc.1"
    # The event itself is untouched.
    assert math.isnan(events[1].metric)


def test_jsonlines_full_batch_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    output, clock = makeOutput(JSONLines, path=str(path), batch_size=4, flush_interval=60.0)
    output.eventsReceived(makeEvents(3))
    clock.advance(0)
    assert not path.exists()

    output.eventsReceived(makeEvents(1, start=3))
    clock.advance(0)  # no waiting for flush_interval
    assert [line["service"] for line in readLines(path)] == [f"svc.{i}" for i in range(4)]
    assert output.sent == 4


def test_jsonlines_reopen_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rotated = tmp_path / "events.jsonl.1"
    output, clock = makeOutput(JSONLines, path=str(path))

    output.eventsReceived(makeEvents(2))
    clock.advance(1.0)
    path.rename(rotated)

    # Until reopen, the open file (now the rotated one) keeps receiving.
    output.eventsReceived(makeEvents(1, start=2))
    clock.advance(1.0)
    assert not path.exists()

    output.reopen()
    output.eventsReceived(makeEvents(2, start=3))
    clock.advance(1.0)

    assert [line["service"] for line in readLines(rotated)] == ["svc.0", "svc.1", "svc.2"]
    assert [line["service"] for line in readLines(path)] == ["svc.3", "svc.4"]
    output.stop()


def test_jsonlines_loses_nothing_while_directory_is_missing(
    tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    def failures() -> list[Any]:
        found = [e["failure"] for e in logged if "failure" in e]
        logged.clear()
        return found

    directory = tmp_path / "logs"
    path = directory / "events.jsonl"
    output, clock = makeOutput(
        JSONLines, path=str(path), batch_size=2, retry_initial=0.5, retry_max=4.0
    )
    output.eventsReceived(makeEvents(5))

    clock.advance(0)  # a full batch is waiting: first attempt now
    errors = failures()
    assert len(errors) == 1
    assert errors[0].check(FileNotFoundError)
    assert output.buffer.depth == 5
    assert output.sent == 0

    clock.advance(0.5)  # first retry, fails too; the next waits 1s
    errors = failures()
    assert len(errors) == 1
    assert errors[0].check(FileNotFoundError)
    assert output.buffer.depth == 5
    assert output.failures == 2

    directory.mkdir()
    clock.advance(1.0)  # the retry writes the full batches at once
    clock.advance(output.flushInterval)  # and the last, partial one after flush_interval

    assert failures() == []
    services = [line["service"] for line in readLines(path)]
    assert services == [f"svc.{i}" for i in range(5)]
    assert output.sent == 5
    assert output.buffer.depth == 0
    output.stop()


def test_jsonlines_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    output, clock = makeOutput(JSONLines)
    assert output.path == "-"
    output.eventsReceived(makeEvents(2))
    clock.advance(1.0)

    out = capfd.readouterr().out
    lines = [json.loads(line, parse_constant=_rejectConstant) for line in out.splitlines()]
    assert [line["service"] for line in lines] == ["svc.0", "svc.1"]

    stdout = sys.stdout
    output.reopen()  # nothing to do for stdout
    output.stop()
    assert not stdout.closed
    print("still open")
    assert capfd.readouterr().out == "still open\n"


def test_jsonlines_flush_fires_once_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    output, clock = makeOutput(JSONLines, path=str(path), flush_interval=30.0)
    output.eventsReceived(makeEvents(3))
    done: list[object] = []
    output.flush().addCallback(done.append)
    clock.advance(0)
    assert done == [None]
    assert len(readLines(path)) == 3
    output.stop()


# -- Logger ----------------------------------------------------------------------


def test_logger_logs_structured_fields() -> None:
    logged: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "duct.outputs.logger.Logger":
            logged.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        output, clock = makeOutput(Logger)
        events = makeEvents(2)
        events[1].state = "critical"
        output.eventsReceived(events)
        clock.advance(1.0)
    finally:
        globalLogPublisher.removeObserver(observer)

    assert len(logged) == 2
    first, second = logged
    assert first["log_level"] == LogLevel.info
    assert first["host"] == "h1.example"
    assert first["service"] == "svc.0"
    assert first["state"] == "ok"
    assert first["metric"] == 0.5
    assert first["description"] == "event 0"
    assert second["state"] == "critical"
    assert "svc.1" in formatEvent(second)
    assert output.sent == 2


# -- Null --------------------------------------------------------------------------


def test_null_acks_everything() -> None:
    output, clock = makeOutput(Null, batch_size=10)
    output.eventsReceived(makeEvents(25))
    clock.advance(0)
    clock.advance(1.0)
    assert output.sent == 25
    assert output.received == 25
    assert output.buffer.depth == 0
    assert output.failures == 0


# -- options -----------------------------------------------------------------------


def test_options_validate() -> None:
    assert configure(JSONLines, {})["path"] == "-"
    assert configure(JSONLines, {"path": "/tmp/x", "batch_size": 10})["batch_size"] == 10
    with pytest.raises(ValueError, match="path"):
        configure(JSONLines, {"path": 5})
    with pytest.raises(ValueError, match="bogus"):
        configure(Null, {"bogus": 1})
    with pytest.raises(ValueError, match="bogus"):
        configure(Logger, {"bogus": 1})
    assert configure(Null, {"flush_interval": 0.1})["flush_interval"] == 0.1


def test_a_replayed_backlog_is_written_without_a_new_event(tmp_path: Path) -> None:
    """A disk buffer's backlog from the last run is written once the output starts."""
    path = tmp_path / "events.jsonl"
    buffer = {"type": "disk", "path": str(tmp_path / "buffer"), "sync": "always"}
    first, _ = makeOutput(JSONLines, path=str(path), flush_interval=1.0, buffer=buffer)
    first.eventsReceived(makeEvents(5))
    first.stop()  # before the first flush: the five stay on disk

    again, clock = makeOutput(JSONLines, path=str(path), flush_interval=1.0, buffer=buffer)
    assert again.buffer.depth == 5
    again.start()
    clock.advance(1.0)

    assert [line["service"] for line in readLines(path)] == [f"svc.{i}" for i in range(5)]
    assert again.buffer.depth == 0
    again.stop()
