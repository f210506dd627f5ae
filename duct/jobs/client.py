"""``duct job``: run, show and cancel jobs on a running agent, through its web port.

This is the command line's client: it blocks, and prints.  Following a
job reads its stream as JSON lines; after a dropped connection it asks
again with ``since`` the last line number it printed, so no line is
printed twice or missed.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import IO, Any

DEFAULT_URL = "http://127.0.0.1:8901"
RETRIES = 5
EXIT_CODES = {"ok": 0, "failed": 1}
"""A job's exit code by outcome; any other outcome (killed, cancelled, ...) exits 2."""


class JobClient:
    """Talks to ``url`` (the agent's web server), with ``token`` if it requires one."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        return urllib.request.urlopen(request, timeout=timeout or self.timeout)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            with self._open(method, path, body) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            try:
                why = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                why = e.reason
            raise SystemExit(f"{method} {path}: {e.code} {why}") from None
        except urllib.error.URLError as e:
            raise SystemExit(f"cannot reach the agent at {self.url}: {e.reason}") from None

    def submit(self, name: str) -> str:
        jobId: str = self.call("POST", "/api/jobs", {"check": name})["id"]
        return jobId

    def show(self, jobId: str) -> Any:
        return self.call("GET", f"/api/jobs/{jobId}")

    def cancel(self, jobId: str) -> Any:
        return self.call("DELETE", f"/api/jobs/{jobId}")

    def follow(self, jobId: str, onLine: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Print each line as it comes, resuming after a drop; the ended job."""
        since, failures = 0, 0
        while True:
            try:
                with self._open("GET", f"/api/jobs/{jobId}/stream?since={since}") as response:
                    for raw in response:
                        if not raw.strip():
                            continue
                        item = json.loads(raw)
                        if "result" in item:
                            ended: dict[str, Any] = item["result"]
                            return ended
                        if item["seq"] > since:
                            since = item["seq"]
                            onLine(item)
                        failures = 0
            except urllib.error.HTTPError as e:
                raise SystemExit(f"job {jobId}: {e.code} {e.reason}") from None
            except (OSError, ValueError) as e:
                failures += 1
                if failures > RETRIES:
                    raise SystemExit(f"job {jobId}: the stream keeps failing: {e}") from None
                time.sleep(min(0.2 * 2**failures, 5))


def printLine(item: dict[str, Any], out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> None:
    (err if item.get("stream") == "stderr" else out).write(item["line"] + "\n")


def exitCode(job: dict[str, Any]) -> int:
    outcome = (job.get("result") or {}).get("outcome")
    return EXIT_CODES.get(outcome or "", 2)
