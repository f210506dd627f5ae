"""Running a source's commands and reading its files: on this machine, or over SSH.

`Commands` is what `duct.objects.Source.run` and ``readFile`` use.  With
``use_ssh`` false, a command runs here through `duct.lib.process.fork`
and a file is read directly.  With ``use_ssh`` true, both happen on the
source's SSH host, on the connection the agent shares for that host
(`duct.lib.ssh.SSHPool`): a command is sent as one shell command line, each
argument quoted, and a file is read with ``cat``.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred

from duct.lib.process import fork
from duct.lib.sshconfig import DEFAULT_TIMEOUT, SSHTarget, targetOf


class CommandOutput(NamedTuple):
    """A finished command: exit status (minus the signal number if killed), output as text."""

    code: int
    stdout: str
    stderr: str


class RemoteFileError(OSError):
    """A file on the SSH host could not be read."""


def shellLine(argv: Sequence[str]) -> bytes:
    """``argv`` as one command line for a POSIX shell, each argument quoted."""
    return " ".join(shlex.quote(arg) for arg in argv).encode("utf-8")


class Commands:
    """A source's way to run commands and read files, local or over SSH.

    :param config: the source's validated configuration (``use_ssh`` and
        the ``ssh_*`` options, ``timeout``).
    :param hostname: the host an ``ssh_host`` left unset defaults to.
    :param duct: the service: its ``reactor`` runs local commands and its
        ``ssh`` pool the remote ones.
    """

    def __init__(self, config: dict[str, Any], hostname: str, duct: Any) -> None:
        self.config = config
        self.duct = duct
        self.useSSH = bool(config.get("use_ssh"))
        self.host: str | None = (config.get("ssh_host") or hostname) if self.useSSH else None
        timeout = config.get("timeout")
        self.timeout = float(timeout) if isinstance(timeout, (int, float)) else DEFAULT_TIMEOUT
        self.sshFailures: int | None = 0 if self.useSSH else None
        """Commands and reads that could not reach the SSH host (connection, login or host key)."""
        self.sshHostKeyFailures: int | None = 0 if self.useSSH else None
        """Of those, the ones whose host key did not check."""
        self._target: SSHTarget | None = None

    @property
    def target(self) -> SSHTarget:
        """Where commands go over SSH (keys are loaded the first time)."""
        if self._target is None:
            assert self.host is not None, "use_ssh is off"
            self._target = targetOf(self.config, self.host)
        return self._target

    def run(
        self,
        argv: Sequence[str],
        timeout: float | None = None,
        onOutput: Callable[[str, bytes], None] | None = None,
    ) -> Deferred[CommandOutput]:
        """Run ``argv``; fails with `duct.lib.process.ProcessTimeout` past ``timeout`` seconds.

        ``onOutput`` is called with ``("stdout" or "stderr", bytes)`` as
        the output comes, here or over SSH.  Cancelling the Deferred kills
        the command.
        """
        if not argv:
            raise ValueError("no command to run")
        limit = self.timeout if timeout is None else timeout
        if self.useSSH:
            return Deferred.fromCoroutine(self._runRemote(list(argv), limit, onOutput))
        return Deferred.fromCoroutine(self._runLocal(list(argv), limit, onOutput))

    def executable(self, name: str) -> str | None:
        """The path a local command ``name`` runs from, or None if there is none."""
        return shutil.which(name, path=os.environ.get("PATH", os.defpath))

    async def _runLocal(
        self, argv: list[str], timeout: float, onOutput: Callable[[str, bytes], None] | None
    ) -> CommandOutput:
        path = os.environ.get("PATH", os.defpath)
        executable = shutil.which(argv[0], path=path) or argv[0]
        reactor = getattr(self.duct, "reactor", None)
        stdout, stderr, code = await fork(
            executable,
            argv[1:],
            env={"PATH": path},
            timeout=timeout,
            reactor=reactor,
            onOutput=onOutput,
        )
        return CommandOutput(code, stdout, stderr)

    async def _runRemote(
        self, argv: list[str], timeout: float, onOutput: Callable[[str, bytes], None] | None
    ) -> CommandOutput:
        code, stdout, stderr = await self._remote(shellLine(argv), timeout, onOutput)
        return CommandOutput(
            code, stdout.decode("utf-8", errors="replace"), stderr.decode("utf-8", errors="replace")
        )

    async def _remote(
        self,
        command: bytes,
        timeout: float,
        onOutput: Callable[[str, bytes], None] | None = None,
    ) -> Any:
        from duct.lib.sshhostkeys import HostKeyError, SSHError

        pool = getattr(self.duct, "ssh", None)
        if pool is None:
            raise SSHError("use_ssh: this agent has no SSH connections (duct.ssh)")
        try:
            return await pool.run(self.target, command, timeout, onOutput)
        except HostKeyError:
            self._count(hostKey=True)
            raise
        except SSHError:
            self._count()
            raise

    def _count(self, hostKey: bool = False) -> None:
        self.sshFailures = (self.sshFailures or 0) + 1
        if hostKey:
            self.sshHostKeyFailures = (self.sshHostKeyFailures or 0) + 1

    def readFile(self, path: str) -> Deferred[bytes]:
        """The bytes of file ``path``; OSError (`RemoteFileError` over SSH) if unreadable.

        Here the file is read at once, on the reactor's thread: this is for
        small files the kernel makes up as they are read (``/proc``,
        ``/sys``), which never wait for a disk.  Read a large or slow file
        with `run` (``cat``), or on a thread, instead.
        """
        if self.useSSH:
            return Deferred.fromCoroutine(self._readRemote(path))
        return Deferred.fromCoroutine(self._readLocal(path))

    async def _readLocal(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    async def _readRemote(self, path: str) -> bytes:
        code, stdout, stderr = await self._remote(shellLine(["cat", "--", path]), self.timeout)
        if code != 0:
            why = stderr.decode("utf-8", errors="replace").strip() or f"cat exited with {code}"
            raise RemoteFileError(f"ssh {self.target}: cannot read {path}: {why}")
        data: bytes = stdout
        return data
