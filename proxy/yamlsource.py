"""YAML loading that remembers where every key and value came from.

Settings and rule files are validated after parsing, and a semantic error ("unknown key
'ua_clas'") is only useful with its file:line:col. This loader builds plain dicts and lists
(subclasses that carry marks), so validators work on ordinary Python values.

It is also a trust boundary: rule files may come from anywhere. Aliases are refused outright
(they are the "billion laughs" amplifier and config files never need them), duplicate keys are
an error instead of PyYAML's silent last-one-wins, only regular files are read and no more
than MAX_FILE_BYTES of them (a FIFO or /dev/zero would block or fill memory), nesting is
capped at MAX_DEPTH (PyYAML's composer recurses: 350 levels were a RecursionError), and an
integer too long for Python to convert is an error at its line, not a ValueError.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:  # libyaml's C scanner and parser: 5x faster than PyYAML's own on the agent lists
    from yaml._yaml import CParser
except ImportError as exc:  # pragma: no cover - PyPI's PyYAML wheels all include libyaml
    raise ImportError("SonicShield needs PyYAML built with libyaml (yaml._yaml)") from exc

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 64  # nested mappings and lists; the shipped files use at most 5


@dataclass(frozen=True, slots=True)
class Mark:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        # line 0 marks a value that came from no file line (a command-line flag, a default)
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Problem:
    mark: Mark
    message: str

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}"


class ConfigError(Exception):
    """One or more problems in a config or rule file; str() lists them one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.mark.file, p.mark.line, p.mark.col))
        super().__init__("\n".join(str(p) for p in self.problems))


class LocatedDict(dict[str, Any]):
    """A mapping that knows where it, each key and each value stand in the source."""

    mark: Mark
    key_marks: dict[str, Mark]
    value_marks: dict[str, Mark]

    def key_mark(self, key: str) -> Mark:
        return self.key_marks.get(key, self.mark)

    def value_mark(self, key: str) -> Mark:
        return self.value_marks.get(key, self.mark)


class LocatedList(list[Any]):
    """A sequence that knows where it and each item stand in the source."""

    mark: Mark
    item_marks: list[Mark]

    def item_mark(self, index: int) -> Mark:
        return self.item_marks[index] if index < len(self.item_marks) else self.mark


class _LocatingLoader(Composer, CParser, SafeConstructor, Resolver):
    """Events from libyaml, composed and constructed in Python so every node keeps its mark."""

    def __init__(self, text: str, name: str) -> None:
        CParser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.display_name = name
        self._depth = 0

    def _mark(self, node: Node) -> Mark:
        m = node.start_mark
        return Mark(self.display_name, m.line + 1, m.column + 1)

    def _event_mark(self) -> Mark:
        event = self.peek_event()
        m = event.start_mark if event is not None else None
        return Mark(self.display_name, m.line + 1, m.column + 1) if m else Mark(
            self.display_name, 1, 1)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            raise _LoadProblem(self._event_mark(), "YAML aliases (*name) are not allowed here; "
                                                   "write the value out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LoadProblem(self._event_mark(), f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise _LoadProblem(self._mark(node), "an integer with too many digits") from None

    def construct_mapping(  # type: ignore[override]
        self, node: MappingNode, deep: bool = False
    ) -> LocatedDict:
        if not isinstance(node, MappingNode):
            raise _LoadProblem(self._mark(node), "expected a mapping")
        result = LocatedDict()
        result.mark = self._mark(node)
        result.key_marks = {}
        result.value_marks = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _LoadProblem(self._mark(key_node), f"keys must be strings, not {key!r}")
            if key in result:
                first = result.key_marks[key]
                raise _LoadProblem(
                    self._mark(key_node),
                    f"duplicate key '{key}' (first defined at line {first.line})",
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_marks[key] = self._mark(key_node)
            result.value_marks[key] = self._mark(value_node)
        return result

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> LocatedList:
        result = LocatedList(self.construct_object(child, deep=True) for child in node.value)
        result.mark = self._mark(node)
        result.item_marks = [self._mark(child) for child in node.value]
        return result


_LocatingLoader.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:map", _LocatingLoader.construct_mapping
)
_LocatingLoader.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:seq", _LocatingLoader.construct_sequence
)
_LocatingLoader.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:int", _LocatingLoader.construct_yaml_int
)


class _LoadProblem(Exception):
    def __init__(self, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(mark, message)


def load_yaml_text(text: str, name: str) -> Any:
    """Parse YAML text; raise ConfigError naming file:line:col on any syntax problem."""
    loader = _LocatingLoader(text, name)
    try:
        return loader.get_single_data()
    except _LoadProblem as exc:
        raise ConfigError([exc.problem]) from None
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        mark = Mark(name, m.line + 1, m.column + 1) if m else Mark(name, 1, 1)
        raise ConfigError([Problem(mark, f"invalid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(Mark(name, 1, 1), f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path, display_name: str | None = None) -> Any:
    """Read and parse a YAML file with a size cap; errors are ConfigError with file:line:col."""
    name = display_name or str(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait for one
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError([Problem(Mark(name, 1, 1),
                                           "not a regular file (a FIFO, device or socket)")])
            if info.st_size > MAX_FILE_BYTES:
                raise ConfigError([Problem(Mark(name, 1, 1), f"file is {info.st_size} bytes; "
                                           f"the limit is {MAX_FILE_BYTES}")])
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError([Problem(Mark(name, 1, 1), f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:  # it grew while it was read
        raise ConfigError([Problem(Mark(name, 1, 1), f"file is over {MAX_FILE_BYTES} bytes; "
                                   f"the limit is {MAX_FILE_BYTES}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(Mark(name, line, 1), "file is not valid UTF-8")]) from None
    return load_yaml_text(text, name)


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
