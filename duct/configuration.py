"""Loading and validating duct.yml.

`ConfigFile` reads the YAML safely, follows ``include``/``include_path``,
expands toolboxes and blueprints, then checks everything against the
declared options before anything starts.  Every problem it finds is
collected, and `ConfigurationError` names the file, the item and the key of
each one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from duct.blueprints import Blueprints
from duct.buffers import bufferDirectory, checkBufferSettings, directoryProblem
from duct.compat import addImportPath, compatNotes, inheritDebug, resolveRoute, unnamedOutputs
from duct.defaults import STATE_DIR
from duct.errors import ConfigurationError, Problem, oneLine
from duct.graphs import checkGraphs
from duct.lib.sshconfig import INHERITED as INHERITED_SSH
from duct.lib.sshconfig import sshProblems
from duct.options import REQUIRED, Option, declaredOptions, optionProblems, validate
from duct.output import Output
from duct.plugins import PluginError, isStrict, loadClass
from duct.schema import GLOBAL_OPTIONS, SELF_STATS_SOURCE, WEB_OPTIONS
from duct.source import Source
from duct.triggers import TriggerError, parseRules
from duct.yamlfile import Budget, YamlFileError, loadFile


@dataclass
class Item:
    """A source or output entry, with where it came from."""

    file: str
    label: str
    config: Any
    cls: type | None = None
    unnamed: bool = False
    """An output configured without a ``name``: where sources without a route go."""


@dataclass
class Config:
    """A validated configuration, ready for `duct.service.DuctService`."""

    path: str
    settings: dict[str, Any]
    sources: list[Item]
    outputs: list[Item]
    warnings: list[str] = field(default_factory=list)
    plugins: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Where this configuration, written for the original duct, means
    something else here (see `duct.compat`); ``duct check`` prints them."""

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)


