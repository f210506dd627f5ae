"""No single event stalls an output: refused items are isolated, stalls show on /health."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_writer import Pending, build, makeEvents, names, services
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from duct.buffers.disk import DiskBuffer
from duct.buffers.memory import MemoryBuffer
from duct.objects import Event, Output
from duct.output import Refused, Unencodable
from duct.outputs.file import JSONLines
from duct.outputs.store import Store
from duct.testing import FakeDuct, configure
from duct.web.health import HealthResource, health


def bad(event: Event) -> bool:
    return event.description == "bad"


def spoiled(events: list[Event], *indices: int) -> list[Event]:
    for i in indices:
        events[i].description = "bad"
    return events


class Refusing(Output):
    """Confirms every batch at once, unless it holds a bad event: then refuses it whole."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.writes: list[list[str]] = []
        self.delivered: list[str] = []

    def writeBatch(self, events: list[Event]) -> None:
        self.writes.append(services(events))
        if any(bad(event) for event in events):
            raise Refused("a bad event", "the test")
        self.delivered.extend(services(events))


def encode(event: Event) -> str:
    if bad(event):
        raise ValueError(f"cannot encode {event.service}")
    return event.service


class Encoding(Output):
    """Encodes event by event with `encodeEach`, and keeps what it wrote."""

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        self.writes = 0
        self.delivered: list[str] = []

    def writeBatch(self, events: list[Event]) -> None:
        self.writes += 1
        self.delivered.extend(self.encodeEach(events, encode))


def withBuffer(output: Output, kind: str, tmp_path: Path) -> Output:
    """``output`` with a fresh buffer of ``kind``: memory, grouped memory, or disk."""
    if kind == "disk":
        output.buffer = DiskBuffer(output.name, output.clock, str(tmp_path / "buf"), sync="never")
    elif kind == "grouped":
        output.buffer = MemoryBuffer(output.name, output.clock, grouped=True)
    return output


BUFFERS = ("memory", "grouped", "disk")


# -- isolation ------------------------------------------------------------------------


def test_the_file_output_drops_an_event_it_cannot_write_and_writes_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    output, clock = build(JSONLines, path=str(path), batch_size=100, flush_interval=0)
    events = makeEvents(50)
    events[17].attributes = {("not", "text"): "x"}  # JSON has no such key: eventLines fails
    events[30].metric = math.nan  # NaN is written as null, not refused
    output.eventsReceived(events)
    output.eventsReceived(makeEvents(5, start=50))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["service"] for line in lines] == names(0, 17) + names(18, 55)
    assert lines[29]["metric"] is None
    assert output.buffer.drops == {"rejected": 1} and output.eventsRejected == 1
    assert output.failures == 0 and output.rejected == 1
    assert output.buffer.depth == 0 and output.buffer.nbytes == 0
    output.stop()


@pytest.mark.parametrize("kind", BUFFERS)
def test_an_unencodable_event_among_many_costs_one_more_write(kind: str, tmp_path: Path) -> None:
    output, clock = build(Encoding, batch_size=100, flush_interval=0)
    withBuffer(output, kind, tmp_path)
    output.eventsReceived(spoiled(makeEvents(100), 42))
    assert output.writes == 2  # the batch, then the rest of it: no bisection, no backoff
    assert output.delivered == names(0, 42) + names(43, 100)
    output.eventsReceived(makeEvents(10, start=100))
    assert output.delivered[-10:] == names(100, 110)
    assert output.buffer.drops["rejected"] == 1 and output.sent == 109
    assert output.buffer.depth == 0 and output.buffer.nbytes == 0
    assert output.buffer.inFlightEvents == 0 and output.buffer.inFlightBytes == 0
    output.stop()


@pytest.mark.parametrize("kind", BUFFERS)
def test_bisection_delivers_every_other_event_in_order_in_few_writes(
    kind: str, tmp_path: Path
) -> None:
    n, spoilt = 256, (3, 100, 101, 250)
    output, clock = build(Refusing, batch_size=n, flush_interval=0, maxsize=10_000)
    withBuffer(output, kind, tmp_path)
    output.eventsReceived(spoiled(makeEvents(n), *spoilt))
    good = [i for i in range(n) if i not in spoilt]
    assert output.delivered == [f"svc.{i}" for i in good]
    # Each bad event is found in at most two writes per halving.
    assert len(output.writes) <= 1 + 2 * len(spoilt) * math.log2(n)
    assert output.buffer.drops["rejected"] == len(spoilt) == output.eventsRejected
    assert output.buffer.depth == 0 and output.buffer.nbytes == 0
    waits = [call for call in clock.getDelayedCalls() if "syncNow" not in repr(call)]
    assert waits == []  # nothing waited for a backoff
    output.stop()


