"""duct's statistics about itself: sources, outputs, the process, and totals.

Nothing here is counted per event.  The sources, outputs and buffers keep
their own counters (``polls``, ``sent``, ``buffer.drops``, ...), and
`snapshot` reads them when someone asks: ``/stats``, ``/metrics``,
``/health``, or the `duct.sources.selfstats.SelfStats` source.

Each statistic is declared once, as a `Stat`: its key in the snapshot, whether
it is a counter or a gauge, its Prometheus name, and how values of the same
statistic combine (its *roll-up*): ``sum``, ``min``, ``max`` or ``none``.
The totals across sources and outputs are computed from that declaration,
and so is `combine`, which merges snapshots taken in several processes.

Each class declares its statistics in a ``stats`` tuple, as it declares its
options: `SOURCE_STATS` on every source, `OUTPUT_STATS` on every output,
and a plugin's own beside them (`declaredStats` merges them over the class
hierarchy), so a new plugin's counters need no change here.

A snapshot is a plain dict that ``json.dumps`` takes as it is::

    {
      "time": 1700000000.0,                # the service clock's seconds
      "hostname": "web01",
      "process": {"pid": 4242, "start_time": ..., "uptime": ..., "rss_bytes": ...,
                  "cpu_seconds": ..., "open_fds": ..., "threads": ...},
      "sources": {"cpu": {"class": "duct.sources.linux.basic.CPU", "polls": 12, ...}},
      "outputs": {"riemann": {"class": "...", "events_sent": 1200,
                              "dropped": {"overflow": 3}, "connected": true, ...}},
      "totals": {"sources": {"count": 1, "polls": 12, ...},
                 "outputs": {"count": 1, "dropped": {"overflow": 3}, ...}},
      "plugins": {"audit": {"class": "audit.Audit", "running": true, "calls": 40,
                            "failures": 0, "dropped": 0, ...}}
    }

``plugins`` (`duct.pluginhost`) is there only when ``plugins:`` enables some.

A statistic an object does not have (``connected`` for an output that has
no connection, ``malformed`` for a source that is not a listener, a
``last_ack_latency`` before the first ack) is left out of its entry.
"""

from duct.stats.combine import combine, combineEntries, flatten, rollUp, totals
from duct.stats.declare import (
    KINDS,
    OUTPUT_STATS,
    PLUGIN_STATS,
    PROCESS_STATS,
    ROLLUPS,
    SOURCE_STATS,
    Stat,
    attribute,
    counter,
    declaredStats,
    entryStats,
    gauge,
    size,
)
from duct.stats.snapshot import className, processStats, read, snapshot, sourceKeys

__all__ = [
    "KINDS",
    "OUTPUT_STATS",
    "PLUGIN_STATS",
    "PROCESS_STATS",
    "ROLLUPS",
    "SOURCE_STATS",
    "Stat",
    "attribute",
    "className",
    "combine",
    "combineEntries",
    "counter",
    "declaredStats",
    "entryStats",
    "flatten",
    "gauge",
    "processStats",
    "read",
    "rollUp",
    "size",
    "snapshot",
    "sourceKeys",
    "totals",
]