def _label(kind: str, index: int, entry: Any) -> str:
    if kind == "plugins":  # named by module: plugins[1] (audit)
        module = entry.get("plugin") if isinstance(entry, Mapping) else entry
        return f"{kind}[{index}] ({module})" if isinstance(module, str) else f"{kind}[{index}]"
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
        return self.check(self.read())

    def check(self, raw: dict[str, Any] | None) -> Config:
        """Expand and validate what `read` returned; raise ConfigurationError if it cannot run."""
        if raw is None:
            raise ConfigurationError(self.problems)
        settings, _ = self._check(GLOBAL_OPTIONS, raw, self.path, None, strict=True)
        # Values that failed their check are back to their defaults in settings.
        sources = [i for i in settings.get("sources") or [] if isinstance(i, Item)]
        blueprints = Blueprints(self.path, self._check, self._problem)
        sources += [Item(self.path, tag, cfg) for tag, cfg in blueprints.expand(settings)]
        outputs = [i for i in settings.get("outputs") or [] if isinstance(i, Item)]
        if settings.get("server"):
            proto = "UDP" if settings.get("proto") == "udp" else "TCP"
            compat: dict[str, Any] = {"output": f"duct.outputs.riemann.Riemann{proto}"}
            compat.update(server=settings["server"], port=settings["port"])
            outputs.append(Item(self.path, "server", compat))
        addImportPath(settings.get("base_path"))
        for item in outputs:
            inheritDebug(item, settings)
        outputNames = self._outputs(outputs, settings.get("state_dir") or STATE_DIR)
        unnamed = unnamedOutputs(outputs)
        if settings.get("web") is not None:
            settings["web"] = self._web(settings["web"])
        from duct.jobs.config import checkJobSettings

        checkJobSettings(settings, self.path, self._check, self._problem)
        if settings.get("self_events"):
            sources.append(self._selfEvents(settings, outputNames))
        for item in sources:
            if isinstance(item.config, Mapping):
                addImportPath(item.config.get("path"), item.file)
                inheritDebug(item, settings)
            self._source(item, settings, outputNames)
            if item.cls is not None:
                resolveRoute(item, settings.get("default_route"), unnamed)
        for route in settings.get("default_route") or []:
            if route != "*" and route not in outputNames:
                known = ", ".join(sorted(outputNames)) or "none are configured"
                self._problem(
                    self.path, None, "default_route", f"no output is named {route!r} ({known})"
                )
        from duct.pluginload import checkPlugins  # it imports this module

        plugins, problems = checkPlugins(settings["plugins"], settings["plugin_path"], self.path)
        self.problems += problems
        if self.problems:
            raise ConfigurationError(self.problems)
        notes = compatNotes(sources, outputs)
        return Config(self.path, settings, sources, outputs, self.warnings, plugins, notes)

    # -- reading -----------------------------------------------------------------

    def _problem(self, file: str, item: str | None, key: str | None, message: str) -> None:
        self.problems.append(Problem(file, item, key, message))

    def read(self) -> dict[str, Any] | None:
        """The raw tree of the file and its includes, or None (see ``problems``).

        It touches only this object and the files, within the limits of
        `duct.yamlfile`: a SIGHUP reload calls it off the reactor thread.
        """
        self.problems, self.warnings = [], []
        if self._data is not None:
            return self._tagItems(dict(self._data), self.path)
        return self._readTree(self.path, set(), Budget())

    def _readTree(self, path: str, seen: set[str], budget: Budget) -> dict[str, Any] | None:
        if budget.files < 0:  # a shared limit was reached: the load fails already
            return None
        real = os.path.realpath(path)
        if real in seen:
            return {}
        seen.add(real)
        try:
            doc = loadFile(path, budget)
        except YamlFileError as e:
            self._problem(path, None, None, str(e))
            if e.total:
                budget.files = -1
            return None
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            self._problem(path, None, None, "the top level must be a mapping of keys")
            return None
        doc = self._tagItems(doc, path)
        for key in ("include", "include_path"):
            for included in self._includedFiles(doc.get(key), path, key):
                sub = self._readTree(included, seen, budget)
                if sub is not None:
                    doc = _merge(doc, sub)
        return doc

    def _tagItems(self, doc: dict[str, Any], path: str) -> dict[str, Any]:
        for kind in ("sources", "outputs", "plugins"):
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
            elif os.path.lexists(full):  # read only if a regular file: duct.yamlfile
                found.append(full)
            else:  # the original duct logs it and goes on; so does duct, and check warns
                self.warnings.append(
                    oneLine(f"{path}: {key}: {target} does not exist; nothing is included from it")
                )
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
        item.config, valid = self._check(
            declaredOptions(cls), item.config, item.file, item.label, strict
        )
        if valid:
            for key, message in optionProblems(cls, item.config):
                self._problem(item.file, item.label, key, message)
        if not strict:
            known = declaredOptions(base)
            extra = sorted(k for k in item.config if k not in known)
            if extra:
                self.warnings.append(
                    f"{item.file}: {item.label}: {cls.__name__} declares no options; "
                    f"passing through unchecked: {', '.join(extra)}"
                )
        item.cls = cls

    def _bufferDirectory(
        self, item: Item, name: str, buffer: Mapping[str, Any], stateDir: str
    ) -> None:
        """A disk buffer's directory must be one the agent can make, as at start."""
        why = directoryProblem(bufferDirectory(name, buffer, stateDir))
        if why is not None:
            key = "buffer.path" if buffer.get("path") else "state_dir"
            self._problem(item.file, item.label, key, why)

    def _outputs(self, outputs: list[Item], stateDir: str) -> set[str]:
        names: set[str] = set()
        for item in outputs:
            cls = self._plugin(item, "output", Output)
            if cls is None:
                continue
            self._configure(item, cls, Output)
            name = item.config.get("name")
            if not name:  # unnamed, as the original allows several of: number the others
                item.unnamed = True
                name, number = cls.__name__, 1
                while name in names:
                    number += 1
                    name = f"{cls.__name__}-{number}"
                if number > 1:
                    item.config["name"] = name
            try:
                buffer = checkBufferSettings(item.config)
            except ValueError as e:
                self._problem(item.file, item.label, "buffer", str(e).removeprefix("buffer: "))
            else:
                if buffer.get("type") == "disk":
                    self._bufferDirectory(item, str(name), buffer, stateDir)
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
        for key in ("interval", "ttl", *INHERITED_SSH):
            if settings.get(key) is not None:
                config.setdefault(key, settings[key])
        item.config = config
        self._configure(item, cls, Source)
        for key, message in sshProblems(item.config):
            self._problem(item.file, item.label, key, message)
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
            if route != "*" and route not in outputNames:
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
            "interval": settings["self_interval"],
            "route": [name for name in route if name in outputNames] or ["*"],
        }
        return Item(self.path, "self_events", config)


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