def test_the_items_named_by_a_refusal_are_dropped_and_the_rest_written_at_once() -> None:
    output, clock = build(Pending, batch_size=6, flush_interval=0, max_in_flight=1)
    output.eventsReceived(makeEvents(8))
    output.fail(0, Refused("no", "the test", items=[1, 4, 99]))  # 99: not in the batch
    assert output.batches()[1:] == [["svc.0", "svc.2", "svc.3", "svc.5"]]
    output.fail(1, Unencodable("still no", items=[0]))  # indices into the batch written
    assert output.batches()[2:] == [["svc.2", "svc.3", "svc.5"]]
    output.ack(2)
    assert output.batches()[3:] == [names(6, 8)]  # newer events only after every piece
    output.ack(3)
    assert output.buffer.drops["rejected"] == 3 and output.sent == 5
    assert output.buffer.depth == 0 and output.buffer.nbytes == 0


def test_a_bad_event_sent_again_and_again_never_holds_good_ones_back() -> None:
    output, clock = build(Pending, batch_size=10, flush_interval=1.0, max_in_flight=1)
    output.maxRetries = 3  # even with retries asked for, a refused event waits aside
    for cycle in range(20):
        output.eventsReceived(spoiled(makeEvents(3, start=3 * cycle), 1))
        clock.advance(1.0)  # one write cycle: the partial batch goes
        while output.calls:  # answer every write as the destination would
            events, d = output.calls.pop(0)
            if any(bad(event) for event in events):
                d.errback(Refused("bad event", "the test"))
            else:
                d.callback(None)
        assert output.sent == 2 * (cycle + 1)  # this cycle's good events are delivered
    clock.advance(60)  # the last refused ones' retries come due, and run out
    while output.calls:
        output.calls.pop(0)[1].errback(Refused("bad event", "the test"))
        clock.advance(60)
    assert output.buffer.depth == 0 and output.buffer.drops["rejected"] == 20


def test_good_events_after_a_bad_one_go_in_the_same_cycle() -> None:
    output, clock = build(Refusing, batch_size=10, flush_interval=1.0)
    for cycle in range(50):
        output.eventsReceived(spoiled(makeEvents(4, start=4 * cycle), 2))
        clock.advance(1.0)  # one write cycle
        assert output.delivered[-3:] == [f"svc.{4 * cycle + i}" for i in (0, 1, 3)]
        assert output.buffer.depth == 0
    assert output.buffer.drops["rejected"] == 50


def test_a_transient_error_is_retried_without_end_and_never_drops() -> None:
    output, clock = build(Pending, batch_size=5, flush_interval=0, retry_initial=0.5, retry_max=8.0)
    output.eventsReceived(makeEvents(5))
    delays = []
    for _ in range(30):
        assert output.batches()[-1] == names(0, 5)  # the same batch, whole, every time
        output.fail(len(output.calls) - 1, ConnectionError("down"))
        (call,) = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
    assert delays[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0] and set(delays[5:]) == {8.0}
    assert output.failures == 30 and not output.buffer.drops and output.buffer.depth == 5
    output.ack(len(output.calls) - 1)
    assert output.sent == 5 and output.buffer.depth == 0


@pytest.mark.parametrize("kind", BUFFERS)
def test_a_dropped_connection_during_isolation_requeues_everything_in_order(
    kind: str, tmp_path: Path
) -> None:
    output, clock = build(
        Pending, batch_size=4, flush_interval=0, max_in_flight=2, retry_initial=1.0
    )
    withBuffer(output, kind, tmp_path)
    output.maxRetries = 1
    output.eventsReceived(makeEvents(12))
    nbytes = output.buffer.nbytes
    assert output.batches() == [names(0, 4), names(4, 8)]
    output.fail(0, Refused("no"))  # cut in two: [0, 1] is written, [2, 3] waits
    output.fail(2, Refused("no"))  # [0, 1] cut again: [0] is written, [1] waits
    output.fail(3, Refused("no"))  # [0] alone: it waits aside for a retry
    assert output.batches()[4:] == [names(1, 2)]
    output.up = False
    assert len(output.buffer) == 4 and output.requeueInFlight() == 8
    assert services(output.buffer.waiting()) == names(0, 12)
    assert output.buffer.depth == 12 and output.buffer.nbytes == nbytes
    clock.advance(10)  # the cancelled retry writes nothing
    assert len(output.calls) == 5
    output.up = True
    output.resumeWriting()
    assert output.batches()[5:] == [names(0, 4), names(4, 8)]
    for index in (5, 6):
        output.ack(index)
    output.ack(7)
    assert output.buffer.depth == 0 and output.buffer.nbytes == 0 and output.sent == 12


