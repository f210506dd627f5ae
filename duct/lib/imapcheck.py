"""One IMAP exchange for a mail check: log in, find a message by subject and body, delete it.

`takeMessage` connects (in the clear, or over TLS from the first byte),
waits for the greeting, logs in, selects the mailbox and searches it;
each message that matches is flagged ``\\Deleted`` and expunged.  The
caller bounds it with a deadline (`duct.lib.tcpclient.within`); cancelling
it drops the connection.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, connectionDone
from twisted.mail.imap4 import IMAP4Client, Query
from twisted.python.failure import Failure


class GreetedClient(IMAP4Client):
    """An `IMAP4Client` whose ``greeted`` fires once the server has greeted it."""

    def __init__(self, contextFactory: Any = None) -> None:
        super().__init__(contextFactory)
        self.greeted: Deferred[None] = Deferred()

    def serverGreeting(self, caps: Any) -> None:
        if not self.greeted.called:
            self.greeted.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if not self.greeted.called:
            self.greeted.errback(ConnectionError("the IMAP server closed before its greeting"))


def imapReason(error: BaseException) -> str:
    """An IMAP failure in one line: the server's words where it said some."""
    args = getattr(error, "args", ())
    text = args[0] if args else str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).replace("\n", " ").strip()
    return text or type(error).__name__


async def takeMessage(
    reactor: Any,
    host: str,
    port: int,
    username: str,
    password: str,
    mailbox: str,
    subject: str,
    body: str,
    tls: Any = None,
    timeout: float = 30.0,
) -> int:
    """How many messages in ``mailbox`` have ``subject`` and ``body``; they are deleted."""
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    client = GreetedClient()
    connecting: Deferred[Any] = endpoint.connect(Factory.forProtocol(lambda: client))
    await connecting
    try:
        await client.greeted
        await client.login(username.encode("utf-8"), password.encode("utf-8"))
        await client.select(mailbox)
        found = await client.search(Query(subject=subject, body=body))
        if found:
            await client.addFlags(",".join(map(str, found)), ["\\Deleted"], silent=1)
            await client.expunge()
        try:
            await client.logout()
        except Exception:  # the server may close before it answers LOGOUT
            pass
        return len(found)
    finally:
        transport: Any = client.transport
        if transport is not None:
            transport.abortConnection()
