"""ipsec: whether each strongSwan connection has an IKE SA up, from ``ipsec statusall``."""

from __future__ import annotations

from twisted.python.failure import Failure

from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason


def tunnels(status: str) -> dict[str, tuple[str, bool]]:
    """``{connection: (its addresses, up)}`` from ``ipsec statusall``.

    A connection is one of the ``Connections:`` section (``name:
    local...remote``); it is up when an SA of the ``Security
    Associations`` section is named after it and ESTABLISHED.
    """
    found: dict[str, tuple[str, bool]] = {}
    section = ""
    for line in status.splitlines():
        text = line.strip()
        if not line.startswith(" "):
            section = text
            continue
        name, sep, detail = text.partition(": ")
        if not sep:
            continue
        detail = detail.strip()
        if section == "Connections:":
            addresses = detail.split()[0] if detail else ""
            if "..." in addresses and name not in found:
                found[name] = (addresses, False)
        elif section.startswith("Security Associations"):
            connection = name.split("[")[0].split("{")[0]
            if connection in found and detail.startswith("ESTABLISHED"):
                found[connection] = (found[connection][0], True)
    return found


class StrongSwan(Source):
    """Each strongSwan connection's state, from ``ipsec statusall`` (through sudo), or over SSH.

    ``{service}.{connection}``: 1, ``ok``, when an IKE SA of the
    connection is ESTABLISHED; else 0, ``critical``.  ``{service}.state``:
    1, ``ok``, when charon answered; 0, ``critical``, with the reason,
    when ``ipsec`` failed, charon is not running, or it took longer than
    ``timeout``.
    """

    ssh = True
    sync = True
    options = (
        Option("executable", "string", "ipsec", "the ipsec command of strongSwan"),
        Option("sudo", "boolean", True, "run it through sudo (charon's socket is root's)"),
    )

    def command(self) -> list[str]:
        argv = [self.config["executable"], "statusall"]
        return ["sudo", "-n", *argv] if self.config["sudo"] else argv

    async def get(self) -> list[Event]:
        argv = self.command()
        try:
            code, out, err = await self.run(argv)
        except Exception:
            why = failureReason(Failure())
            return [self.createEvent("critical", f"ipsec statusall: {why}", 0, "state")]
        if "Connections:" not in out:
            lines = [line.strip() for line in err.splitlines() if line.strip()]
            lines = [line for line in lines if not line.startswith("plugin '")] or lines
            why = lines[-1] if lines else f"charon is not running (exit status {code})"
            return [self.createEvent("critical", f"ipsec statusall: {why}", 0, "state")]
        events = []
        for name, (addresses, up) in tunnels(out).items():
            if up:
                events.append(self.createEvent("ok", f"IPSec tunnel {name} up", 1, name))
            else:
                down = f"IPSec tunnel {name} down ({addresses})"
                events.append(self.createEvent("critical", down, 0, name))
        return [*events, self.createEvent("ok", "ipsec statusall", 1, "state")]
