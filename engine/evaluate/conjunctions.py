"""durable-rules patterns rewritten as alternatives of plain conjunctions (disjunctive normal form).

durable-rules joins the branches of every `$or` with a fresh "forward" node, which its alpha
walk visits for every case that reaches it and which nothing after it is shared with (rete.c,
createAlpha). A pattern that is a plain chain of tests is walked once per case, and shares its
first tests with every other chain that starts the same way. `alternatives` rewrites a pattern
as the conjunctions whose union it is, dropping those that can never match (a field tested and
also required missing; a field equal to two values, or equal and unequal to one) and those that
another alternative already covers (absorption: `a` covers `a and b`). A conjunction keeps its
tests in the order they first appear in the pattern, so a scope's tests stay first and a case
out of scope stops at the first one. A part whose expansion would be too large stays whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Leaf = dict[str, Any]  # one test: `{field: value}`, `{"$op": {field: operand}}`
# (field, operator, operand): operand as (type name, value), or ("expr", JSON) for `$m` and
# arithmetic, so that 1, 1.0 and True stay distinct keys
Key = tuple[str, str, tuple[str, Any]]
Conjunction = dict[Key, Leaf]  # insertion-ordered: the order the tests first appear in


def alternatives(
    pattern: Leaf, limit: int, convert: Callable[[Leaf], Leaf] | None = None
) -> list[Conjunction]:
    """The conjunctions whose union is `pattern`: each its tests by key, in pattern order.

    A part of the pattern whose expansion would need more than `limit` conjunctions (an `and`
    of k comparisons is unknown in 2^k - 1 ways) stays whole, as one test of its conjunctions:
    a pattern with `$and`/`$or` inside (whole(test) tells which). `convert` rewrites each test
    first (durable.py gives attributes their short names).
    """
    return _dnf(pattern, limit, convert or (lambda leaf: leaf))


def whole(test: Leaf) -> bool:
    """True for a part kept whole rather than expanded (see alternatives)."""
    return next(iter(test)) in ("$and", "$or")


def _dnf(pattern: Leaf, limit: int, convert: Callable[[Leaf], Leaf]) -> list[Conjunction]:
    ((operator, operand),) = pattern.items()
    if operator == "$and":
        found: list[Conjunction] = [{}]
        for part in operand:
            options = _dnf(part, limit, convert)
            found = _clean([{**a, **b} for a in found for b in options])
            if len(found) > limit:
                return [_kept_whole(pattern, convert)]
        return found
    if operator == "$or":
        found = _clean([c for part in operand for c in _dnf(part, limit, convert)])
        return found if len(found) <= limit else [_kept_whole(pattern, convert)]
    leaf = convert(pattern)
    return [{_key(leaf): leaf}]


def _kept_whole(pattern: Leaf, convert: Callable[[Leaf], Leaf]) -> Conjunction:
    converted = _converted(pattern, convert)
    return {("", "whole", ("expr", json.dumps(converted, sort_keys=True))): converted}


def _converted(pattern: Leaf, convert: Callable[[Leaf], Leaf]) -> Leaf:
    ((operator, operand),) = pattern.items()
    if operator in ("$and", "$or"):
        return {operator: [_converted(part, convert) for part in operand]}
    return convert(pattern)


def _key(leaf: Leaf) -> Key:
    ((name, operand),) = leaf.items()
    if not name.startswith("$"):
        return (name, "$eq", _operand(operand))
    ((field, value),) = operand.items()
    return (field, name, _operand(value))


def _operand(value: Any) -> tuple[str, Any]:
    if isinstance(value, dict | list):
        return ("expr", json.dumps(value, sort_keys=True))
    return (type(value).__name__, value)


def _clean(conjunctions: list[Conjunction]) -> list[Conjunction]:
    """Drop impossible conjunctions, duplicates and those another one covers."""
    unique: dict[frozenset[Key], Conjunction] = {}
    for conjunction in conjunctions:
        keys = frozenset(conjunction)
        if keys not in unique and not _impossible(conjunction):
            unique[keys] = conjunction
    kept: list[frozenset[Key]] = []
    for keys in sorted(unique, key=len):  # stable: same-sized ones keep their order
        if not any(smaller <= keys for smaller in kept if len(smaller) < len(keys)):
            kept.append(keys)
    return [unique[keys] for keys in kept]


def _impossible(conjunction: Conjunction) -> bool:
    """True when no fact can pass every test (a sound, incomplete check: it may miss some)."""
    by_field: dict[str, list[tuple[str, tuple[str, Any]]]] = {}
    for field, operator, operand in conjunction:
        tests = by_field.setdefault(field, [])
        if any(_exclusive(operator, operand, *other) for other in tests):
            return True
        tests.append((operator, operand))
    return False


def _exclusive(op: str, operand: tuple[str, Any], other_op: str, other: tuple[str, Any]) -> bool:
    """Two tests of one field that no value passes together."""
    if (op == "$nex") != (other_op == "$nex"):  # missing, and tested for a value
        return True
    if operand[0] != other[0] or operand[0] == "expr":
        return False  # values of different types may still compare equal (1 == 1.0)
    if op == other_op == "$eq":
        return bool(operand[1] != other[1])
    return {op, other_op} == {"$eq", "$neq"} and operand[1] == other[1]
