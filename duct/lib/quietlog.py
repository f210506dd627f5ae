"""Loggers for library classes that log every routine step at info level.

twisted.conch logs each channel it opens and closes, and each transport
step, at info.  A remote check opens a channel per poll, so those lines
would drown the agent's own.  `quietLogger` passes on only warnings and
worse.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_predicate: Any = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
_publisher: Any = globalLogPublisher
_warningsOnly: Any = FilteringLogObserver(_publisher, [_predicate])


def quietLogger(namespace: str) -> Logger:
    """A Logger in ``namespace`` that drops events below warning level."""
    return Logger(namespace=namespace, observer=_warningsOnly)
