"""Patterns rewritten as alternatives of plain conjunctions: the same matches, no `$or`."""

from __future__ import annotations

import itertools
from typing import Any

from engine.evaluate.conjunctions import alternatives, whole

A: dict[str, Any] = {"a": 1}
NOT_A = {"$neq": {"a": 1}}
A2 = {"a": 2}
NO_A = {"$nex": {"a": 1}}
B = {"$gt": {"b": 5}}
NO_B = {"$nex": {"b": 1}}
C = {"c": "x"}


def conjunction_tests(pattern: dict[str, Any], limit: int = 100) -> list[list[dict[str, Any]]]:
    return [list(c.values()) for c in alternatives(pattern, limit)]


def test_and_distributes_over_or_keeping_the_order_tests_appear_in() -> None:
    pattern = {"$and": [C, {"$or": [A, NO_A]}, {"$or": [B, NO_B]}]}
    assert conjunction_tests(pattern) == [[C, A, B], [C, A, NO_B], [C, NO_A, B], [C, NO_A, NO_B]]


def test_conjunctions_no_fact_can_pass_are_dropped() -> None:
    pattern = {"$and": [{"$or": [A, A2, NO_A]}, {"$or": [NOT_A, {"$ex": {"a": 1}}]}]}
    # a == 1 and a != 1; a missing and a present: impossible. a == 2 and a != 1 stays.
    assert conjunction_tests(pattern) == [
        [A, {"$ex": {"a": 1}}],
        [A2, NOT_A],
        [A2, {"$ex": {"a": 1}}],
    ]
    assert conjunction_tests({"$and": [A, A2]}) == []


def test_values_of_different_types_are_not_assumed_unequal() -> None:
    """durable-rules compares 1 and 1.0 (and true and 1) as equal: no pruning across types."""
    assert conjunction_tests({"$and": [{"a": 1}, {"a": 1.0}]}) == [[{"a": 1}, {"a": 1.0}]]


def test_a_conjunction_another_covers_is_dropped() -> None:
    pattern = {"$or": [{"$and": [A, B]}, A, {"$and": [B, A]}]}
    assert conjunction_tests(pattern) == [[A]]


def test_field_references_are_kept_and_never_compared() -> None:
    ref = {"$gt": {"a": {"$m": "b"}}}
    pattern = {"$and": [{"$ex": {"b": 1}}, ref, {"$or": [{"$lt": {"a": {"$m": "b"}}}, NO_B]}]}
    # `$nex b` contradicts `$ex b`; the two references are kept as written
    assert conjunction_tests(pattern) == [[{"$ex": {"b": 1}}, ref, {"$lt": {"a": {"$m": "b"}}}]]


def test_conversion_applies_to_every_test() -> None:
    renamed = alternatives({"$or": [A, B]}, 10, lambda t: {"wrapped": t})
    assert [list(c.values()) for c in renamed] == [[{"wrapped": A}], [{"wrapped": B}]]


def test_a_part_too_wide_to_expand_stays_whole() -> None:
    clauses = [{"$or": [{f"x{i}": 1}, {f"y{i}": 1}]} for i in range(12)]  # 4,096 if expanded
    wide = {"$and": clauses}
    pattern = {"$and": [{"$or": [A, NO_A]}, wide]}
    found = conjunction_tests(pattern, 256)
    assert found == [[A, wide], [NO_A, wide]]  # the small part expanded, the wide one whole
    assert [whole(t) for t in found[0]] == [False, True]


def test_the_kept_part_is_converted_too() -> None:
    wide = {"$or": [A, B, C]}
    (only,) = alternatives(wide, 2, lambda t: {"wrapped": t})
    assert list(only.values()) == [{"$or": [{"wrapped": A}, {"wrapped": B}, {"wrapped": C}]}]


def _matches(pattern: dict[str, Any], fact: dict[str, Any]) -> bool:
    ((op, operand),) = pattern.items()
    if op == "$and":
        return all(_matches(p, fact) for p in operand)
    if op == "$or":
        return any(_matches(p, fact) for p in operand)
    if op == "$nex":
        return next(iter(operand)) not in fact
    if op == "$ex":
        return next(iter(operand)) in fact
    if not op.startswith("$"):
        return op in fact and fact[op] == operand
    ((field, value),) = operand.items()
    if field not in fact:
        return False
    compare = {"$neq": "__ne__", "$gt": "__gt__", "$lt": "__lt__"}[op]
    return bool(getattr(fact[field], compare)(value))


def test_the_union_of_the_conjunctions_matches_what_the_pattern_matches() -> None:
    pattern = {
        "$and": [
            {"$or": [A, NO_A]},
            {"$or": [{"$and": [NOT_A, B]}, {"$and": [NO_A, NO_B]}, C]},
            {"$or": [{"$lt": {"b": 9}}, NO_B]},
        ]
    }
    options = conjunction_tests(pattern)
    values: dict[str, list[Any]] = {"a": [None, 1, 2], "b": [None, 3, 7, 11], "c": [None, "x"]}
    for combo in itertools.product(*values.values()):
        fact = {k: v for k, v in zip(values, combo, strict=True) if v is not None}
        expected = _matches(pattern, fact)
        assert any(all(_matches(t, fact) for t in tests) for tests in options) == expected, fact
