"""The top-level keys of duct.yml, and those of ``web:``, toolboxes and blueprints.

Declared as `Option`s, like a plugin's: the loader validates them and the
README's reference is generated from them.
"""

from __future__ import annotations

from duct.defaults import RING_MAX_BYTES, RING_SIZE, STATE_DIR
from duct.lib.sshconfig import GLOBAL_SSH_OPTIONS
from duct.options import REQUIRED, Option

GLOBAL_OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("ttl", "number", 60.0, "default time-to-live of events, in seconds", minimum=0),
        Option("interval", "number", 60.0, "default seconds between polls", minimum=0.001),
        Option("hostname", "string", None, "host of events (default: this machine's name)"),
        Option("stagger", "number", 0.2, "seconds between the starts of sources", minimum=0),
        Option("shutdown_timeout", "number", 10.0, "seconds outputs may drain at stop", minimum=0),
        Option("state_dir", "string", STATE_DIR, "directory for persistent state"),
        Option("debug", "flag", False, "log debug detail; every source's and output's default"),
        Option(
            "default_route",
            "strings",
            None,
            "output name(s) for sources without a route (default: the outputs without a name)",
        ),
        Option(
            "base_path",
            "string",
            "/var/lib/duct",
            "directory added to Python's path, if it exists, for source and output classes",
        ),
        Option("include", "strings", None, "files or directories of further configuration"),
        Option("include_path", "strings", None, "the same as include (the original name)"),
        Option("sources", "list", [], "the sources to run"),
        Option("outputs", "list", [], "the outputs to deliver to"),
        Option("plugins", "list", [], "plugins enabled by module name (see duct.plugin)"),
        Option("plugin_path", "strings", None, "directories searched first for plugins"),
        Option("toolbox", "any", None, "named sets of sources for blueprints"),
        Option("blueprint", "list", None, "toolboxes applied over lists of values"),
        Option("server", "string", None, "Riemann server of the default output (old style)"),
        Option("port", "integer", 5555, "Riemann port of the default output (old style)"),
        Option("proto", "string", "tcp", "Riemann protocol (old style)", choices=("tcp", "udp")),
        Option(
            "workers",
            "integer",
            0,
            "processes that run the listener sources on shared sockets (0: none)",
            minimum=0,
        ),
        Option("web", "mapping", None, "the web server: {listen, token}; none without it"),
        Option("self_events", "boolean", False, "emit duct's own statistics as duct.* events"),
        Option("self_interval", "number", 10.0, "seconds between self events", minimum=0.001),
        Option("self_route", "strings", None, "output name(s) for self events (default: all)"),
        Option(
            "queues",
            "mapping",
            None,
            "job queues by name: {NAME: {concurrency, max_exec_time}}; default always exists",
        ),
        Option("jobs", "mapping", None, "jobs on demand: {allow: [{name, command, ...}]}"),
        Option("job_retention", "mapping", None, "ended jobs kept: {count, age}"),
        *GLOBAL_SSH_OPTIONS,  # what every use_ssh source takes unless it sets its own
    )
}
QUEUE_OPTIONS = {
    option.name: option
    for option in (
        Option("concurrency", "integer", 4, "jobs of the queue run at once at most", minimum=1),
        Option(
            "max_exec_time", "duration", 300.0, "seconds a job may run before it is killed", above=0
        ),
    )
}
JOBS_OPTIONS = {
    option.name: option
    for option in (
        Option("allow", "list", [], "commands a client may run by name: {name, command, ...}"),
    )
}
ALLOWED_JOB_OPTIONS = {
    option.name: option
    for option in (
        Option("name", "string", REQUIRED, "the name a client runs it by"),
        Option("command", "any", REQUIRED, "the command: a list of arguments, or a string"),
        Option("shell", "boolean", False, "run the command through /bin/sh -c"),
        Option("queue", "string", "default", "the queue it waits in"),
        Option("timeout", "number", None, "seconds it may run (default: the queue's)", above=0),
    )
}
RETENTION_OPTIONS = {
    option.name: option
    for option in (
        Option("count", "integer", 1000, "ended jobs kept at most", minimum=1),
        Option("age", "duration", 3600.0, "seconds an ended job is kept at most", above=0),
    )
}
WEB_OPTIONS = {
    option.name: option
    for option in (
        Option(
            "listen",
            "string",
            "tcp:8901:interface=127.0.0.1",
            "Twisted server endpoint of /stats, /metrics, /health, ...",
        ),
        Option("token", "string", None, "bearer token every route but /health requires"),
        Option("ring_size", "integer", RING_SIZE, "recent events kept for /events", minimum=1),
        Option(
            "ring_max_bytes",
            "integer",
            RING_MAX_BYTES,
            "most bytes those recent events may hold",
            minimum=1024,
        ),
    )
}
SELF_STATS_SOURCE = "duct.sources.selfstats.SelfStats"
TOOLBOX_OPTIONS = {
    "defaults": Option("defaults", "mapping", {}, "values for each of the toolbox's sources"),
    "sources": Option("sources", "list", [], "the sources a blueprint copies"),
}
BLUEPRINT_OPTIONS = {
    "toolbox": Option("toolbox", "strings", REQUIRED, "the toolbox or toolboxes to apply"),
    "defaults": Option("defaults", "mapping", {}, "values over the toolbox's defaults"),
    "sets": Option(
        "sets",
        "any",
        [],
        "a mapping of lists, expanded to every combination; or a list of mappings of"
        " equal-length lists, each zipped, several multiplying",
    ),
}
