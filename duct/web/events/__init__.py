"""The live event stream, ``/events``.

- `duct.web.events.ring`: the numbered recent events the pipeline feeds;
- `duct.web.events.format`: a client's filter, and how each format writes;
- `duct.web.events.stream`: one client's stream, written as it reads;
- `duct.web.events.resource`: the resource and its query parameters.

The pipeline imports the ring alone, so nothing here imports twisted.web
until the resource is asked for.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("EventsResource", "eventsResource"):
        from duct.web.events import resource

        return getattr(resource, name)
    raise AttributeError(name)
