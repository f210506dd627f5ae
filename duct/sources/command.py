"""Command: run a command each interval and turn what it says into events.

``format: nagios`` (the default) reads the Nagios plugin protocol, so the
``monitoring-plugins`` checks run unchanged; ``format: json`` reads events
from the command's JSON output; ``format: metric`` reads one number.  Each
run is a job in a queue (`duct.jobs`), so ``queues:`` bounds how many run
at once and how long each may take.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred

from duct.event import Event
from duct.jobs.job import Job, JobResult
from duct.jobs.queue import CannotRun
from duct.jobs.registry import DEFAULT_QUEUE, Jobs, jobsOf
from duct.lib import nagios
from duct.lib.commands import CommandOutput
from duct.options import REQUIRED, Option
from duct.source import Source
from duct.stats import counter

FORMATS = ("nagios", "json", "metric")
EVENT_FIELDS = ("state", "service", "description", "metric", "ttl", "tags", "attributes")


def commandArgv(command: Any, shell: bool) -> list[str]:
    """The argv ``command`` (a list of arguments or a string) runs as.

    A string is split as a shell would (`shlex`), unless ``shell`` is true:
    then it runs through ``/bin/sh -c``, a list joined into one line first.
    """
    if isinstance(command, str):
        line = command
        argv = ["/bin/sh", "-c", line] if shell else shlex.split(line)
    elif isinstance(command, list) and all(isinstance(arg, str) for arg in command):
        argv = ["/bin/sh", "-c", shlex.join(command)] if shell else list(command)
    else:
        raise ValueError(f"expected a list of arguments or a string, got {command!r}")
    if not argv or not argv[-1 if shell else 0]:
        raise ValueError("the command is empty")
    return argv


class Command(Source):
    """Runs ``command`` every ``interval`` seconds, here or with ``use_ssh`` on the SSH host.

    With ``format: nagios`` the exit status gives the state of the event
    ``{service}`` (0 ok, 1 warning, 2 critical, 3 unknown; another status
    is unknown, a signal critical, and the description says so), the first
    line of output before ``|`` its description; each performance datum
    becomes ``{service}.{label}``, its unit, thresholds and range as
    attributes and its state from its thresholds.

    With ``format: json`` the output is an object or a list of objects,
    each with Event fields (``state``, ``service``: a suffix of the
    configured one, ``description``, ``metric``, ``ttl``, ``tags``,
    ``attributes``).  With ``format: metric`` it is one number, the metric
    of ``{service}``.  A run that could not start, that exited nonzero
    without the Nagios protocol, or that was killed past its queue's
    ``max_exec_time`` makes ``{service}`` critical with the reason.

    A run whose previous one has not ended is skipped and counted.
    """

    options = (
        Option("command", "any", REQUIRED, "the command: a list of arguments, or a string"),
        Option("shell", "boolean", False, "run the command through /bin/sh -c"),
        Option("format", "string", "nagios", "how to read the output", choices=FORMATS),
        Option("queue", "string", DEFAULT_QUEUE, "the queue (of queues:) each run waits in"),
    )
    stats = (
        counter("runs_skipped", "runsSkipped", "runs_skipped", "runs skipped: the last not ended"),
    )

    @classmethod
    def optionProblems(cls, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        try:
            commandArgv(config.get("command"), bool(config.get("shell")))
        except ValueError as e:
            return [("command", str(e))]
        return []

    def __init__(self, config: dict[str, Any], queueBack: Any, duct: Any) -> None:
        super().__init__(config, queueBack, duct)
        self.argv = commandArgv(self.config["command"], self.config["shell"])
        self.format: str = self.config["format"]
        self.queueName: str = self.config["queue"]
        self.jobs: Jobs = jobsOf(duct)
        self.jobs.queue(self.queueName)  # raises for a queue queues: does not declare
        self.jobs.checks[self.service] = self
        self.current: Job | None = None
        self.runsSkipped = 0

    def stopTimer(self) -> Deferred[Any]:
        if self.jobs.checks.get(self.service) is self:
            del self.jobs.checks[self.service]
        return super().stopTimer()

    # -- polling ---------------------------------------------------------------

    async def get(self) -> list[Event] | None:
        if self.current is not None and not self.current.ended:
            self.runsSkipped += 1
            self.jobs.queue(self.queueName).skip()
            self.log.info(
                "{source}: the last run ({job}) has not ended; this one is skipped",
                source=self.service,
                job=self.current.id,
            )
            return None
        job = self.current = self.submit()
        await job.whenEnded()
        return self.eventsOf(job)

    def submit(self) -> Job:
        """Queue one run as a job; its result carries the events it made."""
        return self.jobs.submit(self.service, self.queueName, self.work)

    def runNow(self) -> Job:
        """A run on demand: a job whose events are sent as a poll's are."""
        job = self.submit()
        job.whenEnded().addCallback(lambda ended: self._emit(self.eventsOf(ended)))
        return job

    def work(self, job: Job) -> Deferred[JobResult]:
        return Deferred.fromCoroutine(self._execute(job))

    async def _execute(self, job: Job) -> JobResult:
        if not self.useSSH and self.commands.executable(self.argv[0]) is None:
            raise CannotRun(f"{self.argv[0]}: command not found")
        limit = self.config["timeout"] or self.jobs.queue(self.queueName).maxExecTime + 1.0
        output = await self.commands.run(self.argv, limit, job.output)
        events = self.parse(output)
        outcome = "ok" if output.code == 0 else "failed"
        return JobResult(
            outcome,
            output.code,
            output.stdout,
            output.stderr,
            events=events,
        )

    def eventsOf(self, job: Job) -> list[Event]:
        """The events of an ended job: those its output made, or why it made none."""
        result = job.result
        if result is None:
            return []
        if job.state == "finished":
            return list(result.events)
        reason = result.reason or job.state
        return [self.createEvent("critical", f"{job.state}: {reason}", None)]

    # -- reading output -------------------------------------------------------------

    def parse(self, output: CommandOutput) -> list[Event]:
        if self.format == "json":
            return self.parseJSON(output)
        if self.format == "metric":
            return self.parseMetric(output)
        return self.parseNagios(output)

    def parseNagios(self, output: CommandOutput) -> list[Event]:
        state, why = nagios.stateOf(output.code)
        plugin = nagios.parseOutput(output.stdout)
        description = plugin.summary or output.stderr.strip().split("\n")[0]
        if why:
            description = f"{description} ({why})" if description else why
        events = [self.createEvent(state, description, float(output.code))]
        for datum in plugin.perfdata:
            attributes = {"unit": datum.unit} if datum.unit else {}
            for key in ("warn", "crit", "min", "max"):
                value = getattr(datum, key)
                if value is not None:
                    attributes[key] = f"{value:g}" if isinstance(value, float) else value
            events.append(
                self.createEvent(
                    nagios.datumState(datum),
                    f"{datum.label}: {plugin.summary}",
                    datum.value,
                    datum.label,
                    attributes=attributes,
                )
            )
        return events

    def parseMetric(self, output: CommandOutput) -> list[Event]:
        text = output.stdout.strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            why = f"output is not a number: {text[:200]!r}"
            return [self.createEvent("critical", self._exitNote(output, why), None)]
        state = "ok" if output.code == 0 else "critical"
        return [self.createEvent(state, self._exitNote(output, text), value)]

    def parseJSON(self, output: CommandOutput) -> list[Event]:
        try:
            data = json.loads(output.stdout)
        except ValueError as e:
            why = f"output is not JSON: {e}"
            return [self.createEvent("critical", self._exitNote(output, why), None)]
        items = data if isinstance(data, list) else [data]
        events: list[Event] = []
        for item in items:
            if not isinstance(item, dict):
                why = f"expected an object, got {json.dumps(item)[:200]}"
                return [self.createEvent("critical", self._exitNote(output, why), None)]
            events.append(self._jsonEvent(item))
        if output.code != 0:
            events.append(self.createEvent("critical", self._exitNote(output, ""), None))
        return events

    def _jsonEvent(self, item: dict[str, Any]) -> Event:
        metric = item.get("metric")
        if isinstance(metric, bool) or not isinstance(metric, (int, float)):
            metric = None
        tags = item.get("tags")
        attributes = item.get("attributes")
        event = self.createEvent(
            str(item["state"]) if item.get("state") is not None else None,
            str(item["description"]) if item.get("description") is not None else None,
            metric,
            str(item["service"]) if item.get("service") else None,
            attributes=attributes if isinstance(attributes, dict) else None,
            tags=[str(t) for t in tags] if isinstance(tags, list) else None,
        )
        ttl = item.get("ttl")
        if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0:
            event.ttl = float(ttl)
        return event

    def _exitNote(self, output: CommandOutput, text: str) -> str:
        if output.code == 0:
            return text
        err = output.stderr.strip().split("\n")[-1]
        note = f"exited with {output.code}" + (f": {err}" if err else "")
        return f"{text} ({note})" if text else note
