"""``python -m duct.workers --config FILE --number N --listens JSON``: one worker.

Started by `duct.workers.parent.WorkerPool`, never by hand.  The sockets
it adopts are inherited from fd 3 up; Twisted's ``systemd:`` endpoint
finds them through ``LISTEN_FDS`` and ``LISTEN_PID``, which must be set
before `twisted.internet.endpoints` is imported (it reads them then).
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m duct.workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--listens", required=True, help="the shared endpoints, as JSON")
    args = parser.parse_args()
    listens = [str(listen) for listen in json.loads(args.listens)]
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = str(len(listens))
    os.environ["LISTEN_FDNAMES"] = ":".join(f"duct{i}" for i in range(len(listens)))

    from duct.workers.worker import run

    raise SystemExit(run(args.config, args.number, listens))


if __name__ == "__main__":
    main()
