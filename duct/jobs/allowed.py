"""AllowedCommand: a command of ``jobs: {allow: [...]}``, run on demand by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred

from duct.jobs.job import Job, JobResult
from duct.jobs.queue import CannotRun
from duct.lib.commands import Commands


class AllowedCommand:
    """One allowed command: its argv is fixed by the configuration, never by a request.

    :param settings: one validated entry of ``jobs: {allow: [...]}``.
    :param duct: the service, whose reactor runs the command.
    """

    def __init__(self, settings: Mapping[str, Any], duct: Any, maxExecTime: float) -> None:
        from duct.sources.command import commandArgv

        self.name: str = settings["name"]
        self.queue: str = settings.get("queue") or "default"
        self.argv = commandArgv(settings["command"], bool(settings.get("shell")))
        self.timeout = float(settings.get("timeout") or maxExecTime + 1.0)
        self.commands = Commands({"timeout": self.timeout}, getattr(duct, "hostname", ""), duct)

    def work(self, job: Job) -> Deferred[JobResult]:
        return Deferred.fromCoroutine(self._execute(job))

    async def _execute(self, job: Job) -> JobResult:
        if self.commands.executable(self.argv[0]) is None:
            raise CannotRun(f"{self.argv[0]}: command not found")
        output = await self.commands.run(self.argv, self.timeout, job.output)
        outcome = "ok" if output.code == 0 else "failed"
        return JobResult(outcome, output.code, output.stdout, output.stderr)
