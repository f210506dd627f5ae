"""Decoding what Riemann clients send: text that is not UTF-8, and fields unknown here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.testing import StringTransport

from duct.protocol.riemann import EncodedEvents, decodeMsg, eventFromProto, frame, repairs
from duct.service import DuctService

BAD = b"a\xffb\xc3"  # a byte that never starts UTF-8, then a sequence cut short
FIXED = "a\ufffdb\ufffd"


def field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (every length here is below 128)."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def badEvent() -> bytes:
    """A serialized Riemann Event with bad bytes in every text field."""
    attribute = field(1, b"k" + BAD) + field(2, b"v" + BAD)
    return b"".join(
        [
            field(2, b"ok" + BAD),  # state
            field(3, b"svc" + BAD),  # service
            field(4, b"host" + BAD),  # host
            field(5, b"desc" + BAD),  # description
            field(7, b"tag" + BAD),  # tags
            field(9, attribute),  # attributes
        ]
    )


def msgOf(*events: bytes) -> bytes:
    return b"".join(field(6, event) for event in events)


def test_every_text_field_is_repaired_with_replacement_characters() -> None:
    msg = decodeMsg(msgOf(badEvent()))
    before = repairs.events
    event = eventFromProto(msg.events[0])
    assert repairs.events - before == 1
    assert event.state == "ok" + FIXED
    assert event.service == "svc" + FIXED
    assert event.hostname == "host" + FIXED
    assert event.description == "desc" + FIXED
    assert event.tags == ["tag" + FIXED]
    assert event.attributes == {"k" + FIXED: "v" + FIXED}
    json.dumps(event.asDict(), ensure_ascii=False).encode("utf-8")  # encodable everywhere


def test_valid_text_is_left_alone_and_not_counted() -> None:
    payload = msgOf(field(3, "sérvice ✓".encode()) + field(4, "hôte".encode()))
    events = EncodedEvents.fromMsg(decodeMsg(payload), payload)
    decoded = events.decode()
    assert [(e.hostname, e.service) for e in decoded] == [("hôte", "sérvice ✓")]
    assert events.repaired == 0


def test_decoded_events_say_how_many_were_repaired() -> None:
    good = field(3, b"fine")
    payload = msgOf(good, badEvent(), good, field(3, BAD))
    events = EncodedEvents.fromMsg(decodeMsg(payload), payload)
    assert [e.service for e in events.decode()] == ["fine", "svc" + FIXED, "fine", FIXED]
    assert events.repaired == 2
    events.decode()  # decoded once, counted once
    assert events.repaired == 2


def relayService(tmp_path: Path, reactor: Any) -> DuctService:
    """A Riemann listener feeding a JSON lines file and a Riemann output that keeps bytes."""
    config = {
        "outputs": [
            {
                "output": "duct.outputs.file.JSONLines",
                "name": "file",
                "path": str(tmp_path / "events.jsonl"),
                "flush_interval": 0,
            },
            {
                "output": "duct.outputs.riemann.RiemannTCP",
                "name": "riemann",
                "server": "127.0.0.1",
                "port": 1,  # never connected: what it holds is what it would send
            },
        ],
        "sources": [
            {
                "service": "riemann",
                "source": "duct.sources.riemann.RiemannTCP",
                "listen": "tcp:0:interface=127.0.0.1",
            }
        ],
    }
    return DuctService(config, reactor=reactor)


@pytest_twisted.ensureDeferred
async def test_a_listener_counts_repairs_and_outputs_get_what_they_can_use(
    tmp_path: Path, reactor: Any
) -> None:
    service = relayService(tmp_path, reactor)
    source: Any = service.sources[0]
    connection = source.factory.buildProtocol(None)
    transport = StringTransport()
    connection.makeConnection(transport)
    payload = msgOf(badEvent(), field(3, b"clean"))

    connection.dataReceived(frame(payload))

    assert decodeMsg(transport.value()[4:]).ok
    assert source.repaired == 1
    await service.outputs["file"].flush()
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text("utf-8").split()]
    assert [line["service"] for line in lines] == ["svc" + FIXED, "clean"]
    assert lines[0]["attributes"] == {"k" + FIXED: "v" + FIXED}
    # The Riemann output relays the client's bytes, bad ones included.
    relayed = service.outputs["riemann"].buffer.waiting()
    assert b"".join(relayed) == payload
    await service.outputs["file"].stop()


def test_a_msg_with_fields_unknown_here_still_splits_into_its_events() -> None:
    """A newer client's top-level field is kept in the payload and skipped when splitting."""
    payload = msgOf(field(3, b"one"), field(3, b"two")) + b"\x78\x01"  # field 15, a varint
    events = EncodedEvents.fromMsg(decodeMsg(payload), payload)
    assert events.payload == payload
    assert [decodeMsg(msgOf(e)).events[0].service for e in events.encoded] == ["one", "two"]
