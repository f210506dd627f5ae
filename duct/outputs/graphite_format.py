"""Carbon's wire formats: metric paths from events, plaintext lines, pickle messages.

`PathTemplate` names each event's series: a template of ``{prefix}``,
``{host}``, ``{fqdn}``, ``{short}``, ``{service}`` and ``{state}``, each
field sanitised to what a Graphite path node may hold.  `plaintextLine`
and `pickleMessages` turn ``(path, value, timestamp)`` points into the
bytes carbon's line and pickle receivers read.
"""

from __future__ import annotations

import functools
import math
import pickle
import re
import string
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

from duct.event import Event

__all__ = [
    "FIELDS",
    "PICKLE_MAX_LENGTH",
    "PathTemplate",
    "Point",
    "UncarriedEvent",
    "pickleMessages",
    "plaintextLine",
    "sanitiseNode",
]

FIELDS = ("prefix", "host", "fqdn", "short", "service", "state")
"""The fields a path template may name."""

PICKLE_MAX_LENGTH = 1048576
"""carbon's default PICKLE_RECEIVER_MAX_LENGTH: a longer message closes the connection."""

MAX_PATH = 4096
"""The longest path sent: carbon's line receiver drops the connection on a line
past 16 KiB, and whisper keeps each path as a file."""
MAX_NODE = 255
"""The longest node: a node is a file or directory name in carbon's store."""

PATHS_CACHED = 8192
"""How many series' paths a `PathTemplate` keeps, the most recently used."""

_LENGTH = struct.Struct("!L")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:#@%+=,~]+")
"""What a path node may not hold: whitespace (which ends a plaintext field),
dots (which separate nodes), slashes (which carbon's whisper files would
turn into directories) and other punctuation."""
_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9_\-:#@%+=,~.]+")
"""The same, but for dots: one pass over a dotted path sanitises every node."""
_SAFE = r"A-Za-z0-9\-:#@%+=,~"
_NODE = rf"[{_SAFE}](?:[_{_SAFE}]*[{_SAFE}])?"
_CLEAN_PATH = re.compile(rf"{_NODE}(?:\.{_NODE})*")
"""A path that sanitising leaves as it is: nodes of safe characters, none
empty, none starting or ending with ``_``."""


class UncarriedEvent(ValueError):
    """An event carbon cannot store: no metric, a metric that is not finite, an empty path."""


class Point(NamedTuple):
    path: str
    value: float | int
    timestamp: int


def sanitiseNode(text: str) -> str:
    """``text`` with each run of characters a path node may not hold made one ``_``."""
    return _UNSAFE.sub("_", text).strip("_")


def _sanitisePath(text: str) -> str:
    """A dotted path: each node sanitised, empty nodes left out.

    The same as `sanitiseNode` on each node, in one substitution over the
    whole path: a run of unsafe characters never holds a dot, so it never
    crosses a node's boundary.
    """
    if _CLEAN_PATH.fullmatch(text):
        return text
    nodes = _UNSAFE_IN_PATH.sub("_", text).split(".")
    return ".".join([node for part in nodes if (node := part.strip("_"))])


