"""duct.sources.mail: SMTP and RoundTrip against a real postfix and dovecot, and failing servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from dovecotserver import PASSWORD, DovecotServer
from localservers import freePort
from postfixserver import MAILBOX, REJECTED, PostfixServer
from silentserver import listenSilently

from duct.sources.mail import SMTP, RoundTrip, address, domainOf
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
async def test_username_and_password_log_in_before_sending(
    reactor: Any, mta: PostfixServer, dovecot: DovecotServer
) -> None:
    [refused] = await smtp(reactor, mta.authPort).poll()
    assert (
        refused.state == "critical"
        and "Recipient address rejected: Access denied" in refused.description
    )
    login = {"username": "probe", "password": PASSWORD}
    events = byService(await smtp(reactor, mta.authPort, **login).poll())
    assert events["smtp.state"].state == "ok", events["smtp.state"].description
    wrong = {"username": "probe", "password": "wrong"}
    [failed] = await smtp(reactor, mta.authPort, **wrong).poll()
    assert failed.state == "critical"
    assert "535 5.7.8 Error: authentication failed" in failed.description
    [none] = await smtp(reactor, mta.port, **login).poll()
    assert none.description.endswith(": username: the server offers no authentication that "
                                     "duct can use")  # fmt: skip


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


# -- RoundTrip: through postfix to its maildir, and back over IMAP from dovecot ---------------


def roundTrip(reactor: Any, mta: PostfixServer, imap: int, **config: Any) -> SourceHarness:
    config = {"service": "mail", "server": "127.0.0.1", "port": mta.port, "to": MAILBOX,
              "from": "Duct <duct@duct.test>", "mail_server": "127.0.0.1", "mail_port": imap,
              "mail_username": MAILBOX, "mail_password": PASSWORD, **config}  # fmt: skip
    return SourceHarness(RoundTrip, config, duct=FakeDuct(reactor=reactor))


async def pollUntil(harness: SourceHarness, service: str, timeout: float = 30) -> list[Any]:
    """Poll again and again (each poll is one IMAP look) until one yields ``service``."""
    events: list[Any] = []

    async def polled() -> bool:
        events[:] = await harness.poll()
        return any(e.service == service for e in events)

    await waitFor(harness.duct.reactor, polled, service, timeout)
    return events


@pytest_twisted.ensureDeferred
async def test_a_message_goes_round_through_postfix_and_dovecot(
    reactor: Any, mta: PostfixServer, dovecot: DovecotServer
) -> None:
    harness = roundTrip(reactor, mta, dovecot.port, smtp_server="127.0.0.1")
    [smtp] = await harness.poll()
    assert (smtp.service, smtp.state) == ("mail.smtp", "ok")
    assert smtp.metric > 0
    events = byService(await pollUntil(harness, "mail.delivery"))
    assert events["mail.imap"].state == "ok"
    delivery = events["mail.delivery"]
    assert delivery.state == "ok" and delivery.metric >= smtp.metric
    assert harness.source.pending is None
    maildir = mta.root / "mail" / "probe"
    assert list((maildir / "new").iterdir()) + list((maildir / "cur").iterdir()) == []
    [again] = await harness.poll()
    assert again.service == "mail.smtp"  # the next message is on its way
    await pollUntil(harness, "mail.delivery")
    assert harness.errors == [], dovecot.log()


@pytest_twisted.ensureDeferred
async def test_a_wrong_imap_password_is_critical_with_the_servers_words(
    reactor: Any, mta: PostfixServer, dovecot: DovecotServer
) -> None:
    harness = roundTrip(reactor, mta, dovecot.port, mail_password="wrong")
    await harness.poll()
    events = byService(await harness.poll())
    assert (events["mail.imap"].state, events["mail.imap"].metric) == ("critical", 0)
    assert "Authentication failed" in events["mail.imap"].description
    assert "mail.delivery" not in events and harness.source.pending is not None


@pytest_twisted.ensureDeferred
async def test_a_message_that_never_arrives_is_critical_after_max_time(
    reactor: Any, mta: PostfixServer, dovecot: DovecotServer
) -> None:
    # Accepted by postfix and deferred there: it never reaches the mailbox.
    harness = roundTrip(reactor, mta, dovecot.port, to="nobody@example.invalid", max_time=0.5)
    [smtp] = await harness.poll()
    assert smtp.state == "ok"
    events = byService(await pollUntil(harness, "mail.delivery"))
    assert events["mail.imap"].state == "ok"
    assert events["mail.delivery"].state == "critical"
    assert "not delivered in" in events["mail.delivery"].description
    assert harness.source.pending is None


@pytest_twisted.ensureDeferred
async def test_an_imap_server_that_refuses_or_stays_silent_is_critical(
    reactor: Any, mta: PostfixServer
) -> None:
    closed = freePort()
    harness = roundTrip(reactor, mta, closed)
    await harness.poll()
    events = byService(await harness.poll())
    assert events["mail.imap"].state == "critical"
    assert "refused" in events["mail.imap"].description.lower()
    silent = listenSilently(reactor)
    try:
        harness = roundTrip(reactor, mta, silent.getHost().port, timeout=0.3)
        await harness.poll()
        events = byService(await harness.poll())
    finally:
        await silent.stopListening()
    assert events["mail.imap"].state == "critical"
    assert events["mail.imap"].description.endswith("the IMAP exchange: no answer in 0.3s")


@pytest_twisted.ensureDeferred
async def test_a_send_that_fails_leaves_nothing_to_wait_for(
    reactor: Any, mta: PostfixServer
) -> None:
    harness = roundTrip(reactor, mta, freePort(), to=REJECTED)
    [smtp] = await harness.poll()
    assert (smtp.service, smtp.state) == ("mail.smtp", "critical")
    assert "Recipient address rejected" in smtp.description
    assert harness.source.pending is None


def test_round_trip_takes_the_originals_option_names() -> None:
    config = {"service": "mail", "smtp_server": "mx.duct.test", "smtp_port": 587,
              "mail_username": "u", "mail_password": "p"}  # fmt: skip
    source = SourceHarness(RoundTrip, config).source
    assert (source.server, source.config["port"]) == ("mx.duct.test", 587)
    assert (source.config["imap_mailbox"], source.config["max_time"]) == ("INBOX", 60.0)
    with pytest.raises(ValueError, match="mail_type"):
        SourceHarness(RoundTrip, {**config, "mail_type": "pop3"})
    with pytest.raises(ValueError, match="mail_password: missing required key"):
        SourceHarness(RoundTrip, {"service": "mail", "mail_username": "u"})
