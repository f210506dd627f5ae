"""snmp: interface counters of an SNMP agent (IF-MIB), over v2c or v3."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from duct.aggregators import Counter32, Counter64
from duct.lib.process import Timeout
from duct.lib.snmpclient import (
    AUTH_PROTOCOLS,
    PRIV_PROTOCOLS,
    SNMPClient,
    SNMPTarget,
    Table,
)
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason

IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
COLUMNS = {
    "1.3.6.1.2.1.2.2.1.8": "ifOperStatus",
    "1.3.6.1.2.1.2.2.1.10": "ifInOctets",
    "1.3.6.1.2.1.2.2.1.11": "ifInUcastPkts",
    "1.3.6.1.2.1.2.2.1.12": "ifInNUcastPkts",
    "1.3.6.1.2.1.2.2.1.13": "ifInDiscards",
    "1.3.6.1.2.1.2.2.1.14": "ifInErrors",
    "1.3.6.1.2.1.2.2.1.16": "ifOutOctets",
    "1.3.6.1.2.1.2.2.1.17": "ifOutUcastPkts",
    "1.3.6.1.2.1.2.2.1.18": "ifOutNUcastPkts",
    "1.3.6.1.2.1.2.2.1.19": "ifOutDiscards",
    "1.3.6.1.2.1.2.2.1.20": "ifOutErrors",
    "1.3.6.1.2.1.31.1.1.1.6": "ifHCInOctets",
    "1.3.6.1.2.1.31.1.1.1.7": "ifHCInUcastPkts",
    "1.3.6.1.2.1.31.1.1.1.10": "ifHCOutOctets",
    "1.3.6.1.2.1.31.1.1.1.11": "ifHCOutUcastPkts",
}
"""IF-MIB columns by OID: the ifTable's counters and status, and ifXTable's 64-bit counters."""

RATES = {"Counter32": Counter32, "Counter64": Counter64}
STATUS = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant", 6: "notPresent",
          7: "lowerLayerDown"}  # fmt: skip


def interfaceEvents(source: Source, table: Table) -> list[Event]:
    """An event for each interface (by ifDescr) and column the agent has."""
    names = {index: str(value) for index, (_, value) in table.get(IF_DESCR, {}).items()}
    events = []
    for column, key in COLUMNS.items():
        for index, (kind, value) in table.get(column, {}).items():
            if index not in names or not isinstance(value, int):
                continue
            iface = names[index]
            shown = STATUS.get(value, str(value)) if key == "ifOperStatus" else f"{value:0.2f}"
            events.append(source.createEvent("ok", f"SNMP interface {iface} {key}={shown}", value,
                                             f"{iface}.{key}", None, RATES.get(kind)))  # fmt: skip
    return events


class SNMP(Source):
    """Interface counters of the SNMP agent at ``ip:port``, over v2c or v3.

    With ``user``, SNMPv3: authPriv with ``auth_key`` and ``priv_key``,
    authNoPriv with ``auth_key`` alone; else v2c with ``community``.
    ``{service}.{ifDescr}.{column}`` for each interface: ``ifInOctets``,
    ``ifOutOctets``, the packet, error and discard counters, and the 64-bit
    ``ifHCInOctets``/``ifHCOutOctets`` where the agent has them, all as
    per-second rates (32-bit counters may wrap); ``ifOperStatus``: 1 up, 2
    down, ...  ``{service}.state``: 1, ``ok``, when the agent answered; 0,
    ``critical``, with the reason, when it did not answer in time or
    refused the credentials.
    """

    sync = True
    options = (
        Option("ip", "string", "127.0.0.1", "SNMP agent host"),
        Option("port", "integer", 161, "SNMP agent UDP port", minimum=1),
        Option("community", "string", "public", "v2c read community"),
        Option("user", "string", None, "v3 user name; with it, SNMPv3 is used"),
        Option("auth_key", "string", None, "v3 authentication passphrase"),
        Option("auth_protocol", "string", "SHA", "v3 authentication", choices=AUTH_PROTOCOLS),
        Option("priv_key", "string", None, "v3 privacy (encryption) passphrase"),
        Option("priv_protocol", "string", "AES", "v3 privacy", choices=PRIV_PROTOCOLS),
        Option("timeout", "number", 5.0, "seconds to wait for each response", above=0),
        Option(
            "retries", "integer", 1, "times to resend a request that got no response", minimum=0
        ),  # fmt: skip
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.target = SNMPTarget(config["ip"], config["port"], config["community"],
                                 config["user"], config["auth_key"], config["auth_protocol"],
                                 config["priv_key"], config["priv_protocol"],
                                 float(config["timeout"]), config["retries"])  # fmt: skip
        self.snmp = SNMPClient(self.duct.reactor, self.target)

    def walk(self, columns: list[str]) -> Any:
        """The agent's rows of ``columns`` (a Deferred `Table`)."""
        return self.snmp.walk(columns)

    async def get(self) -> list[Event]:
        where = f"SNMP agent {self.target.host}:{self.target.port}"
        # Each of the columns may wait for every try; past that, the walk is abandoned.
        limit = self.target.timeout * (self.target.retries + 1) * (len(COLUMNS) + 1) + 1

        def timedOut(result: object, seconds: float) -> Any:
            raise Timeout(f"no answer in {seconds:g}s")

        try:
            walking = self.walk([IF_DESCR, *COLUMNS])
            table = await walking.addTimeout(limit, self.clock, onTimeoutCancel=timedOut)
        except Exception:
            why = failureReason(Failure())
            return [self.createEvent("critical", f"{where}: {why}", 0, "state")]
        return [*interfaceEvents(self, table), self.createEvent("ok", where, 1, "state")]

    def stopTimer(self) -> Any:
        """Stop polling, then close the SNMP engine's socket."""
        stopping = super().stopTimer()
        stopping.addCallback(lambda _: self.snmp.close())
        return stopping