class PathTemplate:
    """Turns an event into its Graphite path and a `Point`.

    :param template: a `str.format` template of `FIELDS`, such as
        ``"{prefix}.{host}.{service}"``.  ``{host}`` is the hostname with
        its dots made ``_`` (one node), ``{fqdn}`` the hostname as nodes,
        ``{short}`` its first label.  ``{service}`` keeps its dots as node
        separators; spaces and other characters a node may not hold become
        ``_``.  Empty nodes are left out, so an unset prefix leaves no
        leading dot.
    :param prefix: the ``{prefix}`` field, a dotted path itself.
    """

    def __init__(self, template: str, prefix: str | None = None) -> None:
        self.template = template
        self.prefix = _sanitisePath(prefix or "")
        problem = templateProblem(template)
        if problem:
            raise ValueError(problem)
        self._format, names = _withPrefix(template, self.prefix)
        self._host, self._fqdn, self._short, self._state = (
            name in names for name in ("host", "fqdn", "short", "state")
        )
        self._cachedPath = functools.lru_cache(maxsize=PATHS_CACHED)(self._path)

    def path(self, event: Event) -> str:
        """The event's path; `UncarriedEvent` if carbon cannot store it.

        The paths of the last `PATHS_CACHED` series are kept: a host
        sends the same series again and again, each worked out once.
        """
        return self._cachedPath(event.hostname, event.service, event.state)

    def _path(self, hostname: str | None, service: str | None, state: str | None) -> str:
        # Only the fields the template names are worked out.
        hostname = hostname or ""
        fields = {"prefix": self.prefix, "service": _sanitisePath(service or "")}
        if self._host:
            fields["host"] = sanitiseNode(hostname.replace(".", "_"))
        if self._fqdn:
            fields["fqdn"] = _sanitisePath(hostname)
        if self._short:
            fields["short"] = sanitiseNode(hostname.split(".", 1)[0])
        if self._state:
            fields["state"] = sanitiseNode(state or "")
        path = _sanitisePath(self._format.format_map(fields))
        if not path:
            raise UncarriedEvent("the event's path is empty")
        if len(path) > MAX_NODE and (
            len(path) > MAX_PATH or max(map(len, path.split("."))) > MAX_NODE
        ):
            raise UncarriedEvent(f"the path is longer than carbon stores: {path[:80]}...")
        return path

    def point(self, event: Event) -> Point:
        """The event as a point; `UncarriedEvent` if carbon cannot store it."""
        metric: Any = event.metric
        if metric is None:
            raise UncarriedEvent(f"{event.service!r} has no metric")
        if isinstance(metric, bool):
            metric = int(metric)
        if not isinstance(metric, (int, float)):
            raise UncarriedEvent(f"metric {metric!r} is not a number")
        if isinstance(metric, float) and not math.isfinite(metric):
            raise UncarriedEvent(f"metric {metric!r} is not finite")
        return Point(self.path(event), metric, int(event.time))


def _withPrefix(template: str, prefix: str) -> tuple[str, set[str]]:
    """``template`` with ``prefix`` written in, and the fields left in it.

    Sanitising the formatted path drops empty nodes, so the leading dots
    of the result (those of an empty prefix) are dropped here once rather
    than for every event.  A template whose format specs hold fields of
    their own keeps every field.
    """
    parts: list[str] = []
    names: set[str] = set()
    for literal, name, spec, conversion in string.Formatter().parse(template):
        parts.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if name == "prefix" and not spec and not conversion:
            parts.append(prefix)  # sanitised: it holds no braces
            continue
        names.add(name)
        if spec and "{" in spec:
            names.update(FIELDS)
        field = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        parts.append("{" + field + "}")
    return "".join(parts).lstrip("."), names


def templateProblem(template: str) -> str | None:
    """Why ``template`` is no path template, or None."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        return f"cannot parse the template {template!r}: {e}"
    unknown = [name for name in names if name not in FIELDS]
    if unknown:
        return f"unknown field {{{unknown[0]}}}; the fields are {', '.join(FIELDS)}"
    if "service" not in names:
        return "the template must hold {service}"
    return None


def plaintextLine(point: Point) -> bytes:
    """``path value timestamp\\n``, as carbon's line receiver reads it."""
    return f"{point.path} {point.value!r} {point.timestamp}\n".encode()


def pickleMessages(points: Sequence[Point], maxLength: int = PICKLE_MAX_LENGTH) -> list[bytes]:
    """Length-prefixed pickles of ``[(path, (timestamp, value)), ...]``, each within ``maxLength``.

    A list too long for one message is split in halves until each fits;
    a single point that does not fit raises `UncarriedEvent`.
    """
    body = pickle.dumps([(p.path, (p.timestamp, p.value)) for p in points], protocol=2)
    if len(body) <= maxLength:
        return [_LENGTH.pack(len(body)) + body]
    if len(points) == 1:
        raise UncarriedEvent(f"a pickle of {len(body)} bytes exceeds {maxLength}")
    half = len(points) // 2
    return pickleMessages(points[:half], maxLength) + pickleMessages(points[half:], maxLength)
