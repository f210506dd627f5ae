"""Start a server process and return once its log says it is ready."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def startLogged(
    command: Sequence[str], cwd: Path, wanted: Sequence[str], log: Path, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """Start ``command``; return once its output has shown every string in ``wanted``.

    What the process prints goes on to ``log`` (from a thread, so that no
    pipe fills up).  Raises RuntimeError with the output if the process
    exits or ``timeout`` passes first.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
    stream = process.stdout
    assert stream is not None
    os.set_blocking(stream.fileno(), False)
    missing = list(wanted)
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while missing:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                stopProcess(process)
                text = b"".join(seen).decode(errors="replace")
                raise RuntimeError(f"{command[0]} did not start:\n{text}")
            if selector.select(left):
                seen.append(stream.read() or b"")
                text = b"".join(seen).decode(errors="replace")
                missing = [w for w in missing if w not in text]
    os.set_blocking(stream.fileno(), True)
    with log.open("ab") as sink:
        sink.write(b"".join(seen))

    def copy() -> None:
        with log.open("ab") as sink:
            for chunk in iter(lambda: stream.read1(65536), b""):
                sink.write(chunk)
                sink.flush()

    threading.Thread(target=copy, daemon=True).start()
    return process


def stopProcess(process: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    """SIGTERM, then wait (SIGKILL after ``timeout``)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
