"""duct.sources.mail.SMTP: messages sent to a real postfix, and to servers that fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from localservers import freePort
from postfixserver import REJECTED, PostfixServer
from silentserver import listenSilently

from duct.sources.mail import SMTP, address, domainOf
from duct.testing import FakeDuct, SourceHarness, waitFor

TO = "Someone <someone@example.invalid>"


def smtp(reactor: Any, port: int, **config: Any) -> SourceHarness:
    config = {"service": "smtp", "server": "127.0.0.1", "port": port, "to": TO,
              "from": "Duct <duct@duct.test>", **config}  # fmt: skip
    return SourceHarness(SMTP, config, duct=FakeDuct(reactor=reactor))


def byService(events: list) -> dict[str, Any]:
    return {e.service: e for e in events}


@pytest.fixture
def mta(postfix: PostfixServer) -> Iterator[PostfixServer]:
    """The session's postfix, its queue emptied after the test (the postfix tests count it)."""
    try:
        yield postfix
    finally:
        postfix.postsuper("-d", "ALL")


def messageId(state: Any) -> str:
    return state.description.rpartition("Message-ID ")[2]


@pytest_twisted.ensureDeferred
async def test_a_message_postfix_takes_is_ok_with_its_latency(
    reactor: Any, mta: PostfixServer
) -> None:
    harness = smtp(reactor, mta.port, ehlo="probe.duct.test")
    events = byService(await harness.poll())
    assert set(events) == {"smtp.latency", "smtp.state"}
    latency, state = events["smtp.latency"], events["smtp.state"]
    assert latency.state == "ok" and latency.metric > 0
    assert (state.state, state.metric) == ("ok", 1)
    assert state.description.startswith(f"SMTP 127.0.0.1:{mta.port}: 250 2.1.5 Ok, Message-ID <")
    assert harness.errors == []
    message = await waitFor(reactor, lambda: mta.queued(messageId(state)), "queued", 30)
    assert "Received: from probe.duct.test (localhost [127.0.0.1])" in message
    assert "Subject: Duct check " in message and "Duct email test: " in message
    assert " with ESMTP id " in message


@pytest_twisted.ensureDeferred
async def test_a_recipient_postfix_rejects_is_critical_with_its_reply(
    reactor: Any, mta: PostfixServer
) -> None:
    [state] = await smtp(reactor, mta.port, to=f"<{REJECTED}>").poll()
    assert (state.service, state.state, state.metric) == ("smtp.state", "critical", 0)
    assert state.description == (
        f"SMTP 127.0.0.1:{mta.port}: {REJECTED}: 554 5.7.1 <{REJECTED}>: "
        "Recipient address rejected: no such mailbox here"
    )


@pytest_twisted.ensureDeferred
async def test_use_tls_against_a_server_without_starttls_is_critical(
    reactor: Any, mta: PostfixServer
) -> None:
    [state] = await smtp(reactor, mta.port, use_tls=True).poll()
    assert (state.service, state.state) == ("smtp.state", "critical")
    assert state.description.endswith(": use_tls: the server does not offer STARTTLS")


@pytest_twisted.ensureDeferred
async def test_use_tls_sends_over_starttls_with_the_certificate_checked(
    reactor: Any, mta: PostfixServer
) -> None:
    config = {"server": "localhost", "use_tls": True, "tls_ca": mta.ca}
    state = byService(await smtp(reactor, mta.tlsPort, **config).poll())["smtp.state"]
    assert state.state == "ok", state.description
    message = await waitFor(reactor, lambda: mta.queued(messageId(state)), "queued", 30)
    assert " with ESMTPS id " in message


@pytest_twisted.ensureDeferred
async def test_a_certificate_that_does_not_verify_is_critical(
    reactor: Any, mta: PostfixServer
) -> None:
    [untrusted] = await smtp(reactor, mta.tlsPort, use_tls=True).poll()
    assert untrusted.state == "critical"
    assert "TLS: " in untrusted.description and "certificate verify failed" in untrusted.description
    [unreadable] = await smtp(reactor, mta.tlsPort, tls_ca="/nonexistent/ca.pem",
                              use_tls=True).poll()  # fmt: skip
    assert unreadable.state == "critical" and "/nonexistent/ca.pem" in unreadable.description


@pytest_twisted.ensureDeferred
async def test_without_use_tls_a_starttls_server_is_used_in_the_clear(
    reactor: Any, mta: PostfixServer
) -> None:
    state = byService(await smtp(reactor, mta.tlsPort).poll())["smtp.state"]
    assert state.state == "ok"
    message = await waitFor(reactor, lambda: mta.queued(messageId(state)), "queued", 30)
    assert " with ESMTP id " in message


@pytest_twisted.ensureDeferred
async def test_a_closed_port_is_critical(reactor: Any) -> None:
    port = freePort()
    [state] = await smtp(reactor, port).poll()
    assert (state.service, state.state, state.metric) == ("smtp.state", "critical", 0)
    assert state.description.startswith(f"SMTP 127.0.0.1:{port}: ")
    assert "refused" in state.description.lower()


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_greets_is_critical_after_the_timeout(reactor: Any) -> None:
    port = listenSilently(reactor)
    try:
        [state] = await smtp(reactor, port.getHost().port, timeout=0.3).poll()
    finally:
        await port.stopListening()
    assert (state.service, state.state) == ("smtp.state", "critical")
    assert state.description.endswith(": the SMTP exchange: no answer in 0.3s")


def test_defaults_follow_the_original() -> None:
    harness = SourceHarness(SMTP, {"service": "smtp", "hostname": "mx.duct.test"})
    config = harness.source.config
    assert (config["port"], config["use_tls"], harness.source.server) == (25, False, "mx.duct.test")
    sender, to, body, messageId = harness.source.message("abc")
    assert messageId == "<duct.abc@mx.duct.test>"
    assert (sender, to) == ("duct@mx.duct.test", "duct@mx.duct.test")
    assert b"Subject: Duct check abc" in body and b"Duct email test: abc" in body
    assert address("Tensor <tensor@host>") == "tensor@host" and address("a@b") == "a@b"
    assert domainOf("127.0.0.1") == "[127.0.0.1]" and domainOf("::1") == "[::1]"
