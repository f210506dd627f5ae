"""snmp: interface counters of an SNMP agent (IF-MIB), over v2c or v3, and an ADSL line."""

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
    options: tuple[Option, ...] = (
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

    def columns(self) -> list[str]:
        """The columns each poll walks."""
        return [IF_DESCR, *COLUMNS]

    def tableEvents(self, table: Table) -> list[Event]:
        """The events of one walk's answer."""
        return interfaceEvents(self, table)

    async def get(self) -> list[Event]:
        where = f"SNMP agent {self.target.host}:{self.target.port}"
        columns = self.columns()
        # Each of the columns may wait for every try; past that, the walk is abandoned.
        limit = self.target.timeout * (self.target.retries + 1) * len(columns) + 1

        def timedOut(result: object, seconds: float) -> Any:
            raise Timeout(f"no answer in {seconds:g}s")

        try:
            walking = self.walk(columns)
            table = await walking.addTimeout(limit, self.clock, onTimeoutCancel=timedOut)
        except Exception:
            why = failureReason(Failure())
            return [self.createEvent("critical", f"{where}: {why}", 0, "state")]
        return [*self.tableEvents(table), self.createEvent("ok", where, 1, "state")]

    def stopTimer(self) -> Any:
        """Stop polling, then close the SNMP engine's socket."""
        stopping = super().stopTimer()
        stopping.addCallback(lambda _: self.snmp.close())
        return stopping


ADSL = "1.3.6.1.2.1.10.94.1.1"
"""ADSL-LINE-MIB's tables (adslMibObjects.1)."""
ADSL_RATES = {  # column: (service, description), the channel's current rate in bit/s
    f"{ADSL}.4.1.2": ("adsl.rxrate", "SNMP ADSL sync downstream {value:.0f}"),
    f"{ADSL}.5.1.2": ("adsl.txrate", "SNMP ADSL sync upstream {value:.0f}"),
}
"""adslAtucChanCurrTxRate (the exchange sends: downstream), adslAturChanCurrTxRate (upstream)."""
ADSL_LINE = {  # column of adslAturPhysTable: (service, description), in tenths of a dB(m)
    f"{ADSL}.3.1.7": ("adsl.outpwr", "SNMP ADSL output power {value:0.2f}dBm"),
    f"{ADSL}.3.1.5": ("adsl.attn", "SNMP ADSL attenuation {value:0.2f}dB"),
    f"{ADSL}.3.1.4": ("adsl.margin", "SNMP ADSL noise margin {value:0.2f}dB"),
}
"""adslAturCurrOutputPwr, adslAturCurrAtn and adslAturCurrSnrMgn of the modem's end."""


def firstRow(rows: dict[str, tuple[str, int | str]], index: str | None) -> int | None:
    """The integer in row ``index``, or in the lowest row when ``index`` is None."""
    if index is None and rows:
        index = min(rows, key=lambda key: [int(part) for part in key.split(".")])
    kind, value = rows.get(index or "", ("", None))
    return value if isinstance(value, int) else None


class SNMPCisco837(SNMP):
    """An ADSL router such as a Cisco 837: its interfaces, as `SNMP` reads them, and its line.

    From ADSL-LINE-MIB: ``{service}.adsl.rxrate`` and ``.adsl.txrate``,
    the downstream and upstream sync rates (bit/s) of the first channel;
    ``.adsl.outpwr`` (dBm), ``.adsl.attn`` and ``.adsl.margin`` (dB) of
    the line ``adsl_index`` (the router's end).  ``{service}.adsl.state``
    is 1, ``ok``, when the agent has those figures, else 0, ``critical``.
    """

    options = (
        Option(
            "adsl_index",
            "integer",
            None,
            "ifIndex of the ADSL line (default: the first line the agent lists)",
            minimum=1,
        ),  # fmt: skip
    )

    def columns(self) -> list[str]:
        return [*super().columns(), *ADSL_RATES, *ADSL_LINE]

    def tableEvents(self, table: Table) -> list[Event]:
        events = super().tableEvents(table)
        line = self.config["adsl_index"]
        found = []
        for figures, index, scale in ((ADSL_RATES, None, 1.0), (ADSL_LINE, line, 10.0)):
            for column, (name, text) in figures.items():
                value = firstRow(table.get(column, {}), None if index is None else str(index))
                if value is not None:
                    found.append(self.createEvent("ok", text.format(value=value / scale),
                                                  value / scale, name))  # fmt: skip
        if len(found) < len(ADSL_RATES) + len(ADSL_LINE):
            where = "ADSL line" if line is None else f"ADSL line {line}"
            missing = f"the agent has no {where} (ADSL-LINE-MIB), or not all its figures"
            return [*events, *found, self.createEvent("critical", missing, 0, "adsl.state")]
        return [*events, *found, self.createEvent("ok", "ADSL line", 1, "adsl.state")]
