"""Regexes from /events requests: RE2, linear in the text, and refused with 400 when RE2 cannot."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import re2
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from duct.objects import Event
from duct.web.events.format import MAX_REGEX, BadRequest, EventFilter, requestPattern
from duct.web.events.resource import EventsResource
from duct.web.events.ring import EventRing


def event(service: str = "cpu", description: str | None = None) -> Event:
    return Event("ok", service, description, 1.0, 60.0, hostname="h1")


def render(resource: EventsResource, query: dict[str, str]) -> tuple[int, Any]:
    """GET /events with ``query``: the status, and the JSON body of an error (else None)."""
    request = DummyRequest([b""])
    request.args = {k.encode(): [v.encode()] for k, v in query.items()}
    body = resource.render_GET(request)
    if body is NOT_DONE_YET:  # a stream started: the client leaves
        request.processingFailed(Failure(ConnectionDone()))
        return request.responseCode or 200, None
    assert isinstance(body, bytes)
    return request.responseCode, json.loads(body)


def test_request_patterns_are_compiled_by_re2() -> None:
    match = EventFilter(service="(a+)+$", description="(a+)+$")
    assert isinstance(match.service, re2._Regexp)
    assert isinstance(match.description, re2._Regexp)
    assert requestPattern("", "service") is None and requestPattern(None, "service") is None


def test_the_catastrophic_pattern_completes_on_a_long_description() -> None:
    # With re, (a+)+$ against 30 a's and a "!" already backtracks for seconds;
    # RE2 walks the 10,000 characters once.
    text = "a" * 10_000 + "!"
    match = EventFilter(description="(a+)+$")
    assert match(event(description=text)) is False
    assert match(event(description="a" * 10_000)) is True
    assert EventFilter(service="(a+)+$")(event(service=text)) is False
    assert EventFilter(service="(x+x+)+y")(event(service="x" * 10_000)) is False


@pytest.mark.parametrize(
    "pattern",
    ["^cpu", "cpu$", "user", "(?i)CPU", r"disk\.sd[a-z]$", "mem|swap", "^x", ".*", r"\d+$"],
)
def test_re2_searches_as_re_did_for_the_patterns_filters_use(pattern: str) -> None:
    services = ["cpu", "cpu.user", "CPU.system", "disk.sda", "disk.sda1", "memory", "swap", "x9"]
    expected = [s for s in services if re.search(pattern, s)]
    match = EventFilter(service=pattern)
    assert [s for s in services if match(event(service=s))] == expected


def test_the_description_filter_searches_the_description_and_combines_with_the_others() -> None:
    match = EventFilter(service="^disk", description="[0-9]+% used")
    assert match(event("disk.sda", "97% used"))
    assert not match(event("disk.sda", "fine"))
    assert not match(event("disk.sda", None))  # no description: searched as ""
    assert not match(event("cpu", "97% used"))
    assert EventFilter(description="^$")(event("cpu", None))
    assert bool(EventFilter(description="x")) and not EventFilter(description="")


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "invalid escape sequence"),  # a backreference
        ("(?=a)b", "invalid perl operator"),  # a lookahead
        ("(?<!a)b", "invalid perl operator"),  # a lookbehind
        ("(?P<n>a)(?P=n)", "invalid perl operator"),  # a named backreference
        ("a{1001}", "invalid repetition size"),
        ("cpu(", "missing )"),
    ],
)
@pytest.mark.parametrize("parameter", ["service", "description"])
def test_a_pattern_re2_refuses_is_a_400_naming_the_parameter_and_why(
    parameter: str, pattern: str, why: str
) -> None:
    resource = EventsResource(EventRing(10), Clock())
    code, body = render(resource, {"format": "jsonl", parameter: pattern})
    assert code == 400
    assert body["error"].startswith(f"bad {parameter} regex {pattern!r}: {why}")
    assert resource.counters["bad_requests"] == 1 and not resource.streams


def test_a_pattern_longer_than_the_limit_is_refused_before_it_is_compiled() -> None:
    requestPattern("a" * MAX_REGEX, "service")  # at the limit: accepted
    with pytest.raises(BadRequest, match="description regex is longer than 1000 characters"):
        requestPattern("(" * (MAX_REGEX + 1), "description")
