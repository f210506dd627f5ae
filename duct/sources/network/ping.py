"""Ping: packet loss and round-trip time, from the system's ``ping``."""

from __future__ import annotations

import re
from typing import NamedTuple

from duct.objects import Event, Source
from duct.options import Option

_SENT = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_RTT = re.compile(r"= *([\d.]+)/([\d.]+)/([\d.]+)")


class Summary(NamedTuple):
    """What ``ping`` says at its end: packets sent and received, the mean round trip in ms."""

    transmitted: int
    received: int
    average: float | None

    @property
    def loss(self) -> float:
        return 100.0 * (1 - self.received / self.transmitted) if self.transmitted else 100.0


def parseSummary(output: str) -> Summary | None:
    """The summary of ``ping``'s output (iputils, BusyBox or BSD), or None if there is none."""
    sent = _SENT.search(output)
    if sent is None:
        return None
    rtt = _RTT.search(output[sent.end() :])
    return Summary(int(sent[1]), int(sent[2]), float(rtt[2]) if rtt else None)


class Ping(Source):
    """Pings ``destination`` with the system's ``ping`` (iputils-ping on Debian).

    ``ping -n -c COUNT -i WAIT -w TIMEOUT DESTINATION`` runs through the
    source's commands, so with ``use_ssh`` it runs on the SSH host, and its
    summary lines are read:

    - ``{service}.loss``: percent of the packets that got no reply;
    - ``{service}.latency``: the mean round trip in milliseconds, when any
      reply came.

    The loss is ``critical`` when no reply came at all, or when ``ping``
    could not run (a name that does not resolve, no route); the
    description says why.  Set a rule for a partial loss, such as
    ``critical: {'gw\\.loss': "> 20"}``.
    """

    sync = True
    options = (
        Option(
            "destination",
            "string",
            None,
            "host name or address to ping (default: the source's hostname)",
        ),  # fmt: skip
        Option("count", "integer", 5, "packets to send", minimum=1),
        Option("wait", "number", 1.0, "seconds between packets (ping -i)", minimum=0.2),
        Option("timeout", "number", 10.0, "seconds ping may run in all (ping -w)", minimum=1),
    )

    async def get(self) -> list[Event]:
        destination = self.config["destination"] or self.hostname
        count, wait = self.config["count"], self.config["wait"]
        deadline = int(self.config["timeout"])
        argv = ["ping", "-n", "-c", str(count), "-i", f"{wait:g}", "-w", str(deadline),
                destination]  # fmt: skip
        result = await self.run(argv, timeout=deadline + 5)
        summary = parseSummary(result.stdout)
        if summary is None:
            why = (result.stderr or result.stdout).strip().splitlines()
            reason = why[-1] if why else f"ping exited with {result.code}"
            return [self.createEvent("critical", f"{destination}: {reason}", 100.0, "loss")]
        loss = summary.loss
        state = "critical" if summary.received == 0 else "ok"
        description = (
            f"{loss:.0f}% loss to {destination} "
            f"({summary.received} of {summary.transmitted} replies)"
        )
        events = [self.createEvent(state, description, loss, "loss")]
        if summary.average is not None and summary.received:
            events.append(self.createEvent("ok", f"latency to {destination}: "
                                           f"{summary.average:g} ms", summary.average,
                                           "latency"))  # fmt: skip
        return events
