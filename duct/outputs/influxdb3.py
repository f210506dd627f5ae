"""InfluxDB3: the InfluxDB output with InfluxDB 3's write API and its own option names."""

from __future__ import annotations

from typing import Any

from duct.options import Option
from duct.outputs.influxdb import PRECISION_NAMES, InfluxDB

__all__ = ["InfluxDB3"]


class InfluxDB3(InfluxDB):
    """Write events to InfluxDB 3 (``/api/v3/write_lp``), as the `InfluxDB` output does.

    The same points and the same delivery as `InfluxDB` with ``api: v3``;
    `token` goes as a Bearer token.  `interval`, when set, is the seconds
    a partial batch may wait (`flush_interval`), and `maxrate` limits the
    events written a second; 0 means no limit.
    """

    options = (
        Option(
            "api", "string", "v3", "write API (v3: /api/v3/write_lp)", choices=("v1", "v2", "v3")
        ),
        Option(
            "precision",
            "string",
            "nanosecond",
            "timestamp precision: nanosecond, microsecond, millisecond or second",
            choices=tuple(PRECISION_NAMES),
        ),
        Option(
            "interval",
            "number",
            None,
            "seconds a partial batch may wait (default: flush_interval)",
            minimum=0,
        ),
        Option("maxrate", "number", None, "most events written a second (0 or unset: no limit)"),
    )

    def __init__(self, config: dict[str, Any], duct: Any) -> None:
        super().__init__(config, duct)
        interval = self.config["interval"]
        if interval is not None:
            self.flushInterval = float(interval)
