"""The ``duct`` command: run, check, once, reload, list, tail and job."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from zope.interface import implementer

from duct import __version__
from duct.configuration import Config, ConfigFile, ConfigurationError
from duct.event import Event, defaultHostname
from duct.interfaces import IDuct
from duct.lib.json import eventJson
from duct.output import Output
from duct.plugins import BUILTIN_OUTPUTS, BUILTIN_SOURCES, describe
from duct.source import Source

DEFAULT_CONFIG = "/etc/duct/duct.yml"


def _load(path: str) -> Config | None:
    try:
        return ConfigFile(path).load()
    except ConfigurationError as e:
        print(f"{path}: {len(e.problems)} error(s):", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Run the agent in the foreground, exactly as twistd would."""
    if _load(args.config) is None:
        return 1
    from twisted.scripts.twistd import run as twistd

    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "duct", "--config", args.config]
    twistd()
    return 0


def check(args: argparse.Namespace) -> int:
    """Validate a configuration and say what it would run."""
    config = _load(args.config)
    if config is None:
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in config.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{args.config}: valid")
    print("outputs:")
    for item in config.outputs:
        cfg = item.config
        name = cfg.get("name") or (item.cls.__name__ if item.cls else "?")
        kind = (cfg.get("buffer") or {}).get("type", "memory")
        print(
            f"  {name}: {cfg['output']} ({kind} buffer: {cfg['maxsize']} events, {cfg['overflow']})"
        )
        if kind == "memory":
            print("    memory-only buffer: events queued here are lost if the agent crashes")
    print("sources:")
    names = [
        item.config.get("name") or getattr(item.cls, "__name__", "?") for item in config.outputs
    ]
    for item in config.sources:
        cfg = item.config
        route = cfg.get("route") or ["*"]
        routes = ", ".join(names if "*" in route else route) or "(no outputs)"
        print(f"  {cfg['service']}: {cfg['source']} every {cfg['interval']}s -> {routes}")
    if config.plugins:
        from duct.pluginload import summary

        print("plugins:")
        for item in config.plugins:
            print(f"  {summary(item)}")
    web = config.get("web")
    if web is None:
        print("web: none (no web: key, no port opened)")
    else:
        guard = "a bearer token" if web.get("token") else "no token"
        print(f"web: {web['listen']} (/stats, /metrics, /health; {guard}, none for /health)")
    return _checkPorts(args.config, config)


