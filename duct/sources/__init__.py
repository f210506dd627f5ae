"""Sources, one module per family.

``duct.sources.Duct``, the original duct's self-monitoring source, is
`duct.sources.selfstats.Duct`, imported when first asked for.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "Duct":
        from duct.sources.selfstats import Duct

        return Duct
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
