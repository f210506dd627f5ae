"""The plugin API, under the names the original duct gave it.

Plugins import from here: ``from duct.objects import Event, Source, Output``.
Each class lives in a module of its own (`duct.event`, `duct.source`,
`duct.output`).
"""

from duct.event import Event, defaultHostname
from duct.output import Output
from duct.source import Source

# Their public home, for error messages, documentation and dotted paths.
for _cls in (Event, Output, Source):
    _cls.__module__ = __name__
del _cls

__all__ = ["Event", "Output", "Source", "defaultHostname"]
