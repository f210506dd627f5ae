"""Processes: how many run, what each program and user uses, and named processes watched.

Here the processes are read with psutil; with ``use_ssh``, from ``ps`` run
on the SSH host (``ps -eo pid=,user:64=,etimes=,rss=,cputimes=,nlwp=,comm:64=,args=``),
which gives the same fields but open files.  CPU is in percent of one CPU:
over the time since the previous poll, or, the first time a process is
seen, over its whole life (what ``ps`` reports as ``%CPU``).
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

import psutil

from duct.objects import Event, Source
from duct.options import Option

PS_COMMAND = ("ps", "-eo", "pid=,user:64=,etimes=,rss=,cputimes=,nlwp=,comm:64=,args=")


class ProcInfo(NamedTuple):
    """One process, as psutil or ``ps`` describes it."""

    pid: int
    user: str
    name: str
    argv: tuple[str, ...]
    rss: int  # bytes
    cpu: float  # seconds of CPU, user and system
    started: float  # POSIX time
    threads: int
    files: int | None  # open file descriptors; None when unknown

    @property
    def kernel(self) -> bool:
        """A kernel thread: it has no command line."""
        return not self.argv


def localProcesses() -> list[ProcInfo]:
    """Every process on this machine, from psutil; open files only where readable."""
    found = []
    for proc in psutil.process_iter():
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                try:
                    files: int | None = proc.num_fds()
                except psutil.AccessDenied:
                    files = None
                found.append(ProcInfo(
                    proc.pid, proc.username(), proc.name(), tuple(proc.cmdline()),
                    proc.memory_info().rss, times.user + times.system, proc.create_time(),
                    proc.num_threads(), files))  # fmt: skip
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return found


def parsePS(output: str, now: float) -> list[ProcInfo]:
    """The lines of `PS_COMMAND`, without the ``ps`` that printed them."""
    found = []
    for line in output.splitlines():
        parts = line.split(None, 7)
        if len(parts) < 7:
            continue
        pid, user, age, rss, cpu, threads, name = parts[:7]
        args = parts[7] if len(parts) > 7 else ""
        argv = () if args.startswith("[") and args.endswith("]") else tuple(args.split())
        if argv[:2] == PS_COMMAND[:2] and argv[2:3] == PS_COMMAND[2:3]:
            continue
        found.append(ProcInfo(int(pid), user, name, argv, int(rss) * 1024, float(cpu),
                              now - float(age), int(threads), None))  # fmt: skip
    return found


class CPUMeter:
    """Percent of one CPU each process used since it was last seen (or since it started)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[float, float, float]] = {}  # pid: started, cpu, at

    def percent(self, processes: list[ProcInfo], now: float) -> dict[int, float]:
        result, seen = {}, {}
        for p in processes:
            started, cpu, at = self.seen.get(p.pid, (p.started, 0.0, p.started))
            if abs(started - p.started) > 2:  # the pid was reused
                cpu, at = 0.0, p.started
            result[p.pid] = max(p.cpu - cpu, 0.0) / (now - at) * 100 if now > at else 0.0
            seen[p.pid] = (p.started, p.cpu, now)
        self.seen = seen
        return result


