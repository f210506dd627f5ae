"""The interfaces a source and an output provide."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IDuctSource(Interface):
    """Something that produces events, by polling or by listening."""

    config = Attribute("This source's validated configuration (a dict).")
    service = Attribute("The service name that prefixes every event.")
    interval = Attribute("Seconds between polls.")

    def get():  # type: ignore[misc]
        """Poll once: an Event, a list of Events, None, a Deferred, or a coroutine."""

    def startTimer():  # type: ignore[misc]
        """Start polling (or listening)."""

    def stopTimer():  # type: ignore[misc]
        """Stop; the result fires once the poll in flight has finished."""

    def createEvent(
        state,
        description,
        metric,
        prefix=None,
        hostname=None,
        aggregation=None,
        evtime=None,
        attributes=None,
        tags=None,
    ):
        """Build an Event named after this source, with per-event attributes and tags."""


class IDuctOutput(Interface):
    """Something that delivers events to a destination."""

    buffer = Attribute("The bounded buffer events wait in until delivered.")

    def createClient():  # type: ignore[misc]
        """Connect to the destination; may return a Deferred or a coroutine."""

    def eventsReceived(events):
        """Accept a list of events for delivery."""

    def stop():  # type: ignore[misc]
        """Close the destination; may return a Deferred or a coroutine."""
