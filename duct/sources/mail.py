"""mail: a message sent by SMTP, timed, as a mail server's users would send one."""

from __future__ import annotations

import ipaddress
import uuid
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr
from io import BytesIO
from typing import Any

from OpenSSL.SSL import Error as SSLError
from twisted.internet.defer import Deferred
from twisted.mail.smtp import (
    AUTHRequiredError,
    ESMTPSenderFactory,
    SMTPClientError,
    SMTPConnectError,
    TLSRequiredError,
)

from duct.lib.imapcheck import imapReason, takeMessage
from duct.lib.process import Timeout
from duct.lib.tcpclient import reason, within
from duct.lib.tls import TLS_CLIENT_OPTIONS, tlsFromConfig
from duct.objects import Event, Source
from duct.options import REQUIRED, Option

SUBJECT = "Duct check {id}"
BODY = "Duct email test: {id}"
"""The subject and body of each message; a round trip looks for them."""


def address(text: str) -> str:
    """The address in ``Name <user@host>`` or ``user@host``."""
    return parseaddr(text)[1] or text.strip()


def domainOf(host: str) -> str:
    """``host`` as the domain of an address: an IP address in brackets (``[127.0.0.1]``)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{host}]"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def smtpReason(error: BaseException) -> str:
    """Why a send failed, in one line: the server's reply where there is one."""
    if isinstance(error, TLSRequiredError):
        return "use_tls: the server does not offer STARTTLS"
    if isinstance(error, AUTHRequiredError):
        return "username: the server offers no authentication that duct can use"
    if isinstance(error, SMTPConnectError) and isinstance(error.__cause__, SSLError):
        return f"TLS: {reason(error.__cause__)}"
    if isinstance(error, SMTPConnectError) and error.__cause__ is not None:
        return reason(error.__cause__)
    if isinstance(error, SMTPClientError):
        addresses: Any = getattr(error, "addresses", None) or []
        refused = [f"{_text(to)}: {code} {_text(text)}" for to, code, text in addresses
                   if code >= 400]  # fmt: skip
        code = f"{error.code} " if error.code and error.code > 0 else ""
        return "; ".join(refused) if refused else f"{code}{_text(error.resp)}".strip()
    return reason(error)


class SMTP(Source):
    """Sends a message to ``to`` through the SMTP server at ``server:port``.

    ``{service}.latency``: milliseconds from connecting to the server's
    acceptance of the message.  ``{service}.state``: 1, ``ok``, with the
    server's reply and the message's ``Message-ID``, once it took the
    message; 0, ``critical``, with the reason, when the connection is
    refused, the server refuses the sender, the recipient or the message,
    TLS is required and cannot be had (the server's certificate is
    verified for ``server`` against ``tls_ca``, or the system's CAs), the
    login fails, or it is not done within ``timeout``.  It is sent once,
    never retried.  The message's subject and body carry an id of its own.
    """

    sync = True
    options = (
        Option("server", "string", None, "SMTP server (default: the source's hostname)"),
        Option("port", "integer", 25, "SMTP port", minimum=1),
        Option("use_tls", "boolean", False, "require STARTTLS, with the certificate verified"),
        Option("ehlo", "string", None, "name given in EHLO (default: the source's hostname)"),
        Option("from", "string", None, "sender, 'Name <user@host>' (default: duct@hostname)"),
        Option("to", "string", None, "recipient, 'Name <user@host>' (default: duct@server)"),
        Option("username", "string", None, "user to authenticate as (with password)"),
        Option("password", "string", None, "password to authenticate with"),
        Option("timeout", "number", 30.0, "seconds to connect and send the message", above=0),
        *TLS_CLIENT_OPTIONS,
    )

    @property
    def server(self) -> str:
        return str(self.config["server"] or self.hostname)

    def message(self, mailId: str) -> tuple[str, str, bytes, str]:
        """The envelope sender, the recipient, the message with ``mailId`` in it and its id."""
        sender = self.config["from"] or f"Duct <duct@{domainOf(self.hostname)}>"
        to = self.config["to"] or f"Duct <duct@{domainOf(self.server)}>"
        message = MIMEText(BODY.format(id=mailId))
        message["Subject"] = SUBJECT.format(id=mailId)
        message["From"], message["To"] = sender, to
        message["Date"] = formatdate(self.clock.seconds())
        messageId = f"<duct.{mailId}@{address(sender).rpartition('@')[2] or 'duct'}>"
        message["Message-ID"] = messageId
        return address(sender), address(to), message.as_bytes(), messageId

    async def send(self, mailId: str) -> tuple[bool, float, str]:
        """Send one message: whether the server took it, in how many ms, and why (or its reply)."""
        host, port = self.server, self.config["port"]
        timeout = float(self.config["timeout"])
        sender, to, body, messageId = self.message(mailId)
        username, password = self.config["username"], self.config["password"]
        auth = bool(username and password)
        tls = bool(self.config["use_tls"])
        result: Deferred[Any] = Deferred()
        try:
            context = tlsFromConfig(host, self.config, self.service) if tls else None
        except (OSError, ValueError) as e:
            return False, 0.0, f"TLS options: {reason(e)}"
        factory = ESMTPSenderFactory(
            username.encode("utf-8") if auth else None,
            password.encode("utf-8") if auth else None,
            sender, [to], BytesIO(body), result, retries=0,
            contextFactory=context, requireAuthentication=auth, requireTransportSecurity=tls,
        )  # fmt: skip
        factory.domain = (self.config["ehlo"] or self.hostname).encode("utf-8")
        started = self.clock.seconds()
        connector = self.duct.reactor.connectTCP(host, port, factory, timeout=timeout)

        def cancel(sending: Deferred[Any]) -> None:
            factory.sendFinished = True
            protocol = factory.currentProtocol
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abortConnection()
            else:
                connector.disconnect()
            if not result.called:
                result.errback(Timeout("cancelled"))

        sending: Deferred[Any] = Deferred(cancel)
        result.chainDeferred(sending)
        try:
            _, addresses = await within(sending, timeout, self.clock, "the SMTP exchange")
        except Exception as e:
            elapsed = (self.clock.seconds() - started) * 1000
            return False, elapsed, smtpReason(e)
        elapsed = (self.clock.seconds() - started) * 1000
        replies = [f"{code} {text.decode('utf-8', 'replace')}" for _, code, text in addresses]
        return True, elapsed, f"{'; '.join(replies)}, Message-ID {messageId}"

    async def get(self) -> list[Event]:
        where = f"{self.server}:{self.config['port']}"
        sent, elapsed, why = await self.send(uuid.uuid4().hex)
        if not sent:
            return [self.createEvent("critical", f"SMTP {where}: {why}", 0, "state")]
        return [self.createEvent("ok", f"SMTP {where}: sent in {elapsed:.0f} ms", elapsed,
                                 "latency"),
                self.createEvent("ok", f"SMTP {where}: {why}", 1, "state")]  # fmt: skip