class ProcessSource(Source):
    """A source that reads the process table, here or on the SSH host."""

    sync = True
    options: tuple[Option, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = CPUMeter()

    async def processes(self) -> list[ProcInfo]:
        if not self.useSSH:
            return [p for p in localProcesses() if p.pid != os.getpid()]
        result = await self.run(PS_COMMAND)
        if result.code != 0:
            raise OSError(f"ps exited with {result.code}: {result.stderr.strip()}")
        return parsePS(result.stdout, self.clock.seconds())


def _word(text: str) -> str:
    return re.sub(r"[^\w_]", "", text)


class ProcessCount(ProcessSource):
    """``{service}``: the number of processes, kernel threads included, as ``ps -e`` counts them."""

    async def get(self) -> Event:
        if self.useSSH:
            count = len(await self.processes())
        else:
            count = len(psutil.pids())
        return self.createEvent("ok", f"Process count {count}", count)


class ProcessStats(ProcessSource):
    """CPU and memory by program and by user; kernel threads are left out.

    - ``{service}.proc.{program}.cpu``: percent of one CPU its processes use;
    - ``{service}.proc.{program}.mem``: megabytes of memory they hold (RSS);
    - ``{service}.proc.{program}.age``: seconds since the oldest of them started;
    - ``{service}.user.{user}.cpu`` and ``.mem``: the same, by user.

    ``{program}`` is the process name, or ``{binary}.{name}`` when the first
    word of its command line differs (``usrsbinnginx.nginx``); user and
    program keep only letters, digits and ``_``, as in the original duct.
    """

    async def get(self) -> list[Event]:
        processes = [p for p in await self.processes() if not p.kernel]
        now = self.clock.seconds()
        cpu = self.meter.percent(processes, now)
        procs: dict[str, dict[str, float]] = {}
        users: dict[str, dict[str, float]] = {}
        for p in processes:
            binary, comm = _word(p.argv[0]), _word(p.name)
            key = (f"{binary}.{comm}" if binary != comm else comm).strip("_")
            mem = p.rss / 1048576
            for table, name in ((procs, key), (users, _word(p.user.lower()))):
                entry = table.setdefault(name, {"cpu": 0.0, "mem": 0.0, "age": 0.0})
                entry["cpu"] += cpu[p.pid]
                entry["mem"] += mem
                entry["age"] = max(entry["age"], now - p.started)
        events = []
        for user, v in sorted(users.items()):
            events += [
                self.createEvent("ok", f"User memory {user}: {v['mem']:0.2f}MB", v["mem"],
                                 f"user.{user}.mem"),
                self.createEvent("ok", f"User CPU usage {user}: {v['cpu']:0.1f}%", v["cpu"],
                                 f"user.{user}.cpu"),
            ]  # fmt: skip
        for key, v in sorted(procs.items()):
            events += [
                self.createEvent("ok", f"Process age {key}: {v['age']:.0f}s", v["age"],
                                 f"proc.{key}.age"),
                self.createEvent("ok", f"Process memory {key}: {v['mem']:0.2f}MB", v["mem"],
                                 f"proc.{key}.mem"),
                self.createEvent("ok", f"Process CPU usage {key}: {v['cpu']:0.1f}%", v["cpu"],
                                 f"proc.{key}.cpu"),
            ]  # fmt: skip
        return events


class Process(ProcessSource):
    """Watches the processes that ``name``, ``cmdline``, ``pidfile`` or ``unit`` select.

    Several selectors narrow the choice together.  ``pidfile`` and ``unit``
    each give one process: the pid in the file, or the unit's main pid from
    ``systemctl show -p MainPID --value UNIT``.

    - ``{service}.running``: how many run; ``critical`` when none does;
    - ``{service}.cpu``: percent of one CPU they use together;
    - ``{service}.rss``: bytes of memory they hold;
    - ``{service}.threads`` and ``{service}.files``: their threads and
      open file descriptors (files here only, not over SSH);
    - ``{service}.uptime``: seconds since the oldest of them started.
    """

    options = (
        Option("name", "string", None, "process name, exactly (as ps -o comm shows it)"),
        Option("cmdline", "string", None, "regular expression searched in the command line"),
        Option("pidfile", "string", None, "file holding the pid of the process"),
        Option("unit", "string", None, "systemd unit whose main process to watch"),
    )

    @classmethod
    def optionProblems(cls, config: dict[str, Any]) -> list[tuple[str, str]]:
        if not any(config.get(key) for key in ("name", "cmdline", "pidfile", "unit")):
            return [("name", "give at least one of name, cmdline, pidfile or unit")]
        try:
            re.compile(config.get("cmdline") or "")
        except re.error as e:
            return [("cmdline", f"not a valid regular expression: {e}")]
        return []

    def describeSelection(self) -> str:
        keys = ("name", "cmdline", "pidfile", "unit")
        return ", ".join(f"{key} {self.config[key]!r}" for key in keys if self.config[key])

    async def selectedPid(self) -> int | None:
        """The pid ``pidfile`` or ``unit`` names; 0 when they name none, None without them."""
        pid = None
        if self.config["pidfile"]:
            try:
                pid = int((await self.readFile(self.config["pidfile"])).split()[0])
            except (OSError, ValueError, IndexError):
                return 0
        if self.config["unit"]:
            argv = ["systemctl", "show", "-p", "MainPID", "--value", self.config["unit"]]
            result = await self.run(argv)
            unitPid = int(result.stdout.strip() or 0) if result.code == 0 else 0
            pid = unitPid if pid is None or pid == unitPid else 0
        return pid

    async def get(self) -> list[Event]:
        pid = await self.selectedPid()
        name, pattern = self.config["name"], self.config["cmdline"]
        regex = re.compile(pattern) if pattern else None
        chosen = [
            p for p in await self.processes()
            if (pid is None or p.pid == pid) and (name is None or p.name == name)
            and (regex is None or regex.search(" ".join(p.argv)))
        ]  # fmt: skip
        if not chosen:
            why = f"no process runs for {self.describeSelection()}"
            return [self.createEvent("critical", why, 0, "running")]
        now = self.clock.seconds()
        cpu = sum(self.meter.percent(chosen, now).values())
        rss = sum(p.rss for p in chosen)
        threads = sum(p.threads for p in chosen)
        uptime = now - min(p.started for p in chosen)
        pids = ", ".join(str(p.pid) for p in chosen[:10])
        events = [
            self.createEvent("ok", f"{len(chosen)} running (pid {pids})", len(chosen), "running"),
            self.createEvent("ok", f"CPU {cpu:.1f}%", cpu, "cpu"),
            self.createEvent("ok", f"memory {rss / 1048576:.1f} MB", rss, "rss"),
            self.createEvent("ok", f"{threads} threads", threads, "threads"),
            self.createEvent("ok", f"up {uptime:.0f}s", uptime, "uptime"),
        ]
        files = [p.files for p in chosen]
        if all(f is not None for f in files):
            total = sum(f for f in files if f is not None)
            events.append(self.createEvent("ok", f"{total} open files", total, "files"))
        return events
