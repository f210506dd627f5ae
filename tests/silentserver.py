"""A TCP server on 127.0.0.1 that accepts connections and never answers, for timeout tests."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol


def listenSilently(reactor: Any) -> Any:
    """Listen on a free port of 127.0.0.1; the port's ``getHost().port`` says which."""
    return reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
