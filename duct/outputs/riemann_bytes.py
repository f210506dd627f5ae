"""The base of an output that may keep its events as Riemann bytes.

An output whose wire format can be Riemann's (the HTTP output's
``format: riemann``, AMQP's default) sets ``acceptsEncoded`` from its
config.  When set, events are queued as their Riemann bytes, relayed
ones passing through unparsed, and a batch hands them back as
`EncodedEvents`; when not, it behaves as any `Output`.
"""

from __future__ import annotations

from typing import Any

from duct.event import Event
from duct.output import Output
from duct.outputs.riemann_common import encodeForQueue
from duct.protocol.riemann import EncodedEvents, sizesOf

__all__ = ["RiemannBytesOutput"]


class RiemannBytesOutput(Output):
    """An `Output` that queues Riemann bytes while ``acceptsEncoded`` is true."""

    def eventsReceived(self, events: list[Event] | EncodedEvents) -> int:
        """Queue events; as their Riemann bytes while ``acceptsEncoded``."""
        if not self.acceptsEncoded:
            return super().eventsReceived(events)  # type: ignore[arg-type]
        self.received += len(events)
        encoded, _, _, failed, error = encodeForQueue(events)
        if failed:
            self.dropUnencodable(events, failed, error)
        if not encoded:
            return 0
        kept = self.buffer.put(encoded, sizesOf(encoded))
        self.resumeWriting()
        return kept

    def batchEvents(self, batch: Any) -> Any:
        if self.acceptsEncoded:
            return EncodedEvents(list(batch.events))
        return batch.events
