"""``/api/jobs``: submit a job, see it, follow its output, cancel it.

- ``POST /api/jobs`` with ``{"check": NAME}``: run the Command source whose
  service is NAME, or the command of ``jobs: {allow: [...]}`` named NAME,
  now.  The command is the configured one; nothing in the request becomes
  part of it.  Answers 201 ``{"id": ...}``.
- ``GET /api/jobs/ID``: the job's state, times and result.
- ``GET /api/jobs/ID/stream``: its output, one numbered line at a time, as
  Server-Sent Events (``Accept: text/event-stream`` or ``?format=sse``) or
  JSON lines, until it ends; then its result.  ``?since=N`` or the
  ``Last-Event-ID`` header resumes after line N.
- ``DELETE /api/jobs/ID``: cancel it.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from duct.jobs.allowed import AllowedCommand
from duct.jobs.job import Job
from duct.jobs.registry import Jobs, UnknownQueue, jobsOf
from duct.web.responses import jsonBody, jsonError

MAX_BODY = 65536


class JobsResource(Resource):
    """Serves ``/api/jobs`` and below for ``service`` (the token is checked before)."""

    isLeaf = True
    maxBody = MAX_BODY

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    @property
    def jobs(self) -> Jobs:
        return jobsOf(self.service)

    def _path(self, request: Any) -> list[str]:
        return [p.decode("utf-8", "replace") for p in request.postpath if p]

    def _job(self, request: Any, jobId: str) -> Job | None:
        return self.jobs.get(jobId)

    def render_POST(self, request: Any) -> bytes:
        if self._path(request):
            return jsonError(request, 405, "POST /api/jobs to submit a job")
        try:
            body = json.loads(request.content.read(MAX_BODY + 1) or b"{}")
        except ValueError as e:
            return jsonError(request, 400, f"the body is not JSON: {e}")
        name = body.get("check") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return jsonError(request, 400, 'expected {"check": NAME}')
        jobs = self.jobs
        check = jobs.checks.get(name)
        try:
            if check is not None:
                job = check.runNow()
            elif name in jobs.allowed:
                settings = jobs.allowed[name]
                queue = jobs.queue(settings.get("queue") or "default")
                command = AllowedCommand(settings, self.service, queue.maxExecTime)
                job = jobs.submit(name, command.queue, command.work)
            else:
                return jsonError(request, 404, f"no check or allowed job named {name!r}")
        except UnknownQueue as e:
            return jsonError(request, 409, str(e.args[0]))
        request.setHeader(b"location", f"/api/jobs/{job.id}".encode())
        return jsonBody(request, {"id": job.id, "state": job.state}, code=201)

    def render_GET(self, request: Any) -> bytes | int:
        path = self._path(request)
        if not path:
            listed = [job.toJSON() for job in self.jobs.jobs.values()]
            for entry in listed:
                entry.pop("result", None)
            return jsonBody(request, {"jobs": listed})
        job = self._job(request, path[0])
        if job is None:
            return jsonError(request, 404, f"no job {path[0]!r} (unknown, or forgotten)")
        if len(path) == 1:
            return jsonBody(request, job.toJSON())
        if path[1:] == ["stream"]:
            return self._stream(request, job)
        return jsonError(request, 404, "no such route")

    def render_DELETE(self, request: Any) -> bytes:
        path = self._path(request)
        job = self._job(request, path[0]) if len(path) == 1 else None
        if job is None:
            return jsonError(request, 404, "no such job")
        cancelled = self.jobs.cancel(job)
        return jsonBody(request, {"id": job.id, "cancelled": cancelled, "state": job.state})

    def _stream(self, request: Any, job: Job) -> bytes | int:
        args = request.args or {}
        since = (args.get(b"since") or [None])[0]
        if since is None:
            since = request.getHeader(b"last-event-id")
        try:
            cursor = int(since) if since not in (None, b"") else 0
            if cursor < 0:
                raise ValueError
        except ValueError:
            return jsonError(request, 400, f"since must be a non-negative integer, not {since!r}")
        wanted = (args.get(b"format") or [b""])[0]
        accept = request.getHeader(b"accept") or b""
        sse = wanted == b"sse" or (not wanted and b"text/event-stream" in accept)
        JobStream(request, job, min(cursor, job.last), sse).start()
        return NOT_DONE_YET


class JobStream:
    """One follower of a job's output: writes each line after ``cursor``, then the result."""

    def __init__(self, request: Any, job: Job, cursor: int, sse: bool) -> None:
        self.request = request
        self.job = job
        self.cursor = cursor
        self.sse = sse
        self.done = False

    def start(self) -> None:
        kind = b"text/event-stream" if self.sse else b"application/x-ndjson"
        self.request.setHeader(b"content-type", kind + b"; charset=utf-8")
        self.request.setHeader(b"cache-control", b"no-cache")
        self.request.setHeader(b"x-accel-buffering", b"no")
        self.request.notifyFinish().addBoth(self._gone)
        self.job.listeners.append(self.pump)
        self.pump()

    def _gone(self, _: object) -> None:
        self.done = True
        if self.pump in self.job.listeners:
            self.job.listeners.remove(self.pump)

    def pump(self) -> None:
        if self.done:
            return
        parts: list[bytes] = []
        while self.cursor < self.job.last:
            self.cursor += 1
            data = json.dumps(self.job.lineData(self.cursor), separators=(",", ":"))
            if self.sse:
                parts.append(f"id: {self.cursor}\nevent: line\ndata: {data}\n\n".encode())
            else:
                parts.append(data.encode() + b"\n")
        if self.job.ended:
            result = json.dumps({"result": self.job.toJSON()}, separators=(",", ":"))
            end = f"event: result\ndata: {result}\n\n" if self.sse else result + "\n"
            parts.append(end.encode())
        if parts:
            self.request.write(b"".join(parts))
        if self.job.ended:
            self._gone(None)
            self.request.finish()