class RoundTrip(SMTP):
    """Sends a message by SMTP, then looks for it over IMAP until it arrives.

    A poll with no message on its way sends one: ``{service}.smtp``, the
    milliseconds the server took to accept it, ``critical`` with the reason
    when it did not.  Each poll after that logs in to ``mail_server`` and
    looks in ``imap_mailbox`` for a message with that subject and body:
    ``{service}.imap``, 1, ``ok``, when the search was done; 0,
    ``critical``, with the reason, when the server refused, the login
    failed or ``timeout`` passed.  Once the message is there,
    ``{service}.delivery`` is the milliseconds from sending it to finding
    it, and the message is deleted; if it has not come ``max_time``
    seconds after it was sent, ``{service}.delivery`` is ``critical`` and
    the next poll sends another.
    """

    options = (
        Option("smtp_server", "string", None, "another name for server", alias_of="server"),
        Option("smtp_port", "integer", None, "another name for port", alias_of="port", minimum=1),
        Option("mail_type", "string", "imap", "how the message is fetched", choices=("imap",)),
        Option("mail_server", "string", None, "IMAP server (default: the source's hostname)"),
        Option(
            "mail_port",
            "integer",
            None,
            "IMAP port (default: 143, or 993 with mail_ssl)",
            minimum=1,
        ),  # fmt: skip
        Option("mail_username", "string", REQUIRED, "IMAP user the message is sent to"),
        Option("mail_password", "string", REQUIRED, "IMAP password"),
        Option("mail_ssl", "boolean", False, "IMAP over TLS (imaps), the certificate verified"),
        Option("imap_mailbox", "string", "INBOX", "mailbox the message arrives in"),
        Option("max_time", "number", 60.0, "seconds to wait for the message to arrive", above=0),
    )

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        self.pending: tuple[str, float] | None = None
        """The id of the message on its way, and when its sending started."""

    async def get(self) -> list[Event]:
        if self.pending is None:
            return await self.sendOne()
        return await self.lookForIt(*self.pending)

    async def sendOne(self) -> list[Event]:
        where = f"{self.server}:{self.config['port']}"
        mailId, started = uuid.uuid4().hex, self.clock.seconds()
        sent, elapsed, why = await self.send(mailId)
        if not sent:
            return [self.createEvent("critical", f"SMTP {where}: {why}", elapsed, "smtp")]
        self.pending = (mailId, started)
        return [self.createEvent("ok", f"SMTP {where}: sent in {elapsed:.0f} ms: {why}",
                                 elapsed, "smtp")]  # fmt: skip

    async def lookForIt(self, mailId: str, started: float) -> list[Event]:
        config = self.config
        host = config["mail_server"] or self.hostname
        ssl = bool(config["mail_ssl"])
        port = config["mail_port"] or (993 if ssl else 143)
        where, timeout = f"{host}:{port}", float(config["timeout"])
        try:
            tls = tlsFromConfig(host, config, self.service) if ssl else None
            looking = Deferred.fromCoroutine(takeMessage(
                self.duct.reactor, host, port, config["mail_username"], config["mail_password"],
                config["imap_mailbox"], SUBJECT.format(id=mailId), BODY.format(id=mailId), tls,
                timeout))  # fmt: skip
            found = await within(looking, timeout, self.clock, "the IMAP exchange")
        except Exception as e:
            events = [self.createEvent("critical", f"IMAP {where}: {imapReason(e)}", 0, "imap")]
            return events + self.overdue(mailId, started)
        events = [self.createEvent("ok", f"IMAP {where}", 1, "imap")]
        if not found:
            return events + self.overdue(mailId, started)
        self.pending = None
        trip = (self.clock.seconds() - started) * 1000
        return [*events, self.createEvent("ok", f"delivered in {trip:.0f} ms", trip, "delivery")]

    def overdue(self, mailId: str, started: float) -> list[Event]:
        """A critical delivery once ``max_time`` has passed; the next poll then sends anew."""
        waited = self.clock.seconds() - started
        if waited <= float(self.config["max_time"]):
            return []
        self.pending = None
        return [self.createEvent("critical", f"message {mailId} not delivered in {waited:.0f} s",
                                 waited * 1000, "delivery")]  # fmt: skip
