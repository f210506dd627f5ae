"""``python -m duct.workers --config FILE --number N --adopted JSON [--handoff-fd 3]``.

One worker, started by `duct.workers.parent.WorkerPool`, never by hand.
``--adopted`` maps each endpoint the worker shares to what it listens on
instead (`duct.workers.endpoints.adoptedListen`); ``--handoff-fd`` is its
end of the socket pair that brings it connections.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m duct.workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--adopted", required=True, help="endpoint -> what to listen on, as JSON")
    parser.add_argument("--handoff-fd", type=int, help="the socket pair bringing connections")
    args = parser.parse_args()
    adopted = {str(k): str(v) for k, v in json.loads(args.adopted).items()}

    from duct.workers.worker import run

    raise SystemExit(run(args.config, args.number, adopted, args.handoff_fd))


if __name__ == "__main__":
    main()
