"""Hostile input against a real ``twistd -n duct`` agent, while a good client keeps sending.

Each test starts its own agent (`agents.Harness`): Riemann listeners on
TCP and UDP relaying to a JSON lines file, a Riemann sink and a store,
the file and the sink with ``overflow: block``, every buffer bounded at
`agents.MAXSIZE` events, and the web server on.  A good client sends Msgs
of ten events, one at a time, all along.  The hostile part of each case
is in `hostile_cases`; every case then holds that

- the good client's acks kept coming: none waited over `agents.ACK_BOUND`
  seconds (a liveness bound, not a timing test);
- every event the good client got an ack for is in the JSON lines file and
  at the sink once the agent is stopped with SIGTERM (which drains);
- the agent's RSS stayed under `agents.RSS_CEILING` (it is killed if it
  does not) and no buffer held more than its ``maxsize``, as ``/stats``
  reported them;
- the agent counted the refusal in ``/stats``.

A configuration file that is hostile (an alias bomb, given on SIGHUP) is
covered by ``tests/test_config_hostile_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from agents import Harness
from hostile_cases import CASES


async def run(reactor: Any, tmp: Path, name: str) -> int:
    case = CASES[name]
    harness = Harness(reactor, tmp, extraSources=case.extraSources, sinkUp=case.sinkUp)
    try:
        return await case.run(harness)
    finally:
        await harness.cleanup()


@pytest.mark.parametrize("over", ["tcp", "udp"])
@pytest_twisted.ensureDeferred
async def test_invalid_utf8_is_repaired_for_json_and_relayed_unchanged(
    reactor: Any, tmp_path: Path, over: str
) -> None:
    """Bytes that are not UTF-8 in host, service, description and an attribute key.

    The Msg is acked (over TCP; a datagram is counted as received); the
    JSON lines file has the event with U+FFFD for each bad byte; the sink
    gets the event's bytes as the client sent them; ``/events`` and
    ``/api/services`` answer 200; ``repaired`` is counted.
    """
    assert await run(reactor, tmp_path, f"a-utf8-{over}") > 0


@pytest_twisted.ensureDeferred
async def test_a_16mib_frame_of_empty_events_is_refused_in_bounded_memory(
    reactor: Any, tmp_path: Path
) -> None:
    """8,388,606 empty events in one frame within max_frame: ``ok: false``.

    The agent stays under the RSS ceiling and keeps acking the good client;
    ``too_many_events`` is counted (the Msg is over ``max_events``).
    """
    assert await run(reactor, tmp_path, "b-16mib-frame") >= 1


@pytest_twisted.ensureDeferred
async def test_a_msg_above_the_buffers_maxsize_is_refused(reactor: Any, tmp_path: Path) -> None:
    """30,000 events, under ``max_events``, over every buffer's 20,000: ``ok: false``.

    None of its events is written, no buffer goes over its bound, and the
    refusal is counted in ``oversized``.
    """
    assert await run(reactor, tmp_path, "c-above-maxsize") >= 1


@pytest_twisted.ensureDeferred
async def test_a_msg_that_fits_later_is_acked_once_there_is_room(
    reactor: Any, tmp_path: Path
) -> None:
    """15,000 events while the sink's buffer is over a quarter full: held, then acked.

    The sink is down until the Msg is read, then comes up; the Msg's
    events are all delivered, and so are the good client's.
    """
    assert await run(reactor, tmp_path, "c-not-yet") >= 1


@pytest_twisted.ensureDeferred
async def test_max_connections_refuses_the_sixth_and_serves_the_five(
    reactor: Any, tmp_path: Path
) -> None:
    """``max_connections: 5``: a sixth connection gets ``ok: false`` and is closed.

    The five go on being acked, ``refused_connections`` is counted, and
    once one of them closes a new connection is served in its place.
    """
    assert await run(reactor, tmp_path, "d-max-connections") >= 1


@pytest_twisted.ensureDeferred
async def test_a_client_silent_mid_frame_is_closed_after_idle_timeout(
    reactor: Any, tmp_path: Path
) -> None:
    """Half a frame and then nothing: closed once ``idle_timeout`` (1 s) has passed.

    ``idle_closed`` is counted; a busy client on the same listener is not
    closed.
    """
    assert await run(reactor, tmp_path, "d-idle-timeout") >= 1


@pytest_twisted.ensureDeferred
async def test_a_backtracking_pattern_on_events_is_answered_at_once(
    reactor: Any, tmp_path: Path
) -> None:
    """``/events?service=(a+)+$`` over services of 5,000 ``a`` and a ``!``.

    Patterns run on RE2, which does not backtrack: the stream answers in
    well under 5 s (200, or 400 for a pattern it refuses), and the good
    client's acks keep coming meanwhile.
    """
    assert await run(reactor, tmp_path, "e-redos") == 0
