"""Any text in any /events or /api parameter: a 2xx, or a 4xx with a JSON error; never a 500."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from webhelpers import T0, DirectStore, point, render, strictJson

from duct.dashboard.api import ApiResource
from duct.objects import Event
from duct.web.events.resource import EventsResource
from duct.web.events.ring import EventRing

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Text that looks like what the parameters take, and anything else.
value = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "0",
            "-1",
            "1e308",
            "-1e308",
            "nan",
            "inf",
            "5e-324",
            "1" * 5000,
            "(a+)+$",
            r"(a)\1",
            "(?=x)",
            "^cpu",
            "jsonl",
            "sse",
            "web1",
            "x",
            "",
            " 3 ",
            "0x10",
            "1_000",
            "\x00",
        ]
    ),
    st.binary(max_size=20),  # not always UTF-8
)


def encode(v: str | bytes) -> bytes:
    return v if isinstance(v, bytes) else v.encode("utf-8")


def query(names: list[str]) -> st.SearchStrategy[dict[bytes, list[bytes]]]:
    return st.dictionaries(
        st.sampled_from(names).map(str.encode) | st.binary(max_size=8),
        st.lists(value.map(encode), min_size=1, max_size=3),
        max_size=len(names),
    )


def assertAnswered(code: int, body: bytes, streaming: bool) -> None:
    assert 200 <= code < 300 or 400 <= code < 500, (code, body)
    if streaming or not body:  # a stream, or the answer to a HEAD
        return
    answer = strictJson(body)
    if code >= 400:
        assert isinstance(answer["error"], str) and answer["error"]


def events() -> EventsResource:
    ring = EventRing(50)
    ring.add(
        [Event("ok", f"svc.{i}", "a" * i + "!", float(i), 60.0, hostname="h1") for i in range(20)]
    )
    return EventsResource(ring, Clock())


EVENTS = ["format", "since", "recent", "service", "description", "host", "state"]


@SETTINGS
@given(args=query(EVENTS), lastEventId=st.none() | value.map(encode))
def test_any_events_query_is_answered_2xx_or_4xx(
    args: dict[bytes, list[bytes]], lastEventId: bytes | None
) -> None:
    resource = events()
    headers = {b"last-event-id": lastEventId} if lastEventId is not None else None
    for method in (b"GET", b"HEAD"):
        assertAnswered(*render(resource, args, headers, method))
    assert not resource.streams  # every stream that started has ended with its client


@SETTINGS
@given(
    args=query(["host", "service", "since", "until", "points"]),
    path=st.sampled_from([b"series", b"services"]),
)
def test_any_api_query_is_answered_2xx_or_4xx(
    tmp_path: Path, args: dict[bytes, list[bytes]], path: bytes
) -> None:
    store = DirectStore(tmp_path / "store.sqlite")
    try:
        for service in ("x", "(a+)+$", ""):
            store.write(
                [
                    point(service, v, T0 - 50 + i)
                    for i, v in enumerate([1e308, -1e308, 5e-324, 1e308, 0.0] * 3)
                ]
            )
        resource = ApiResource(store).children[path]
        assertAnswered(*render(resource, args))
    finally:
        store.db.close()