def _checkPorts(path: str, config: Config) -> int:
    """Bind and release each address the configuration listens on; 1 if one is taken.

    The agent already running this very file holds its ports: then a port
    in use is only noted, since a reload (not a new start) is what follows.
    """
    from twisted.internet import reactor

    from duct.listening import probe

    problems = probe(config, reactor)
    if not problems:
        return 0
    running = agentsRunning(path)
    if running:
        pids = ", ".join(map(str, running))
        for problem in problems:
            print(f"note: {problem} (agent {pids} runs this file)", file=sys.stderr)
        return 0
    print(f"{path}: {len(problems)} address(es) cannot be listened on:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def once(args: argparse.Namespace) -> int:
    """Poll every source once and print its events as JSON lines."""
    config = _load(args.config)
    if config is None:
        return 1
    from twisted.internet import task
    from twisted.internet.defer import DeferredList, ensureDeferred

    async def pollAll(reactor: Any) -> None:
        duct = _OnceDuct(reactor, config.get("hostname") or defaultHostname(), config)
        events: list[Event] = []
        sources: list[Source] = []
        for item in config.sources:
            assert item.cls is not None
            sources.append(item.cls(dict(item.config), events.extend, duct))
        await DeferredList([source.poll() for source in sources], consumeErrors=True)
        for event in events:
            print(eventJson(event))  # NaN and infinities as null: valid JSON

    task.react(lambda reactor: ensureDeferred(pollAll(reactor)))  # exits when done
    return 0


@implementer(IDuct)
class _OnceDuct:
    """What the sources polled by ``duct once`` see of the service: there are no outputs."""

    def __init__(self, reactor: Any, hostname: str, config: Any) -> None:
        self.reactor = self.clock = reactor
        self.hostname = hostname
        self.config = config

    def accepting(self, source: Source) -> bool:
        return True


def reload(args: argparse.Namespace) -> int:
    """Validate a configuration, then have the agent running it reload it (SIGHUP).

    The agent is found by ``--pid``, or else among the running processes
    by its command line naming the same configuration file.  An invalid
    file is reported here and no signal is sent.
    """
    if _load(args.config) is None:
        print("not reloaded: the running agent keeps its configuration", file=sys.stderr)
        return 1
    pids = [args.pid] if args.pid else agentsRunning(args.config)
    if len(pids) != 1:
        found = ", ".join(map(str, pids)) or "none"
        print(
            f"{args.config}: {len(pids)} running agents use this file ({found}); "
            "name one with --pid",
            file=sys.stderr,
        )
        return 1
    try:
        os.kill(pids[0], signal.SIGHUP)
    except OSError as e:
        print(f"cannot signal process {pids[0]}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid; asked agent {pids[0]} to reload it (its log says what changed)")
    return 0


def agentsRunning(config: str) -> list[int]:
    """The pids of agents (``twistd ... duct`` or ``duct run``) running ``config``."""
    import psutil

    wanted = os.path.realpath(config)
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        options = agentOptions(process.info["cmdline"] or [])
        path = configOf(options)
        if path is not None and process.info["cwd"] is not None:
            if os.path.realpath(os.path.join(process.info["cwd"], path)) == wanted:
                found.append(int(process.info["pid"]))
    return found


def agentOptions(argv: list[str]) -> list[str] | None:
    """The duct options of an agent's command line, or None if it runs no agent."""
    names = [os.path.basename(a) for a in argv]
    if "twistd" in names[:2] and "duct" in argv:
        return argv[argv.index("duct") + 1 :]
    if "duct" in names[:2] and "run" in argv:
        return argv[argv.index("run") + 1 :]
    return None


def configOf(options: list[str] | None) -> str | None:
    if options is None:
        return None
    for index, flag in enumerate(options):
        if flag in ("-c", "--config") and index + 1 < len(options):
            return options[index + 1]
        if flag.startswith("--config="):
            return flag.partition("=")[2]
    return DEFAULT_CONFIG


def list_(args: argparse.Namespace) -> int:
    """Print the built-in sources and outputs (and with -c, the plugins enabled) with their
    declared options."""
    config = None
    if args.config is not None:
        config = _load(args.config)
        if config is None:
            return 1
    print("Sources:\n")
    for path in BUILTIN_SOURCES:
        print(describe(path, Source) + "\n")
    print("Outputs:\n")
    for path in BUILTIN_OUTPUTS:
        print(describe(path, Output) + "\n")
    if config is not None:
        from duct.pluginload import describePlugin

        print(f"Plugins ({args.config}):\n")
        for item in config.plugins:
            print(describePlugin(item) + "\n")
        if not config.plugins:
            print("(none: the file has no plugins: list)\n")
    return 0


def tail(args: argparse.Namespace) -> int:
    """Follow a running agent's events, one line each, resuming after a dropped connection."""
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from duct.follow import Tail

    async def follow(reactor: Any) -> None:
        follower = Tail(
            reactor,
            args.url,
            since=args.since,
            recent=args.recent,
            service=args.service,
            host=args.host,
            state=args.state,
            description=args.description,
            token=args.token,
            raw=args.json,
        )
        # Ctrl-C stops the reactor: stop following first, and exit 0.
        reactor.addSystemEventTrigger("before", "shutdown", follower.stop)
        code = await follower.run()
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: ensureDeferred(follow(reactor)))  # exits when done
    return 0


def _tailArguments(sub: argparse.ArgumentParser) -> None:
    from duct.follow import DEFAULT_URL

    sub.add_argument(
        "--url", default=DEFAULT_URL, help=f"the agent's /events (default {DEFAULT_URL})"
    )
    start = sub.add_mutually_exclusive_group()
    start.add_argument("--since", type=_count, metavar="N", help="start after event number N")
    start.add_argument("--recent", type=_count, metavar="N", help="start with the last N events")
    sub.add_argument("--service", metavar="REGEX", help="only services matching REGEX")
    sub.add_argument(
        "--description", metavar="REGEX", help="only events whose description matches REGEX"
    )
    sub.add_argument("--host", help="only events from this host")
    sub.add_argument("--state", help="only events in this state (ok, warning, critical...)")
    sub.add_argument("--token", help="the web server's token, if it requires one")
    sub.add_argument("--json", action="store_true", help="print each event's JSON as received")


def job(args: argparse.Namespace) -> int:
    """Run a check or an allowed command on the running agent, or show or cancel a job."""
    from duct.jobs.client import JobClient, exitCode, printLine

    client = JobClient(args.url, args.token)
    if args.action == "run":
        jobId = client.submit(args.target)
        if not args.follow:
            print(jobId)
            return 0
        print(f"job {jobId}", file=sys.stderr)
        ended = client.follow(jobId, printLine)
        result = ended.get("result") or {}
        reason = f": {result['reason']}" if result.get("reason") else ""
        print(f"job {jobId} {ended['state']} ({result.get('outcome')}){reason}", file=sys.stderr)
        return exitCode(ended)
    if args.action == "show":
        print(json.dumps(client.show(args.target), indent=2))
        return 0
    answer = client.cancel(args.target)
    print(f"job {answer['id']}: {'cancelled' if answer['cancelled'] else 'had already ended'}")
    return 0 if answer["cancelled"] else 1


