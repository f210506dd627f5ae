"""Checking ``queues:``, ``jobs:`` and ``job_retention:`` as the loader checks the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from duct.schema import ALLOWED_JOB_OPTIONS, JOBS_OPTIONS, QUEUE_OPTIONS, RETENTION_OPTIONS


def checkJobSettings(
    settings: dict[str, Any],
    file: str,
    check: Callable[..., tuple[dict[str, Any], bool]],
    problem: Callable[[str, str | None, str | None, str], None],
) -> None:
    """Validate the job keys of ``settings`` in place; each problem names its key.

    ``check(options, config, file, item, strict)`` and ``problem(file,
    item, key, message)`` are the loader's.
    """
    from duct.sources.command import commandArgv

    queues = settings.get("queues")
    if queues is not None:
        settings["queues"] = {
            str(name): check(QUEUE_OPTIONS, value if value is not None else {}, file,
                             f"queues.{name}", True)[0]
            for name, value in queues.items()
        }  # fmt: skip
    declared = {"default", *(settings.get("queues") or {})}
    for item in settings.get("sources") or []:
        config = getattr(item, "config", None)
        if not isinstance(config, dict) or not str(config.get("source", "")).endswith(
            "command.Command"
        ):
            continue
        queue = config.get("queue")
        if isinstance(queue, str) and queue not in declared:
            problem(item.file, item.label, "queue", f"no queue named {queue!r} in queues:")
    retention = settings.get("job_retention")
    if retention is not None:
        settings["job_retention"] = check(
            RETENTION_OPTIONS, retention, file, "job_retention", True
        )[0]
    jobs = settings.get("jobs")
    if jobs is None:
        return
    checked, _ = check(JOBS_OPTIONS, jobs, file, "jobs", True)
    allowed: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(checked.get("allow") or []):
        item = f"jobs.allow[{index}]"
        one, ok = check(ALLOWED_JOB_OPTIONS, entry, file, item, True)
        if not ok:
            continue
        try:
            commandArgv(one["command"], one["shell"])
        except ValueError as e:
            problem(file, item, "command", str(e))
            continue
        if one["queue"] not in declared:
            problem(file, item, "queue", f"no queue named {one['queue']!r} in queues:")
        if one["name"] in seen:
            problem(file, item, "name", f"{one['name']!r} is allowed twice")
        seen.add(one["name"])
        allowed.append(one)
    checked["allow"] = allowed
    settings["jobs"] = checked
