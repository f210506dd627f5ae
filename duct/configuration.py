"""Loading and validating duct.yml.

`ConfigFile` reads the YAML safely, follows ``include``/``include_path``,
expands toolboxes and blueprints, then checks everything against the
declared options before anything starts.  Every problem it finds is
collected, and `ConfigurationError` names the file, the item and the key of
each one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from duct.buffers import checkBufferSettings
from duct.defaults import RING_MAX_BYTES as DEFAULT_RING_BYTES
from duct.defaults import RING_SIZE as DEFAULT_RING_SIZE
from duct.defaults import STATE_DIR
from duct.errors import ConfigurationError, Problem
from duct.graphs import checkGraphs
from duct.objects import Output, Source
from duct.options import REQUIRED, Option, declaredOptions, validate
from duct.plugins import PluginError, isStrict, loadClass
from duct.triggers import TriggerError, parseRules

GLOBAL_OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("ttl", "number", 60.0, "default time-to-live of events, in seconds", minimum=0),
        Option("interval", "number", 60.0, "default seconds between polls", minimum=0.001),
        Option("hostname", "string", None, "host of events (default: this machine's name)"),
        Option("stagger", "number", 0.2, "seconds between the starts of sources", minimum=0),
        Option("shutdown_timeout", "number", 10.0, "seconds outputs may drain at stop", minimum=0),
        Option("state_dir", "string", STATE_DIR, "directory for persistent state"),
        Option("debug", "boolean", False, "log debug detail"),
        Option("include", "strings", None, "files or directories of further configuration"),
        Option("include_path", "strings", None, "the same as include (the original name)"),
        Option("sources", "list", [], "the sources to run"),
        Option("outputs", "list", [], "the outputs to deliver to"),
        Option("toolbox", "any", None, "named sets of sources for blueprints"),
        Option("blueprint", "list", None, "toolboxes applied over lists of values"),
        Option("server", "string", None, "Riemann server of the default output (old style)"),
        Option("port", "integer", 5555, "Riemann port of the default output (old style)"),
        Option("proto", "string", "tcp", "Riemann protocol (old style)", choices=("tcp", "udp")),
        Option("web", "mapping", None, "the web server: {listen, token}; none without it"),
        Option("self_events", "boolean", False, "emit duct's own statistics as duct.* events"),
        Option("self_interval", "number", 10.0, "seconds between self events", minimum=0.001),
        Option("self_route", "strings", None, "output name(s) for self events (default: all)"),
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
        Option(
            "ring_size", "integer", DEFAULT_RING_SIZE, "recent events kept for /events", minimum=1
        ),
        Option(
            "ring_max_bytes",
            "integer",
            DEFAULT_RING_BYTES,
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
    "sets": Option("sets", "any", [], "mappings of equal-length lists to expand over"),
}


@dataclass
class Item:
    """A source or output entry, with where it came from."""

    file: str
    label: str
    config: Any
    cls: type | None = None


@dataclass
class Config:
    """A validated configuration, ready for `duct.service.DuctService`."""

    path: str
    settings: dict[str, Any]
    sources: list[Item]
    outputs: list[Item]
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


def _label(kind: str, index: int, entry: Any) -> str:
    if isinstance(entry, Mapping):
        for key in ("service", "name", "output", "source"):
            if isinstance(entry.get(key), str):
                return f"{kind}[{index}] ({key}: {entry[key]})"
    return f"{kind}[{index}]"


class ConfigFile:
    """A duct.yml on disk, or a mapping already in memory (``path`` is then a label)."""

    def __init__(self, path: str, data: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self._data = data
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    @classmethod
    def fromDict(cls, data: Mapping[str, Any], path: str = "<config>") -> Config:
        return cls(path, data).load()

    def load(self) -> Config:
        """Read, expand and validate; raise ConfigurationError listing every problem."""
        self.problems, self.warnings = [], []
        raw: dict[str, Any] | None
        if self._data is not None:
            raw = self._tagItems(dict(self._data), self.path)
        else:
            raw = self._readTree(self.path, set())
        if raw is None:
            raise ConfigurationError(self.problems)
        settings, _ = self._check(GLOBAL_OPTIONS, raw, self.path, None, strict=True)
        # Values that failed their check are back to their defaults in settings.
        sources = [i for i in settings.get("sources") or [] if isinstance(i, Item)]
        sources += self._blueprints(settings)
        outputs = [i for i in settings.get("outputs") or [] if isinstance(i, Item)]
        if settings.get("server"):
            proto = "UDP" if settings.get("proto") == "udp" else "TCP"
            compat: dict[str, Any] = {"output": f"duct.outputs.riemann.Riemann{proto}"}
            compat.update(server=settings["server"], port=settings.get("port", 5555))
            outputs.append(Item(self.path, "server", compat))
        outputNames = self._outputs(outputs)
        if settings.get("web") is not None:
            settings["web"] = self._web(settings["web"])
        if settings.get("self_events"):
            sources.append(self._selfEvents(settings, outputNames))
        for item in sources:
            self._source(item, settings, outputNames)
        if self.problems:
            raise ConfigurationError(self.problems)
        return Config(self.path, settings, sources, outputs, self.warnings)

    # -- reading -----------------------------------------------------------------

    def _problem(self, file: str, item: str | None, key: str | None, message: str) -> None:
        self.problems.append(Problem(file, item, key, message))

    def _readTree(self, path: str, seen: set[str]) -> dict[str, Any] | None:
        real = os.path.realpath(path)
        if real in seen:
            return {}
        seen.add(real)
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except OSError as e:
            self._problem(path, None, None, f"cannot read: {e.strerror or e}")
            return None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            self._problem(path, None, None, f"YAML syntax error at {where}{e.problem or e}")
            return None
        except yaml.YAMLError as e:
            self._problem(path, None, None, f"YAML error: {e}")
            return None
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            self._problem(path, None, None, "the top level must be a mapping of keys")
            return None
        doc = self._tagItems(doc, path)
        for key in ("include", "include_path"):
            for included in self._includedFiles(doc.get(key), path, key):
                sub = self._readTree(included, seen)
                if sub is not None:
                    doc = _merge(doc, sub)
        return doc

    def _tagItems(self, doc: dict[str, Any], path: str) -> dict[str, Any]:
        for kind in ("sources", "outputs"):
            entries = doc.get(kind)
            if isinstance(entries, list):
                doc[kind] = [
                    e if isinstance(e, Item) else Item(path, _label(kind, i, e), e)
                    for i, e in enumerate(entries)
                ]
        return doc

    def _includedFiles(self, value: Any, path: str, key: str) -> list[str]:
        if value is None:
            return []
        targets = [value] if isinstance(value, str) else value
        if not isinstance(targets, list):
            self._problem(path, None, key, f"expected a path or a list of paths, got {value!r}")
            return []
        found: list[str] = []
        base = os.path.dirname(os.path.abspath(path))
        for target in targets:
            full = os.path.normpath(os.path.join(base, os.path.expanduser(str(target))))
            if os.path.isdir(full):
                found += [
                    os.path.join(full, name)
                    for name in sorted(os.listdir(full))
                    if name.endswith((".yml", ".yaml"))
                ]
            elif os.path.isfile(full):
                found.append(full)
            else:
                self._problem(path, None, key, f"{target} is neither a file nor a directory")
        return found

    # -- checking ----------------------------------------------------------------

    def _check(
        self, options: Mapping[str, Option], config: Any, file: str, item: str | None, strict: bool
    ) -> tuple[dict[str, Any], bool]:
        if not isinstance(config, Mapping):
            self._problem(file, item, None, f"expected a mapping of keys, got {config!r}")
            return {}, False
        checked, problems = validate(options, config, strict)
        for key, message in problems:
            self._problem(file, item, key, message)
        return checked, not problems

    def _plugin(self, item: Item, key: str, base: type) -> type | None:
        if not isinstance(item.config, Mapping):
            self._problem(item.file, item.label, None, f"expected a mapping, got {item.config!r}")
            return None
        path = item.config.get(key)
        if not isinstance(path, str):
            self._problem(item.file, item.label, key, "missing: the dotted path of the class")
            return None
        try:
            return loadClass(path, base)
        except PluginError as e:
            if item.label == "server":  # the old-style default output, from top-level keys
                why = f"the default Riemann output is not available ({e})"
                self._problem(item.file, None, "server", f"{why}; configure 'outputs' instead")
            else:
                self._problem(item.file, item.label, key, str(e))
            return None

    def _configure(self, item: Item, cls: type, base: type) -> None:
        strict = isStrict(cls)
        item.config, _ = self._check(
            declaredOptions(cls), item.config, item.file, item.label, strict
        )
        if not strict:
            known = declaredOptions(base)
            extra = sorted(k for k in item.config if k not in known)
            if extra:
                self.warnings.append(
                    f"{item.file}: {item.label}: {cls.__name__} declares no options; "
                    f"passing through unchecked: {', '.join(extra)}"
                )
        item.cls = cls

    def _outputs(self, outputs: list[Item]) -> set[str]:
        names: set[str] = set()
        for item in outputs:
            cls = self._plugin(item, "output", Output)
            if cls is None:
                continue
            self._configure(item, cls, Output)
            try:
                checkBufferSettings(item.config)
            except ValueError as e:
                self._problem(item.file, item.label, "buffer", str(e).removeprefix("buffer: "))
            name = item.config.get("name") or cls.__name__
            if name in names:
                self._problem(item.file, item.label, "name", f"another output is named {name!r}")
            names.add(name)
        return names

    def _source(self, item: Item, settings: dict[str, Any], outputNames: set[str]) -> None:
        cls = self._plugin(item, "source", Source)
        if cls is None:
            if isinstance(item.config, Mapping) and "service" not in item.config:
                self._problem(item.file, item.label, "service", "missing required key")
            return
        config = dict(item.config)
        for key in ("interval", "ttl"):
            config.setdefault(key, settings.get(key))
        item.config = config
        self._configure(item, cls, Source)
        for message in checkGraphs(getattr(cls, "graphs", None) or {}):
            self.warnings.append(
                f"{item.file}: {item.label}: {cls.__name__}.graphs: {message} (ignored)"
            )
        for key in ("warning", "critical"):
            try:
                parseRules(item.config.get(key))
            except TriggerError as e:
                self._problem(item.file, item.label, key, str(e))
        for route in item.config.get("route") or []:
            if route not in outputNames:
                known = ", ".join(sorted(outputNames)) or "none are configured"
                self._problem(
                    item.file, item.label, "route", f"no output is named {route!r} ({known})"
                )

    def _web(self, web: Mapping[str, Any]) -> dict[str, Any]:
        checked, _ = self._check(WEB_OPTIONS, web, self.path, "web", strict=True)
        listen = checked.get("listen")
        if isinstance(listen, str):
            from twisted.internet.endpoints import serverFromString

            try:  # parses the string; nothing listens yet (ssl: reads its key files)
                serverFromString(None, listen)
            except Exception as e:  # the parser raises ValueError, TypeError, OSError...
                why = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
                self._problem(self.path, "web", "listen", f"not a server endpoint: {why}")
        if checked.get("token") == "":
            self._problem(self.path, "web", "token", "must not be empty (leave it out instead)")
        return checked

    def _selfEvents(self, settings: dict[str, Any], outputNames: set[str]) -> Item:
        """The source ``self_events: true`` adds, routed by ``self_route``."""
        route = settings.get("self_route") or []
        unknown = [name for name in route if name not in outputNames]
        if unknown:
            known = ", ".join(sorted(outputNames)) or "none are configured"
            names = ", ".join(repr(name) for name in unknown)
            self._problem(self.path, None, "self_route", f"no output is named {names} ({known})")
        config: dict[str, Any] = {
            "source": SELF_STATS_SOURCE,
            "service": "duct",
            "interval": settings.get("self_interval") or 10.0,
            "route": [name for name in route if name in outputNames] or None,
        }
        return Item(self.path, "self_events", config)

    # -- toolboxes and blueprints -------------------------------------------------

    def _toolboxes(self, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Toolboxes by name, from a mapping, a list of mappings, or duct's one-key list form."""
        value = raw.get("toolbox")
        if value is None:
            return {}
        boxes: dict[str, Any] = {}
        if isinstance(value, Mapping):
            boxes, value = {str(k): v for k, v in value.items()}, []
        current: dict[str, Any] | None = None
        for entry in value if isinstance(value, list) else [value]:
            if not isinstance(entry, Mapping):
                self._problem(self.path, "toolbox", None, f"expected a mapping, got {entry!r}")
                continue
            if "name" in entry:
                current = boxes.setdefault(str(entry["name"]), {})
            if current is None:
                self._problem(self.path, "toolbox", "name", "a toolbox must start with its name")
                continue
            current.update({k: v for k, v in entry.items() if k != "name"})
        return {
            name: self._check(TOOLBOX_OPTIONS, box, self.path, f"toolbox ({name})", True)[0]
            for name, box in boxes.items()
        }

    def _blueprints(self, raw: dict[str, Any]) -> list[Item]:
        boxes = self._toolboxes(raw)
        items: list[Item] = []
        for index, blueprint in enumerate(raw.get("blueprint") or []):
            label = f"blueprint[{index}]"
            blueprint, valid = self._check(BLUEPRINT_OPTIONS, blueprint, self.path, label, True)
            names = blueprint.get("toolbox") or []
            missing = [name for name in names if name not in boxes]
            if missing or (valid and not names):
                self._problem(self.path, label, "toolbox", f"no toolbox named {missing or names!r}")
            if missing or not valid or not names:
                continue
            variants = self._permutations(blueprint["sets"], label)
            for name in names:
                box = boxes[name]
                for number, variant in enumerate(variants):
                    for source in box.get("sources") or []:
                        config = {**box.get("defaults", {}), **blueprint["defaults"]}
                        config.update(source if isinstance(source, Mapping) else {})
                        config.update(variant)
                        service = config.get("service")
                        tag = f"{label} ({name} #{number}, service: {service})"
                        items.append(Item(self.path, tag, config))
        return items

    def _permutations(self, sets: Any, label: str) -> list[dict[str, Any]]:
        """Each set zips its lists; several sets multiply."""
        groups: list[list[dict[str, Any]]] = []
        for number, entry in enumerate(sets if isinstance(sets, list) else [sets]):
            if not isinstance(entry, Mapping) or not all(
                isinstance(v, list) for v in entry.values()
            ):
                self._problem(self.path, label, f"sets[{number}]", "expected a mapping of lists")
                continue
            lengths = {len(v) for v in entry.values()}
            if len(lengths) > 1:
                self._problem(self.path, label, f"sets[{number}]", "its lists differ in length")
                continue
            keys = list(entry)
            groups.append(
                [
                    dict(zip(keys, values, strict=True))
                    for values in zip(*entry.values(), strict=True)
                ]
            )
        return [
            {k: v for part in combination for k, v in part.items()}
            for combination in itertools.product(*groups)
        ]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge an included document: lists extend, mappings merge, other values override."""
    merged = dict(base)
    for key, value in extra.items():
        if key in ("include", "include_path"):
            continue
        current = merged.get(key)
        if isinstance(current, list) and isinstance(value, list):
            merged[key] = current + value
        elif isinstance(current, dict) and isinstance(value, dict):
            merged[key] = {**current, **value}
        else:
            merged[key] = value
    return merged


__all__ = [
    "REQUIRED",
    "Config",
    "ConfigFile",
    "ConfigurationError",
    "GLOBAL_OPTIONS",
    "Problem",
    "WEB_OPTIONS",
]
