"""Finding the plugins that duct.yml's ``plugins:`` names, and checking their options.

Each entry of ``plugins:`` is a module name, or a mapping whose ``plugin``
key is the module name and whose other keys are the plugin's options.
Modules are looked for in the ``plugin_path`` directories first (relative
ones resolve against the directory of the configuration file), then on
the Python path.  Those directories go at the front of ``sys.path``, so a
plugin module may import the modules next to it.  The module's plugin is
its module-level ``plugin``, a subclass of `duct.plugin.Plugin`.

A module already imported is not imported again: a changed plugin's code
takes a restart.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from typing import Any

from duct.configuration import Item
from duct.errors import Problem
from duct.options import declaredOptions, validate
from duct.plugin import EventPlugin, Plugin
from duct.plugins import PluginError


def pluginDirectories(value: Any, configPath: str) -> list[str]:
    """The ``plugin_path`` setting as absolute directories."""
    if not value:
        return []
    entries = [value] if isinstance(value, str) else list(value)
    base = os.path.dirname(os.path.abspath(configPath))
    return [os.path.normpath(os.path.join(base, os.path.expanduser(str(e)))) for e in entries]


def importPlugin(module: str, directories: list[str]) -> type[Plugin]:
    """Import ``module`` (looking in ``directories`` first) and return its ``plugin`` class."""
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise PluginError(f"{module!r} is not a module name such as audit or mycompany.duct_slack")
    for directory in reversed(directories):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    importlib.invalidate_caches()  # a directory may have gained files since the last look
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            where = ", ".join(directories) + " or " if directories else ""
            raise PluginError(
                f"cannot import {module}: no such module on {where}the Python path"
            ) from e
        raise PluginError(f"cannot import {module}: {type(e).__name__}: {e}") from e
    except Exception as e:  # a plugin's module may fail in any way while importing
        raise PluginError(f"cannot import {module}: {type(e).__name__}: {e}") from e
    cls = getattr(loaded, "plugin", None)
    if cls is None:
        raise PluginError(
            f"module {module} has no plugin class: set plugin = YourPlugin in {module}"
        )
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginError(
            f"{module}.plugin is {cls!r}, not a subclass of duct.plugin.EventPlugin "
            "or duct.plugin.BackgroundPlugin"
        )
    return cls


def checkPlugins(
    entries: Any, pluginPath: Any, configPath: str
) -> tuple[list[Item], list[Problem]]:
    """The validated plugin items of ``plugins:``, and every problem among them."""
    items: list[Item] = []
    problems: list[Problem] = []
    directories = pluginDirectories(pluginPath, configPath)
    for directory in directories:
        if not os.path.isdir(directory):
            problems.append(
                Problem(configPath, None, "plugin_path", f"{directory}: no such directory")
            )
    seen: set[str] = set()
    for item in entries or []:
        if not isinstance(item, Item):  # not tagged: the list itself was refused
            continue
        config = {"plugin": item.config} if isinstance(item.config, str) else item.config
        if not isinstance(config, Mapping) or not isinstance(config.get("plugin"), str):
            message = f"expected a module name or a mapping with plugin: <module>, got {config!r}"
            problems.append(Problem(item.file, item.label, None, message))
            continue
        module = config["plugin"]
        if module in seen:
            problems.append(Problem(item.file, item.label, None, f"{module} is listed twice"))
            continue
        seen.add(module)
        try:
            cls = importPlugin(module, directories)
        except PluginError as e:
            problems.append(Problem(item.file, item.label, None, str(e)))
            continue
        checked, found = validate(declaredOptions(cls), config, strict=True)
        problems += [Problem(item.file, item.label, key, message) for key, message in found]
        types = getattr(cls, "eventTypes", None)
        if issubclass(cls, EventPlugin) and not (
            types is None or (isinstance(types, tuple) and all(isinstance(t, str) for t in types))
        ):
            message = f"{cls.__name__}.eventTypes must be None or a tuple of strings"
            problems.append(Problem(item.file, item.label, None, message))
        items.append(Item(item.file, item.label, checked, cls))
    return items, problems


def kindOf(cls: type) -> str:
    if issubclass(cls, EventPlugin):
        types = cls.eventTypes
        return f"event plugin ({', '.join(types) if types is not None else 'every type'})"
    return "background plugin"


def summary(item: Item) -> str:
    """One line for ``duct check``: the module, its kind, where it is, and its options."""
    assert item.cls is not None
    where = inspect.getsourcefile(item.cls) or item.cls.__module__
    options = ", ".join(f"{k}={v!r}" for k, v in item.config.items() if k != "plugin")
    return f"{item.config['plugin']}: {kindOf(item.cls)} from {where}" + (
        f"; {options}" if options else ""
    )


def describePlugin(item: Item) -> str:
    """A plugin's summary and its declared options, as ``duct list`` prints them."""
    assert item.cls is not None
    doc = inspect.getdoc(item.cls) or ""
    text = doc.split("\n\n")[0].replace("\n", " ")
    lines = [f"{item.config['plugin']} ({kindOf(item.cls)})"]
    lines.append(f"    {text}" if text else "    (no description)")
    for option in declaredOptions(item.cls).values():
        if option.name != "plugin":
            value = item.config.get(option.name)
            lines.append(f"    - {option.describe()} [now {value!r}]")
    return "\n".join(lines)
