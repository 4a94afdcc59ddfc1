"""Read JSON strictly: a key given twice, NaN or Infinity is an error naming where, never a value.

Python's json keeps the last of two equal keys and reads NaN and Infinity, which JSON does not
have. A Condition whose `verificationStatus` is given twice (confirmed, then refuted) would be
read as refuted without a word; a NaN compares false with every threshold. Every JSON input
(case files, JSONL rows, FHIR Bundles, CDS Hooks requests) goes through `loads_strict`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

JsonPath = tuple[str | int, ...]


class JsonInputError(ValueError):
    """JSON text that parses but is refused; `path` is where (keys and list indexes)."""

    def __init__(self, problem: str, path: JsonPath, key: str | None = None) -> None:
        super().__init__(problem)
        self.problem, self.path, self.key = problem, path, key
        self.document: Any = None  # the parsed document, to name what holds the place


class RepeatedKeyError(JsonInputError):
    """An object that gives one key twice; `key` is that key (show it only if it is a name)."""


class NonFiniteError(JsonInputError):
    """NaN, Infinity or -Infinity, which are not JSON numbers, or a number beyond a float."""


class _Repeated(dict[str, Any]):
    """An object built from pairs with a repeated key, found again by its path afterwards."""

    repeated: str


class _NonFinite:
    """Where NaN or Infinity stood, found again by its path afterwards."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def loads_strict(text: str | bytes) -> Any:
    """json.loads, refusing a repeated key (RepeatedKeyError) and NaN or Infinity
    (NonFiniteError), each naming the first place it occurs.

    The hooks only mark what they find; the path is looked for only when something was found,
    so a clean document costs one parse.
    """
    found: list[bool] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        built = dict(pairs)
        if len(built) == len(pairs):
            return built
        keys = [k for k, _ in pairs]
        marked = _Repeated(built)
        marked.repeated = next(k for k in keys if keys.count(k) > 1)
        found.append(True)
        return marked

    def constant(name: str) -> _NonFinite:
        found.append(True)
        return _NonFinite(f"{name} is not a JSON number")

    def number(literal: str) -> float | _NonFinite:
        value = float(literal)
        if math.isfinite(value):
            return value
        found.append(True)  # 1e400 would be read as Infinity
        return _NonFinite("a number too large to read")

    value = json.loads(
        text, object_pairs_hook=pairs_hook, parse_constant=constant, parse_float=number
    )
    if found:
        try:
            _raise_first(value, ())
        except JsonInputError as exc:
            exc.document = value
            raise
    return value


def _raise_first(value: Any, path: JsonPath) -> None:
    """Raise for the first marked place in document order (outer objects before inner ones)."""
    stack: list[tuple[Any, JsonPath]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, _NonFinite):
            raise NonFiniteError(node.problem, where)
        if isinstance(node, _Repeated):
            raise RepeatedKeyError("a key is given more than once", where, node.repeated)
        if isinstance(node, dict):
            stack.extend((v, (*where, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (*where, i)) for i, v in reversed(list(enumerate(node))))


def place(path: JsonPath, show: Callable[[str], str | None]) -> str:
    """A path as messages print it (`entry[3].resource.code`); `show` gives a key as it may be
    shown, or None for a key that could be data (printed as `?`)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (show(part) or "?")
    return out or "the top level"
