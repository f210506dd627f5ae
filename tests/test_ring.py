"""EventRing: numbering, bounds in events and bytes, reading, and the pipeline's hook."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from duct.buffers.memory import eventSize
from duct.configuration import ConfigFile, ConfigurationError
from duct.objects import Event
from duct.protocol.riemann import ENCODED_OVERHEAD, EncodedEvents, encodeEvent, msgFromEncoded
from duct.service import DuctService
from duct.testing import RecordingOutput
from duct.web.events.ring import EventRing, eventsSize


def events(first: int, count: int, **fields: Any) -> list[Event]:
    return [
        Event("ok", f"svc.{i}", fields.get("description"), float(i), 60.0, hostname="h")
        for i in range(first, first + count)
    ]


def seqs(ring: EventRing, after: int = 0, limit: int = 10**9) -> list[int]:
    return [seq for seq, _ in ring.read(after, limit)]


def test_events_are_numbered_from_one_across_batches() -> None:
    ring = EventRing(100)
    ring.add(events(0, 3))
    ring.add(events(3, 2))
    found = ring.read(0, 100)
    assert [seq for seq, _ in found] == [1, 2, 3, 4, 5]
    assert [e.service for _, e in found] == [f"svc.{i}" for i in range(5)]
    assert (ring.first, ring.last, ring.next, len(ring)) == (1, 5, 6, 5)


def test_read_resumes_after_a_number_inside_a_batch_and_honours_the_limit() -> None:
    ring = EventRing(100)
    for first in range(0, 30, 10):
        ring.add(events(first, 10))
    assert seqs(ring, after=14, limit=8) == list(range(15, 23))
    assert seqs(ring, after=29) == [30]
    assert seqs(ring, after=30) == []


def test_the_ring_keeps_at_most_its_size_dropping_whole_batches_oldest_first() -> None:
    ring = EventRing(25)
    for first in range(0, 100, 10):
        ring.add(events(first, 10))
    assert len(ring) <= 25
    assert seqs(ring) == list(range(81, 101))  # two batches no longer fit beside the newest
    assert ring.first == 81 and ring.evicted == 80
    assert seqs(ring, after=3) == list(range(81, 101))  # too old: starts at the oldest held


def test_a_full_ring_evicts_in_steps_and_stays_within_its_size() -> None:
    ring = EventRing(640)
    sizes = []
    for i in range(2000):
        ring.add(events(i, 1))
        sizes.append(len(ring))
        assert ring.first == ring.last - len(ring) + 1
    assert max(sizes) == 640
    assert min(sizes[640:]) == 630  # 1/64 under the limit, then filling up again
    assert ring.evicted == 2000 - len(ring)


def test_a_batch_larger_than_the_ring_keeps_its_newest_events() -> None:
    ring = EventRing(10)
    ring.add(events(0, 5))
    ring.add(events(5, 25))
    assert seqs(ring) == list(range(21, 31))
    assert ring.first == 21 and ring.evicted == 20


def test_the_ring_is_bounded_in_bytes() -> None:
    big = "x" * 10_000
    ring = EventRing(1000, maxBytes=100_000)
    for first in range(0, 100, 5):
        ring.add(events(first, 5, description=big))
    assert ring.nbytes <= 100_000
    assert ring.nbytes == sum(eventSize(e) for _, e in ring.read(0, 1000))
    held = seqs(ring)
    assert held == list(range(ring.first, 101)) and 5 <= len(held) <= 9


def test_a_single_event_larger_than_the_byte_bound_is_not_kept() -> None:
    ring = EventRing(100, maxBytes=5_000)
    ring.add(events(0, 3))
    ring.add(events(3, 1, description="x" * 10_000))
    assert len(ring) == 0 and ring.nbytes == 0
    assert ring.first == ring.next == 5
    ring.add(events(4, 1))
    assert seqs(ring) == [5]


def test_sizes_match_what_the_output_buffers_estimate() -> None:
    batch = [
        Event("ok", "a", "some text", 1.0, 60.0, tags=["x", "yy"], attributes={"k": "v"}),
        Event(None, "b", None, None, None),
    ]
    assert eventsSize(batch) == sum(eventSize(e) for e in batch)
    odd = Event("ok", "c", 42, 1.0, 60.0)  # type: ignore[arg-type]  # a plugin's mistake
    ring = EventRing(10)
    ring.add([odd, *batch])
    assert ring.nbytes == 160 + eventsSize(batch)
    assert [e for _, e in ring.read(0, 10)] == [odd, *batch]


def test_relayed_events_stay_encoded_and_are_decoded_when_read() -> None:
    ring = EventRing(100)
    originals = events(0, 3)
    relayed = EncodedEvents([encodeEvent(e) for e in originals])
    ring.add(relayed)
    assert relayed._decoded is None  # the ring did not decode them
    assert ring.nbytes == sum(len(b) for b in relayed.encoded) + ENCODED_OVERHEAD * 3
    read = ring.read(0, 10)
    assert [(seq, e.service, e.metric, e.hostname) for seq, e in read] == [
        (1, "svc.0", 0.0, "h"),
        (2, "svc.1", 1.0, "h"),
        (3, "svc.2", 2.0, "h"),
    ]


def test_a_relayed_msg_is_kept_whole_and_read_from_any_event() -> None:
    ring = EventRing(100)
    ring.add(events(0, 1))
    payload = msgFromEncoded([encodeEvent(e) for e in events(1, 4)])
    relayed = EncodedEvents.fromPayload(payload, 4)
    ring.add(relayed)
    assert relayed._decoded is None and relayed._encoded is None  # neither decoded nor split
    assert ring.nbytes == eventsSize(events(0, 1)) + len(payload) + ENCODED_OVERHEAD
    assert [(seq, e.service) for seq, e in ring.read(2, 2)] == [(3, "svc.2"), (4, "svc.3")]
    assert [seq for seq, _ in ring.backwards()] == [5, 4, 3, 2, 1]


def test_backwards_walks_newest_first_and_bytes_after_measures_how_far_behind() -> None:
    ring = EventRing(100)
    ring.add(events(0, 4))
    ring.add(EncodedEvents([encodeEvent(e) for e in events(4, 2)]))
    assert [seq for seq, _ in ring.backwards()] == [6, 5, 4, 3, 2, 1]
    assert ring.bytesAfter(6) == 0
    assert ring.bytesAfter(4) == ring.nbytes - eventsSize(events(0, 4))
    assert ring.bytesAfter(0) == ring.nbytes


def test_listeners_hear_of_each_batch_and_a_failing_one_does_not_stop_the_others(
    observe_errors: Any,
) -> None:
    ring = EventRing(100)
    heard: list[int] = []

    def broken() -> None:
        raise RuntimeError("a reader's bug")

    ring.subscribe(broken)
    ring.subscribe(lambda: heard.append(ring.last))
    ring.add(events(0, 2))
    ring.add(events(2, 1))
    assert heard == [2, 3]
    assert len(observe_errors.take()) == 2


def test_the_pipeline_records_what_it_delivers_after_rules() -> None:
    config = {
        "web": {},
        "outputs": [{"output": "duct.testing.RecordingOutput", "name": "out"}],
        "sources": [
            {"service": "s", "source": "duct.objects.Source", "critical": {"svc": "> 1"}},
        ],
    }
    service = DuctService(config, reactor=None, clock=Clock())
    source = service.sources[0]
    source.queueBack(events(0, 3))
    assert service.ring is not None
    held = service.ring.read(0, 10)
    assert [(seq, e.service, e.state) for seq, e in held] == [
        (1, "svc.0", "ok"),
        (2, "svc.1", "ok"),
        (3, "svc.2", "critical"),
    ]
    output = service.outputs["out"]
    assert isinstance(output, RecordingOutput)
    assert output.buffer.waiting() == [e for _, e in held]


def test_without_a_web_server_there_is_no_ring_to_feed() -> None:
    config = {
        "outputs": [{"output": "duct.testing.RecordingOutput", "name": "out"}],
        "sources": [{"service": "s", "source": "duct.objects.Source"}],
    }
    service = DuctService(config, reactor=None, clock=Clock())
    assert service.ring is None and service.pipeline.ring is None
    service.sources[0].queueBack(events(0, 3))
    assert len(service.outputs["out"].buffer.waiting()) == 3


def test_ring_size_is_read_from_the_web_settings_and_validated() -> None:
    service = DuctService({"web": {"ring_size": 123, "ring_max_bytes": 4096}}, reactor=Clock())
    assert service.ring is not None
    assert (service.ring.size, service.ring.maxBytes) == (123, 4096)
    defaults = DuctService({"web": {}}, reactor=Clock()).ring
    assert defaults is not None and (defaults.size, defaults.maxBytes) == (10_000, 32 * 2**20)
    with pytest.raises(ConfigurationError) as caught:
        ConfigFile.fromDict({"web": {"ring_size": 0, "ring_sise": 5}}, "duct.yml")
    problems = sorted(str(p) for p in caught.value.problems)
    assert problems == [
        "duct.yml: web: ring_sise: unknown key",
        "duct.yml: web: ring_size: must be at least 1, got 0",
    ]
