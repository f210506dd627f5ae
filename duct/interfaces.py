"""The interfaces a source, an output and a plugin provide, and what they may use of the service."""

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


class IDuctPlugin(Interface):
    """A plugin enabled by module name in ``plugins:`` (see `duct.plugin`)."""

    config = Attribute("This plugin's validated options (a dict, with ``plugin``).")
    name = Attribute("The plugin's module name, as ``plugins:`` names it.")

    def initialize():  # type: ignore[misc]
        """Set up; may return a Deferred or a coroutine."""

    def start():  # type: ignore[misc]
        """Begin the plugin's work once initialized, without waiting for it to end."""

    def close():  # type: ignore[misc]
        """Stop the work and release what initialize set up; may be async."""

    def webRoutes():  # type: ignore[misc]
        """Resources to serve by path segment (an empty mapping for none)."""


class IDuctEventPlugin(IDuctPlugin):
    """A plugin called with the routed events of the types it handles."""

    eventTypes = Attribute("The event types it handles (a tuple of strings), or None for all.")

    def eventsReceived(events):
        """Handle one batch of events; may return a Deferred or a coroutine."""


class IDuct(Interface):
    """What a source or output may use of the service it runs in (its ``duct``).

    `duct.service.DuctService` provides it, and so does
    `duct.testing.FakeDuct`.
    """

    clock = Attribute("IReactorTime for timers and timestamps: the reactor, or a Clock in tests.")
    reactor = Attribute(
        "The reactor for connections, listeners, processes and threads"
        " (a MemoryReactorClock in duct.testing)."
    )
    hostname = Attribute("The host name events carry unless a source sets its own.")
    config = Attribute(
        "The service's validated configuration, a mapping: state_dir, ttl, interval, ..."
    )

    def accepting(source):
        """Whether every output ``source`` feeds with overflow: block has room now."""
