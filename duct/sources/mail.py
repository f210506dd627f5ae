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

from duct.lib.process import Timeout
from duct.lib.tcpclient import reason, within
from duct.lib.tls import TLS_CLIENT_OPTIONS, tlsFromConfig
from duct.objects import Event, Source
from duct.options import Option

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
    server's reply, once it took the message; 0, ``critical``, with the
    reason, when the connection is refused, the server refuses the sender,
    the recipient or the message, TLS is required and cannot be had (the
    server's certificate is verified for ``server`` against ``tls_ca``, or
    the system's CAs), authentication fails,
    or it is not done within ``timeout``.  The message's subject and body
    carry an id of its own.
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
