"""Read YAML safely and remember the line of every key, so errors can name file:line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # the C loader is much faster when PyYAML was built with libyaml
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


Path_ = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """Parsed YAML data, and on demand the 1-based line of each mapping key / sequence item."""

    data: Any
    text: str = ""
    _lines: dict[Path_, int] | None = field(default=None, repr=False)

    @property
    def lines(self) -> dict[Path_, int]:
        """Key lines, found by composing the text again: only errors need them."""
        if self._lines is None:
            self._lines = {}
            loader = _Loader(self.text)
            try:
                node = loader.get_single_node()
            finally:
                loader.dispose()
            if node is not None:
                _record(node, (), self._lines)
        return self._lines

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest known prefix of path."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


class YamlError(Exception):
    """Text that is not valid YAML (or gives a key twice); message names the line."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class DuplicateKeyError(YamlError):
    """A mapping that gives one key twice: YAML and JSON would keep the last value silently."""

    def __init__(self, key: object, line: int | None, first: int | None = None) -> None:
        earlier = f" (first on line {first})" if first else ""
        super().__init__(f"key '{key}' is given more than once{earlier}", line)
        self.key, self.first = key, first


class _UniqueKeyLoader(_Loader):
    """The safe loader, refusing a key given twice in one mapping (a red flag `true` followed by
    `false` must not silently become false). Merge keys (`<<`) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor below reports it
                continue
            if first is not None:
                raise DuplicateKeyError(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `045` as octal 37 and `1:30` as 90; a clinician typing an age or a BMI
# means decimal. Numbers follow YAML 1.2's core schema instead; other 1.1 number forms stay text,
# so validation names them as not a number.
_DECIMAL_INT = re.compile(r"[-+]?[0-9]+")
_CORE_INT = re.compile(r"0o[0-7]+|0x[0-9a-fA-F]+")
_CORE_FLOAT = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)


def _construct_int(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> int | str:
    value = str(loader.construct_scalar(node))
    if _DECIMAL_INT.fullmatch(value):
        return int(value, 10)
    if _CORE_INT.fullmatch(value):
        return int(value, 0)
    return value


def _construct_float(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> float | str:
    value = str(loader.construct_scalar(node))
    if _CORE_FLOAT.fullmatch(value):
        return float(loader.construct_yaml_float(node))
    return value


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with the safe loader (key lines are found only if asked for).

    A key given twice in one mapping raises DuplicateKeyError (with its line).
    """
    loader = _UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(f"malformed YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"malformed YAML: {exc}", None) from None
    finally:
        loader.dispose()
    return YamlDocument(data, text)


def _record(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                child = (*path, key_node.value)
                lines[child] = key_node.start_mark.line + 1
                _record(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(item, (*path, index), lines)
