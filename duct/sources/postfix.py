"""postfix: the length of each of its queues, counted in the spool directory."""

from __future__ import annotations

import posixpath

from twisted.python.failure import Failure

from duct.aggregators import Rate
from duct.objects import Event, Source
from duct.options import Option
from duct.sources.network.http import failureReason

QUEUES = ("active", "deferred", "maildrop", "incoming", "corrupt", "hold", "bounce")


class Postfix(Source):
    """The messages in each of postfix's queues, here or over SSH.

    One ``find`` lists the files under each queue directory of ``spool``
    (reading them needs root, or the postfix user).  For each queue
    (``active``, ``deferred``, ``maildrop``, ``incoming``, ``corrupt``,
    ``hold``, ``bounce``): ``{service}.{queue}.value``, the messages in it,
    and ``{service}.{queue}.rate``, how fast that grows (negative as it
    drains), per second.  ``{service}.state``: 1, ``ok``, when the spool
    was read; 0, ``critical``, with the reason, when it could not be, or
    ``find`` took longer than ``timeout``.
    """

    ssh = True
    sync = True
    options = (Option("spool", "string", "/var/spool/postfix", "postfix's queue_directory"),)

    async def get(self) -> list[Event]:
        spool = self.config["spool"]
        argv = ["find", *(posixpath.join(spool, queue) for queue in QUEUES), "-type", "f"]
        try:
            code, out, err = await self.run(argv)
        except Exception:
            why = failureReason(Failure())
            return [self.createEvent("critical", f"postfix spool {spool}: {why}", 0, "state")]
        if code != 0:
            why = (err.strip() or f"find exited with status {code}").splitlines()[-1]
            return [self.createEvent("critical", f"postfix spool {spool}: {why}", 0, "state")]
        lengths = dict.fromkeys(QUEUES, 0)
        for path in out.splitlines():
            queue = posixpath.relpath(path, spool).split("/", 1)[0]
            if queue in lengths:
                lengths[queue] += 1
        events = []
        for queue, length in lengths.items():
            events.append(self.createEvent("ok", f"{queue} queue length", length, f"{queue}.value"))
            events.append(self.createEvent("ok", "Queue rate", length, f"{queue}.rate", None, Rate))
        return [*events, self.createEvent("ok", f"postfix spool {spool}", 1, "state")]
