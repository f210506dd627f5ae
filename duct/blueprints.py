"""Toolboxes and blueprints: sources written once and stamped out over lists of values.

A toolbox names a set of sources and their defaults; a blueprint applies
one or more toolboxes over ``sets``.  `Blueprints` turns them into
``(label, source config)`` pairs and reports problems through the
loader's callbacks.  Two forms are read:

- the original duct's: ``toolbox`` is a mapping of names to ``{defaults,
  sources}`` and a blueprint's ``sets`` is one mapping of keys to lists,
  expanded to the cartesian product across keys (``{a: [1, 2], b: [x,
  y]}`` makes four sources).  As in the original, a toolbox's defaults
  override the keys its sources set themselves, the blueprint's defaults
  override both, and the set's values override everything;
- a list form: ``toolbox`` is a list of mappings, each starting a toolbox
  with ``name``, and ``sets`` is a list of mappings of equal-length lists,
  each zipped, several sets multiplying.  There a source's own keys
  override the defaults.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from duct.schema import BLUEPRINT_OPTIONS, TOOLBOX_OPTIONS


class Blueprints:
    """Expands the ``toolbox`` and ``blueprint`` keys of one configuration file."""

    def __init__(
        self,
        path: str,
        check: Callable[..., tuple[dict[str, Any], bool]],
        problem: Callable[[str, str | None, str | None, str], None],
    ) -> None:
        self.path = path
        self.check = check
        self.problem = problem
        self.original: set[str] = set()
        """Toolboxes written in the original's mapping form (see the module)."""

    def toolboxes(self, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Toolboxes by name, from a mapping, a list of mappings, or duct's one-key list form."""
        value = raw.get("toolbox")
        if value is None:
            return {}
        boxes: dict[str, Any] = {}
        if isinstance(value, Mapping):
            boxes, value = {str(k): v for k, v in value.items()}, []
            self.original = set(boxes)
        current: dict[str, Any] | None = None
        for entry in value if isinstance(value, list) else [value]:
            if not isinstance(entry, Mapping):
                self.problem(self.path, "toolbox", None, f"expected a mapping, got {entry!r}")
                continue
            if "name" in entry:
                current = boxes.setdefault(str(entry["name"]), {})
            if current is None:
                self.problem(self.path, "toolbox", "name", "a toolbox must start with its name")
                continue
            current.update({k: v for k, v in entry.items() if k != "name"})
        return {
            name: self.check(TOOLBOX_OPTIONS, box, self.path, f"toolbox ({name})", True)[0]
            for name, box in boxes.items()
        }

    def expand(self, raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Every source the blueprints make, with a label naming where it came from."""
        boxes = self.toolboxes(raw)
        items: list[tuple[str, dict[str, Any]]] = []
        for index, blueprint in enumerate(raw.get("blueprint") or []):
            label = f"blueprint[{index}]"
            blueprint, valid = self.check(BLUEPRINT_OPTIONS, blueprint, self.path, label, True)
            names = blueprint.get("toolbox") or []
            missing = [name for name in names if name not in boxes]
            if missing or (valid and not names):
                self.problem(self.path, label, "toolbox", f"no toolbox named {missing or names!r}")
            if missing or not valid or not names:
                continue
            variants = self.permutations(blueprint["sets"], label)
            for name in names:
                box = boxes[name]
                for number, variant in enumerate(variants):
                    for source in box.get("sources") or []:
                        own = dict(source) if isinstance(source, Mapping) else {}
                        if name in self.original:  # the toolbox's defaults win, as there
                            config = {**own, **box.get("defaults", {}), **blueprint["defaults"]}
                        else:
                            config = {**box.get("defaults", {}), **blueprint["defaults"], **own}
                        config.update(variant)
                        service = config.get("service")
                        tag = f"{label} ({name} #{number}, service: {service})"
                        items.append((tag, config))
        return items

    def permutations(self, sets: Any, label: str) -> list[dict[str, Any]]:
        """One mapping: the product across its keys; a list of them: each zips, they multiply."""
        if isinstance(sets, Mapping):
            return self.product(sets, label)
        groups: list[list[dict[str, Any]]] = []
        for number, entry in enumerate(sets if isinstance(sets, list) else [sets]):
            if not isinstance(entry, Mapping) or not all(
                isinstance(v, list) for v in entry.values()
            ):
                self.problem(self.path, label, f"sets[{number}]", "expected a mapping of lists")
                continue
            lengths = {len(v) for v in entry.values()}
            if len(lengths) > 1:
                self.problem(self.path, label, f"sets[{number}]", "its lists differ in length")
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

    def product(self, sets: Mapping[str, Any], label: str) -> list[dict[str, Any]]:
        """The original's ``sets``: every combination of one value from each key's list."""
        bad = [key for key, values in sets.items() if not isinstance(values, list)]
        if bad:
            self.problem(self.path, label, f"sets.{bad[0]}", "expected a list of values")
            return []
        keys = list(sets)
        return [
            dict(zip(keys, values, strict=True)) for values in itertools.product(*sets.values())
        ]
