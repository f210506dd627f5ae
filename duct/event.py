"""Event: one observation, shaped like Riemann's."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable
from typing import Any


@functools.lru_cache(maxsize=1)
def defaultHostname() -> str:
    """This machine's name, looked up once per process."""
    return socket.getfqdn()


class Event:
    """One observation: Riemann's event, as sources create and outputs send.

    :param state: a short string such as ``ok``, ``warning`` or ``critical``.
    :param service: the service name, for example ``cpu`` or ``disk.sda.reads``.
    :param description: free text.
    :param metric: an int or a float, or None.
    :param ttl: seconds the event stays valid.
    :param tags: a list of strings.
    :param hostname: the host; defaults to this machine's name.
    :param aggregation: a function of ``(previous, current, seconds)``
        (see `duct.aggregators`) that turns this sample into a rate.
    :param evtime: seconds since the epoch, with microseconds; defaults to now.
    :param attributes: a mapping of string keys to string values.
    :param type: ``metric`` or ``log``.
    """

    __slots__ = (
        "state",
        "service",
        "description",
        "metric",
        "ttl",
        "tags",
        "hostname",
        "aggregation",
        "time",
        "attributes",
        "type",
    )

    def __init__(
        self,
        state: str | None,
        service: str,
        description: str | None,
        metric: float | None,
        ttl: float | None,
        tags: list[str] | None = None,
        hostname: str | None = None,
        aggregation: Callable[[float, float, float], float | None] | None = None,
        evtime: float | None = None,
        attributes: dict[str, str] | None = None,
        type: str = "metric",
    ) -> None:
        self.state = state
        self.service = service
        self.description = description
        self.metric = metric
        self.ttl = ttl
        self.tags = tags if tags is not None else []
        self.hostname = hostname or defaultHostname()
        self.aggregation = aggregation
        self.time = time.time() if evtime is None else evtime
        self.attributes = attributes
        self.type = type

    def eid(self) -> str:
        """The identity of the series this event belongs to: host and service."""
        return f"{self.hostname}.{self.service}"

    id = eid  # the name older plugins call

    def copyWithMetric(self, metric: float | None) -> Event:
        """A copy of this event with another metric and no aggregation."""
        return Event(
            self.state,
            self.service,
            self.description,
            metric,
            self.ttl,
            tags=list(self.tags),
            hostname=self.hostname,
            evtime=self.time,
            attributes=dict(self.attributes) if self.attributes is not None else None,
            type=self.type,
        )

    def asDict(self) -> dict[str, Any]:
        """The event as plain data, with Riemann's field names."""
        return {
            "host": self.hostname,
            "service": self.service,
            "state": self.state,
            "metric": self.metric,
            "ttl": self.ttl,
            "tags": list(self.tags),
            "attributes": dict(self.attributes or {}),
            "description": self.description,
            "time": self.time,
            "type": self.type,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<Event {self.hostname} {self.service} state={self.state!r} "
            f"metric={self.metric!r} time={self.time:.6f}>"
        )
