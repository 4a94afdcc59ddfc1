"""Read YAML safely and remember the line of every key, so errors can name file:line."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.cachedir import cache_dir, prune, read_json, write_json

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
        node = loader.get_single_node()
        if node is not None and "&" in text:  # an alias needs an anchor: no &, no alias to count
            _check_expansion(node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(f"malformed YAML: {problem}", line) from None
    except yaml.reader.ReaderError as exc:  # a control character; its str() has a second line
        found = text.find(chr(exc.character)) if isinstance(exc.character, int) else -1
        line = text.count("\n", 0, found) + 1 if found >= 0 else None
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise YamlError(f"malformed YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"malformed YAML: {' '.join(str(exc).split())}", None) from None
    finally:
        loader.dispose()
    return YamlDocument(data, text)


# Aliases let a 1 KB file stand for a billion values ("billion laughs"): PyYAML shares them,
# but anything that walks the data (validation, the JSON cache) expands them, for gigabytes and
# minutes in C code that no signal interrupts. Aliases may add at most this many values.
MAX_ALIAS_VALUES = 100_000


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand beyond MAX_ALIAS_VALUES values, or refer to an
    enclosing node (a cycle). Counted over the node graph, each distinct node once."""
    expanded: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
    open_nodes: set[int] = set()
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            open_nodes.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in children)
            if expanded[key] - distinct > MAX_ALIAS_VALUES:
                raise YamlError(
                    f"aliases expand to more than {MAX_ALIAS_VALUES:,} values "
                    "(an alias bomb?); write the values out",
                    node.start_mark.line + 1,
                )
            continue
        if key in expanded:
            continue
        if key in open_nodes:
            raise YamlError("an alias refers to a value that contains it", node.start_mark.line + 1)
        open_nodes.add(key)
        distinct += 1
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(children) if id(c) not in expanded)


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


class ParsedCache:
    """Parsed YAML documents by the sha256 of their text, kept on disk between processes.

    Parsing the 90 files of the bundled rules took about 65 ms of a cold `screen` (PyYAML
    constructs every object in Python, even with libyaml). A document is kept only when JSON
    gives it back exactly (same types, values and key order; a date or a non-text key does
    not), and each lookup returns fresh objects, so callers may change what they get. The
    key of the file is this module's code and PyYAML's version: another parser, another file.
    Use: `parse` every text, then `save` once (it keeps the documents of this load only).
    """

    def __init__(self, folder: Path | None = None) -> None:
        folder = cache_dir() if folder is None else folder
        try:
            digest = _parser_digest()
        except OSError:  # no source to key by (an install without .py files): no cache
            folder = None
        self.path = None if folder is None else folder / f"yaml-{digest}.json"
        found = read_json(self.path) if self.path is not None else None
        self.stored: dict[str, str] = {}
        if isinstance(found, dict) and all(isinstance(v, str) for v in found.values()):
            self.stored = found
        self.used: dict[str, str] = {}
        self.added = False
        self.seen: list[str] = []  # the sha256 of every text parsed, in order (stamp.py)

    def parse(self, text: str) -> YamlDocument:
        """parse_yaml(text), from the cache when this text was parsed before."""
        if self.path is None:
            return parse_yaml(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        self.seen.append(digest)
        kept = self.stored.get(digest)
        if kept is not None:
            self.used[digest] = kept
            return YamlDocument(json.loads(kept), text)
        doc = parse_yaml(text)  # a YamlError is never kept: the text is parsed again next time
        try:
            dumped = json.dumps(doc.data, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):  # not JSON (a date, say): parsed every time
            return doc
        if _exactly(json.loads(dumped), doc.data):
            self.used[digest] = dumped
            self.added = True
        return doc

    def save(self) -> None:
        """Write the documents of this load, if any was new or some stored one went unused."""
        if self.path is not None and (self.added or self.used.keys() != self.stored.keys()):
            write_json(self.path, self.used)
            prune(self.path.parent, "yaml-*.json", 2)  # another parser's documents go


def _parser_digest() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"\0{yaml.__version__}\0{_Loader.__name__}".encode())
    return digest.hexdigest()[:32]


def _exactly(copy: Any, original: Any) -> bool:
    """Whether a JSON round trip gave the original back: values, types and key order."""
    if type(copy) is not type(original):
        return False
    if isinstance(original, dict):
        return list(copy) == list(original) and all(
            _exactly(copy[k], original[k]) for k in original
        )
    if isinstance(original, list):
        return len(copy) == len(original) and all(
            _exactly(a, b) for a, b in zip(copy, original, strict=True)
        )
    return bool(copy == original)
