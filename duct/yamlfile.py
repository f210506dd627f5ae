"""Reading one YAML configuration file, within bounds.

A configuration file comes from an operator, but it may be damaged,
generated wrongly or hostile, and it is read again on every SIGHUP while
the agent runs.  Whatever it holds, reading it ends quickly, in bounded
memory, with either a document or one `YamlFileError` whose message fits
on one line.  The limits, shared by a file and everything it includes:

- `MAX_FILE_BYTES`: the size of one file (4 MiB), checked before parsing;
- `MAX_TOTAL_BYTES`: the size of all files together (16 MiB);
- `MAX_FILES`: how many files, the first one and its includes (100);
- `MAX_NODES`: how many values (scalars, lists, mappings, keys included)
  the documents hold once every alias is expanded (200,000): an alias
  costs the size of what it refers to, so an alias bomb is refused after
  a few dozen aliases, without expanding anything;
- `MAX_DEPTH`: how deep lists and mappings may nest (100).

They are module constants, read at each load: an embedding program may
raise them before loading.  Only regular files are read; a FIFO, a device,
a socket or a directory is refused before it is opened.  The text must be
UTF-8 (a byte-order mark is allowed).  Documents are read with the safe
constructor only (no Python objects), by libyaml when PyYAML has it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import Node
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

__all__ = [
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_TOTAL_BYTES",
    "Budget",
    "Loader",
    "PureLoader",
    "YamlFileError",
    "loadFile",
    "parse",
    "readFile",
]

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_TOTAL_BYTES = 16 * 1024 * 1024
MAX_FILES = 100
MAX_NODES = 200_000
MAX_DEPTH = 100

_READ_CHUNK = 64 * 1024


class YamlFileError(Exception):
    """A file that cannot be read as configuration; the message is one line.

    ``limit`` names the bound that refused it (``"nodes"``, ``"depth"``,
    ``"bytes"``, ``"files"``), or is None for any other reason.  ``total``
    is true when the bound is shared by all the files of a load, so that
    reading further files is pointless.
    """

    def __init__(self, message: str, limit: str | None = None, total: bool = False) -> None:
        super().__init__(" ".join(message.split()))
        self.limit = limit
        self.total = total


@dataclass
class Budget:
    """What the files of one load may still use; each read takes its share."""

    files: int = field(default_factory=lambda: MAX_FILES)
    bytes: int = field(default_factory=lambda: MAX_TOTAL_BYTES)
    nodes: int = field(default_factory=lambda: MAX_NODES)
    aliases: int = 0
    """Aliases resolved so far (for the curious: the limit is on ``nodes``)."""


# -- reading the bytes ----------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _refuseIrregular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise YamlFileError(f"cannot read: {_kind(mode)}, only a regular file is read")


def _tooLarge(budget: Budget) -> YamlFileError:
    if budget.bytes < MAX_FILE_BYTES:
        message = f"the configuration files together exceed {MAX_TOTAL_BYTES} bytes (the limit)"
        return YamlFileError(message, "bytes", total=True)
    return YamlFileError(f"larger than {MAX_FILE_BYTES} bytes (the limit)", "bytes")


def readFile(path: str, budget: Budget) -> bytes:
    """The bytes of ``path``, a regular file within the budget's limits.

    It is checked with `os.stat` before it is opened, and opened without
    blocking, so that neither a FIFO nor a device can hold the reader.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise YamlFileError(f"cannot read: {e.strerror or e}") from None
    _refuseIrregular(mode)
    if budget.files <= 0:
        raise YamlFileError(f"more than {MAX_FILES} configuration files (the limit)", "files", True)
    budget.files -= 1
    limit = min(MAX_FILE_BYTES, budget.bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise YamlFileError(f"cannot read: {e.strerror or e}") from None
    try:
        info = os.fstat(fd)  # what was opened, if the path changed since the stat
        _refuseIrregular(info.st_mode)
        if info.st_size > limit:
            raise _tooLarge(budget)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise YamlFileError(f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > limit:  # it grew while being read
        raise _tooLarge(budget)
    budget.bytes -= size
    return b"".join(chunks)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        bad = data[e.start : e.start + 1].hex()
        raise YamlFileError(f"not UTF-8 text: byte 0x{bad} on line {line}") from None


# -- parsing, with a composer that counts -------------------------------------------------


class _BoundedComposer(Composer):
    """PyYAML's composer, counting every value and refusing past the limits.

    An anchored node's size (itself and all it holds) is known once it is
    composed; each alias to it then costs that size, as if expanded.  An
    alias to a node that is still being composed (a recursive structure)
    is refused: nothing in a configuration needs one.
    """

    peek_event: Any  # from the parser it is mixed with
    check_event: Any

    def _startCounting(self, budget: Budget) -> None:
        self._budget = budget
        self._depth = 0
        self._sizes: dict[int, int] = {}
        self._composed = 0

    def _spend(self, count: int, mark: Any) -> None:
        self._composed += count
        self._budget.nodes -= count
        if self._budget.nodes < 0:
            where = f" (line {mark.line + 1})" if mark is not None else ""
            message = f"more than {MAX_NODES} values once aliases are expanded (the limit){where}"
            raise YamlFileError(message, "nodes", total=True)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if self.check_event(AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None:
                size = self._sizes.get(id(node))
                if size is None:
                    line = event.start_mark.line + 1
                    raise YamlFileError(f"line {line}: alias *{event.anchor} refers to itself")
                self._budget.aliases += 1
                self._spend(size, event.start_mark)
            return super().compose_node(parent, index)
        container = self.check_event(SequenceStartEvent, MappingStartEvent)
        if container:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                message = f"line {line}: nested more than {MAX_DEPTH} levels deep (the limit)"
                raise YamlFileError(message, "depth")
        before = self._composed
        self._spend(1, event.start_mark)
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._sizes[id(node)] = self._composed - before
        if container:
            self._depth -= 1
        return node


class PureLoader(_BoundedComposer, Reader, Scanner, Parser, SafeConstructor, Resolver):
    """The bounded safe loader in pure Python, for a PyYAML built without libyaml."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


Loader: type[Any] = PureLoader
"""The loader `parse` uses: libyaml's parser under the same composer when it is there."""

try:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - PyYAML without libyaml
    pass
else:

    class CLoader(_BoundedComposer, CParser, SafeConstructor, Resolver):
        """The bounded safe loader on libyaml's parser."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    Loader = CLoader


def _describe(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = error.problem or error.context or "invalid"
        return f"YAML syntax error at {where}{what}"
    return f"YAML error: {error}"


def parse(data: bytes, budget: Budget | None = None, loader: type[Any] | None = None) -> Any:
    """The single document ``data`` holds (None when empty), as `yaml.safe_load` reads it.

    ``loader`` is `Loader` unless given (`PureLoader`, say).
    """
    text = _decode(data)
    reader = (loader or Loader)(text)
    reader._startCounting(budget or Budget())
    try:
        return reader.get_single_data()
    except YamlFileError:
        raise
    except yaml.YAMLError as e:
        raise YamlFileError(_describe(e)) from None
    except RecursionError:  # not reached within MAX_DEPTH; never let it escape
        raise YamlFileError("nested too deeply to read", "depth") from None
    except (ValueError, TypeError, OverflowError) as e:  # a !!timestamp out of range, ...
        raise YamlFileError(f"YAML error: a value cannot be read: {e}") from None
    finally:
        reader.dispose()


def loadFile(path: str, budget: Budget | None = None) -> Any:
    """Read and parse ``path``; `YamlFileError` says why it cannot be."""
    budget = budget or Budget()
    return parse(readFile(path, budget), budget)