def _jobArguments(sub: argparse.ArgumentParser) -> None:
    from duct.jobs.client import DEFAULT_URL

    sub.add_argument("action", choices=("run", "show", "cancel"))
    sub.add_argument("target", metavar="NAME|ID", help="a check or allowed job to run; a job id")
    sub.add_argument("--follow", action="store_true", help="print its output until it ends")
    sub.add_argument("--url", default=DEFAULT_URL, help=f"the agent's web server ({DEFAULT_URL})")
    sub.add_argument("--token", help="the web server's token, if it requires one")


def send(args: argparse.Namespace) -> int:
    """Send an event (or JSON events from a file or stdin) to a Riemann server or an agent."""
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    from duct import send as sending

    try:
        if args.json is not None:
            with open(args.json, "rb") if args.json != "-" else sys.stdin.buffer as f:  # noqa: SIM115
                events = sending.eventsFromJson(f.read(), args.host)
        elif args.service is None:
            raise ValueError("give --service, or --json with the events")
        else:
            events = [
                sending.eventFromArguments(
                    args.service, args.host, args.state, args.metric, args.ttl,
                    args.description, args.tag, args.attribute, args.time,
                )
            ]  # fmt: skip
        sending.parseServer(args.server)
        tls = _clientTLS(args) if args.tls else None
    except (ValueError, OSError) as e:  # a BadEvent is a ValueError naming the field
        print(f"duct send: {e}", file=sys.stderr)
        return 2
    outcome: list[int] = []

    async def go(reactor: Any) -> None:
        try:
            msgs = await sending.send(reactor, events, args.server, args.timeout, tls)
        except sending.SendError as e:
            print(f"duct send: {args.server}: {e}", file=sys.stderr)
            outcome.append(e.code)
            return
        plural = "" if len(events) == 1 else "s"
        print(f"{len(events)} event{plural} acknowledged by {args.server} in {msgs} Msg(s)")
        outcome.append(0)

    try:
        task.react(lambda reactor: ensureDeferred(go(reactor)))
    except SystemExit:
        pass
    return outcome[0] if outcome else 2


def _clientTLS(args: argparse.Namespace) -> Any:
    from twisted.internet import ssl

    from duct.send import parseServer

    host, _ = parseServer(args.server)
    if args.ca is None:
        return ssl.optionsForClientTLS(host)
    with open(args.ca, "rb") as f:
        trust = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(host, trustRoot=trust)


def _sendArguments(sub: argparse.ArgumentParser) -> None:
    from duct.send import DEFAULT_SERVER

    sub.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"HOST[:PORT] to send to ({DEFAULT_SERVER})"
    )
    sub.add_argument("--tls", action="store_true", help="speak TLS, checking the server")
    sub.add_argument("--ca", help="with --tls: the CA file the server's certificate must chain to")
    sub.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole exchange")
    sub.add_argument("--json", metavar="FILE", help="send the events of FILE (- for stdin) as JSON")
    sub.add_argument("--service", help="the event's service")
    sub.add_argument("--host", help="the event's host (default: this machine's name)")
    sub.add_argument("--state", help="ok, warning, critical...")
    sub.add_argument("--metric", type=float, help="the event's metric")
    sub.add_argument("--ttl", type=float, help="seconds the event is valid for")
    sub.add_argument("--description", help="the event's description")
    sub.add_argument("--tag", action="append", default=[], help="a tag (repeat for more)")
    sub.add_argument(
        "--attribute", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)"
    )
    sub.add_argument("--time", type=float, help="seconds since the epoch (default: now)")


def _count(value: str) -> int:
    """``--since`` or ``--recent``, checked as /events checks its own."""
    from duct.web.events.format import BadRequest, count

    try:
        return count(value, "N")
    except BadRequest as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="duct", description="A monitoring agent and event router")
    parser.add_argument("--version", action="version", version=f"duct {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, needsConfig in (
        ("run", run, True),
        ("check", check, True),
        ("once", once, True),
        ("reload", reload, True),
        ("list", list_, False),
        ("tail", tail, False),
        ("job", job, False),
        ("send", send, False),
    ):
        sub = commands.add_parser(name, help=(handler.__doc__ or "").strip().split("\n")[0])
        if needsConfig:
            sub.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="configuration file")
        elif handler is list_:
            sub.add_argument("-c", "--config", help="also list the plugins this file enables")
        if handler is tail:
            _tailArguments(sub)
        if handler is job:
            _jobArguments(sub)
        if handler is send:
            _sendArguments(sub)
        sub.set_defaults(handler=handler)
        if name == "reload":
            sub.add_argument("--pid", type=int, help="the agent's process id (found if omitted)")
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