# -- the store -------------------------------------------------------------------------


def test_the_store_drops_an_event_sqlite_cannot_take(tmp_path: Path) -> None:
    store = Store(configure(Store, {"path": str(tmp_path / "s.sqlite")}), FakeDuct())
    events = makeEvents(3)
    events[1].description = "\udcff"  # not valid Unicode: SQLite cannot take it
    with pytest.raises(Unencodable) as refused:
        store._writeInThread(events)  # what the writer thread runs
    assert refused.value.items == [1] and store._writer is not None
    assert store._writeInThread([events[0], events[2]]) == 2  # the file is fine
    store._closeWriter()


# -- /health ------------------------------------------------------------------------


def service(**outputs: Output) -> Any:
    return SimpleNamespace(sources=[], outputs=outputs)


def status(svc: Any) -> int:
    request = DummyRequest([b""])
    HealthResource(svc).render_GET(request)
    return int(request.responseCode or 200)


def test_health_reports_an_output_stalled_by_failing_writes() -> None:
    output, clock = build(Pending, batch_size=5, flush_interval=0, retry_max=5.0)
    svc = service(out=output)
    clock.advance(1000)  # idle for a long time first: that is not a stall
    output.eventsReceived(makeEvents(3))
    for _ in range(20):
        output.fail(len(output.calls) - 1, PermissionError("401 Unauthorized"))
        clock.advance(5.0)
        ok, body = health(svc)
        if clock.seconds() - 1000 < 60:
            assert ok and body["outputs"]["out"]["stalled"] is False
    ok, body = health(svc)
    assert not ok and status(svc) == 503
    detail = body["outputs"]["out"]
    assert detail["stalled"] is True and detail["seconds_since_delivery"] >= 1060
    assert detail["last_error"] == "401 Unauthorized"
    (reason,) = body["reasons"]
    assert reason.startswith("output out: stalled: 3 events waiting, nothing delivered for ")
    assert reason.endswith("(last error: 401 Unauthorized)")
    output.ack(len(output.calls) - 1)
    ok, body = health(svc)
    assert ok and status(svc) == 200 and body["outputs"]["out"]["stalled"] is False
    assert body["outputs"]["out"]["seconds_since_delivery"] == 0


def test_health_counts_a_stall_from_when_the_backlog_began() -> None:
    output, clock = build(Pending, batch_size=5, flush_interval=0, stall_after=30)
    svc = service(out=output)
    output.eventsReceived(makeEvents(1))
    output.ack(0)
    clock.advance(500)
    output.eventsReceived(makeEvents(1))  # written, not yet confirmed
    clock.advance(29)
    assert health(svc)[0]
    clock.advance(1)
    assert not health(svc)[0] and output.stalled


def test_an_idle_output_with_an_empty_buffer_is_never_stalled() -> None:
    output, clock = build(Pending, batch_size=5, flush_interval=0)
    svc = service(out=output)
    clock.advance(10 * 86400)
    ok, body = health(svc)
    assert ok and status(svc) == 200 and body["outputs"]["out"]["stalled"] is False


def test_stall_after_zero_turns_the_check_off() -> None:
    output, clock = build(Pending, batch_size=5, flush_interval=0, stall_after=0)
    output.eventsReceived(makeEvents(1))
    clock.advance(86400)
    assert health(service(out=output))[0]


def test_a_disk_buffer_drops_an_event_it_cannot_encode_and_keeps_the_rest(
    tmp_path: Path, clock: Clock
) -> None:
    buffer = DiskBuffer("out", clock, str(tmp_path / "buf"), sync="never")
    events = makeEvents(3)
    events[1].description = "\udcff"
    assert buffer.put(events) == 2 and buffer.drops == {"unencodable": 1}
    assert services(buffer.waiting()) == ["svc.0", "svc.2"]
    with pytest.raises(TypeError):
        buffer.put([object()])
    buffer.close()


def test_stats_and_metrics_show_the_events_rejected(tmp_path: Path) -> None:
    from duct.stats import snapshot
    from duct.web.metrics import families

    output, clock = build(Encoding, batch_size=10, flush_interval=0, name="enc")
    output.eventsReceived(spoiled(makeEvents(10), 2, 7))
    svc = SimpleNamespace(clock=clock, sources=[], outputs={"enc": output})
    entry = snapshot(svc)["outputs"]["enc"]
    assert entry["events_rejected"] == 2 and entry["dropped"] == {"rejected": 2}
    assert entry["rejected"] == 1 and entry["stalled"] is False
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families(snapshot(svc))
        for sample in family.samples
    }
    assert samples[("duct_output_events_rejected_total", (("output", "enc"),))] == 2
    assert samples[("duct_output_stalled", (("output", "enc"),))] == 0
