"""Walking SNMP tables with pysnmp, v2c or v3 (USM), on the shared asyncio loop.

`SNMPClient.walk` fires, in the reactor thread, with plain values:
``{column OID: {row index: (type name, value)}}``, where the type name is
pysnmp's (``Counter32``, ``Counter64``, ``OctetString``, ``Integer``...)
and the value an int or a str.  Its engine (and what v3 discovery learnt
of the agent) lives on the loop's thread and is kept between walks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from duct.lib.asyncioloop import runOnLoop

Table = dict[str, dict[str, tuple[str, int | str]]]

AUTH_PROTOCOLS = ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
PRIV_PROTOCOLS = ("DES", "AES", "AES192", "AES256")
MISSING = ("EndOfMibView", "NoSuchObject", "NoSuchInstance", "Null")


class SNMPError(Exception):
    """The agent did not answer, or refused the request."""


@dataclass(frozen=True)
class SNMPTarget:
    """Where and how to ask: ``community`` for v2c, or ``user`` (with keys) for v3."""

    host: str
    port: int
    community: str | None = None
    user: str | None = None
    authKey: str | None = None
    authProtocol: str = "SHA"
    privKey: str | None = None
    privProtocol: str = "AES"
    timeout: float = 5.0
    retries: int = 1


def _authData(target: SNMPTarget) -> Any:
    from pysnmp.hlapi.v3arch.asyncio import auth

    if target.user is None:
        return auth.CommunityData(target.community or "public", mpModel=1)  # v2c
    authProtocol = privProtocol = None
    if target.authKey is not None:
        name = "HMAC96_" if target.authProtocol in ("MD5", "SHA") else "HMAC"
        suffix = {"SHA224": "128SHA224", "SHA256": "192SHA256", "SHA384": "256SHA384",
                  "SHA512": "384SHA512"}.get(target.authProtocol, target.authProtocol)  # fmt: skip
        authProtocol = getattr(auth, f"USM_AUTH_{name}{suffix}")
    if target.privKey is not None:
        privName = {"DES": "CBC56_DES", "AES": "CFB128_AES", "AES192": "CFB192_AES",
                    "AES256": "CFB256_AES"}[target.privProtocol]  # fmt: skip
        privProtocol = getattr(auth, f"USM_PRIV_{privName}")
    return auth.UsmUserData(target.user, target.authKey, target.privKey,
                            authProtocol=authProtocol, privProtocol=privProtocol)  # fmt: skip


def _plain(value: Any) -> tuple[str, int | str] | None:
    kind = type(value).__name__
    if kind in MISSING:
        return None
    if kind in ("OctetString", "DisplayString"):
        return kind, value.asOctets().decode("utf-8", "replace")
    try:
        return kind, int(value)
    except (TypeError, ValueError):
        return kind, value.prettyPrint()


class SNMPClient:
    """Walks tables of one agent; one engine, kept on the loop's thread."""

    def __init__(self, reactor: Any, target: SNMPTarget) -> None:
        self.reactor = reactor
        self.target = target
        self._engine: Any = None

    def walk(self, columns: Sequence[str]) -> Deferred[Table]:
        """Every row of each column (numeric OIDs); SNMPError if the agent fails us."""
        return runOnLoop(self.reactor, lambda: self._walk(list(columns)))

    async def _walk(self, columns: list[str]) -> Table:
        from pysnmp.hlapi.v3arch.asyncio import (
            ContextData,
            ObjectIdentity,
            ObjectType,
            SnmpEngine,
            UdpTransportTarget,
            bulk_walk_cmd,
        )

        target = self.target
        if self._engine is None:
            self._engine = SnmpEngine()
        transport = await UdpTransportTarget.create(
            (target.host, target.port), timeout=target.timeout, retries=target.retries
        )
        authData = _authData(target)
        table: Table = {}
        for column in columns:
            rows = table.setdefault(column, {})
            walking = bulk_walk_cmd(self._engine, authData, transport, ContextData(), 0, 25,
                                    ObjectType(ObjectIdentity(column)), lookupMib=False,
                                    lexicographicMode=False)  # fmt: skip
            async for errorIndication, errorStatus, _index, varBinds in walking:
                if errorIndication:
                    raise SNMPError(str(errorIndication))
                if errorStatus:
                    raise SNMPError(f"{errorStatus.prettyPrint()} at {column}")
                for oid, value in varBinds:
                    name = str(oid)
                    plain = _plain(value)
                    if plain is not None and name.startswith(column + "."):
                        rows[name[len(column) + 1 :]] = plain
        return table

    def close(self) -> Deferred[None]:
        """Close the engine's sockets, on the loop's thread."""

        async def close() -> None:
            if self._engine is not None:
                self._engine.close_dispatcher()
                self._engine = None

        return runOnLoop(self.reactor, close)
