"""A server process for the tests: started, awaited until it logs that it is ready, stopped.

The process's output goes through a pipe that a thread drains into a log
file, watching for the line that says the server is ready; `start`
returns once it appears (or fails at the deadline, with the log), so no
test waits a guessed time.  `stop` terminates the process and waits for
it; `start` again runs it afresh with the same command (same port, same
data), for the tests of a destination that goes away and comes back.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

DEADLINE = 60.0
"""Seconds a server may take to say it is ready."""


class ServerProcess:
    """One server: ``command`` run with its output in ``log``, ready once ``ready`` is logged."""

    def __init__(self, command: Sequence[str], ready: str, log: Path) -> None:
        self.command = list(command)
        self.ready = ready
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float = DEADLINE) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        seen = threading.Event()
        process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.process = process
        marker = self.ready.encode()

        def drain() -> None:
            assert process.stdout is not None
            with self.log.open("ab") as out:
                for line in process.stdout:
                    out.write(line)
                    out.flush()
                    if marker in line:
                        seen.set()
            seen.set()  # the process ended: start() sees it did not get ready

        threading.Thread(target=drain, name=f"drain {self.command[0]}", daemon=True).start()
        if not seen.wait(deadline) or process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{self.command[0]} did not start:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """What the server logged so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
