"""Writing a small reply straight to an idle TCP socket: the one use of Twisted internals.

Acking one small Msg costs the reactor a round of registering the socket
for writability and back; sending at once when nothing is queued saves
most of that, and is what keeps one-event Msgs fast (README, "One event
per Msg is bound by the reactor").  Doing so reads three attributes of
``twisted.internet.tcp.Server`` that are not public: ``socket``,
``dataBuffer`` and ``_tempDataBuffer``.  They are read here and nowhere
else; `tests/test_writenow.py` fails if Twisted changes them, and outside
`TESTED_TWISTED` (major versions) every write goes through
``transport.write``, which is always correct, only slower.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

import twisted

TESTED_TWISTED = range(23, 27)
"""The Twisted major versions whose ``tcp.Server`` this was checked against."""


def _supported(version: str) -> bool:
    try:
        return int(version.split(".")[0]) in TESTED_TWISTED
    except ValueError:
        return False


ENABLED = _supported(twisted.__version__)


def writeNow(transport: Any, data: bytes) -> None:
    """Write ``data`` at once when the socket can take it, else as usual.

    Only a plain TCP server transport with nothing queued, not closing,
    sends straight away.  TLS and anything else, a partial send (the rest
    is queued), or an error (the transport sees and reports it) go through
    ``transport.write``, so the order of writes is kept.
    """
    if not ENABLED or type(transport) is not tcp.Server:
        transport.write(data)
        return
    sock = getattr(transport, "socket", None)
    if (
        sock is None
        or transport.dataBuffer
        or getattr(transport, "_tempDataBuffer", True)
        or transport.disconnecting
    ):
        transport.write(data)
        return
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])
