"""Three-valued (Kleene) evaluation of conditions, compiled to Python closures.

True, False or None (unknown). A comparison on an unknown enum or boolean field is decided over the
values still possible for it: true if it holds for all of them, false if for none. Used by the
derive step (bands, constraints) and by the reference evaluator; the durable-rules backend encodes
the same semantics in its patterns and is tested against this.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from functools import partial

from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.models import Scalar
from engine.rules.condition import (
    COMPARE,
    And,
    Compare,
    Cond,
    Const,
    Known,
    Member,
    Not,
    Or,
    Truth,
    evaluate_expr,
    fields_of,
)

Values = Mapping[str, Scalar]
Possible = Mapping[str, frozenset[Scalar]]
Kleene = Callable[[Values, Possible], bool | None]


def _finite_domain(field: str) -> frozenset[Scalar] | None:
    spec = FIELDS_BY_NAME[field]
    if spec.type in (FieldType.enum, FieldType.boolean):
        return frozenset(spec.domain)
    return None


def _over_possible(field: str, test: Callable[[Scalar], bool]) -> Kleene:
    domain = _finite_domain(field)
    # unknown and not narrowed: the same answer for every case, computed once
    unconstrained = None if domain is None else _same(test, domain)

    def decide(values: Values, possible: Possible) -> bool | None:
        value = values.get(field)
        if value is not None:
            return test(value)
        narrowed = possible.get(field)  # a numeric field's set: the totals a score can reach
        if narrowed is None:
            return unconstrained
        return _same(test, narrowed)

    return decide


def _same(test: Callable[[Scalar], bool], candidates: frozenset[Scalar]) -> bool | None:
    """The test's answer if every candidate value gives the same one, else unknown."""
    outcomes = {test(v) for v in candidates}
    return outcomes.pop() if len(outcomes) == 1 else None


# a node's compiled forms are kept in its own __dict__ under these keys (as cached_property
# keeps a value): they live and die with the ruleset that holds the node, and no table keyed by
# id() outlives it; condition.Node leaves them out when a node is pickled
_KLEENE = "_kleene"
_EXPLAIN = "_explain"
# `value op constant` as `mirrored(constant, value)`: a C call with the constant bound first
_MIRRORED: dict[str, Callable[[Scalar, Scalar], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.gt,
    "<=": operator.ge,
    ">": operator.lt,
    ">=": operator.le,
}


def compile_kleene(cond: Cond) -> Kleene:
    """Compile a condition into a closure returning True, False or None (kept on the node).

    Kept on the node, not in a table keyed by value: hashing a frozen tree on every call cost
    more than evaluating it. Two threads compiling the same node at once both store an
    equivalent closure; either is right.
    """
    found: Kleene | None = cond.__dict__.get(_KLEENE)
    if found is None:
        found = cond.__dict__[_KLEENE] = _compile(cond)
    return found


def _compile(cond: Cond) -> Kleene:
    if isinstance(cond, Truth):
        constant = cond.value
        return lambda values, possible: constant
    if isinstance(cond, Known):
        field, negated = cond.field, cond.negated
        return lambda values, possible: (field in values) != negated
    if isinstance(cond, Member):
        members = frozenset(cond.values)
        if cond.negated:
            return _over_possible(cond.field, lambda v: v not in members)
        return _over_possible(cond.field, members.__contains__)
    if isinstance(cond, Compare):
        if isinstance(cond.rhs, Const):  # one C call per test: `v > 5` as `lt(5, v)`
            return _over_possible(cond.field, partial(_MIRRORED[cond.op], cond.rhs.value))
        test = COMPARE[cond.op]
        field, rhs = cond.field, cond.rhs

        def compare_expr(values: Values, possible: Possible) -> bool | None:
            left = values.get(field)
            right = evaluate_expr(rhs, values)
            if left is None or right is None:
                return None
            return test(left, right)

        return compare_expr
    if isinstance(cond, Not):
        inner = compile_kleene(cond.item)

        def negate(values: Values, possible: Possible) -> bool | None:
            result = inner(values, possible)
            return None if result is None else not result

        return negate
    parts = tuple(compile_kleene(item) for item in cond.items)
    if isinstance(cond, And):

        def conjunction(values: Values, possible: Possible) -> bool | None:
            unknown = False
            for part in parts:
                result = part(values, possible)
                if result is False:
                    return False
                if result is None:
                    unknown = True
            return None if unknown else True

        return conjunction

    def disjunction(values: Values, possible: Possible) -> bool | None:
        unknown = False
        for part in parts:
            result = part(values, possible)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return disjunction


Explain = Callable[[Values, Possible], set[str]]


def unknown_fields(cond: Cond, values: Values, possible: Possible) -> set[str]:
    """The unknown fields that leave an unknown condition unknown: the data that would settle it."""
    found: Explain | None = cond.__dict__.get(_EXPLAIN)
    if found is None:
        found = cond.__dict__[_EXPLAIN] = _explainer(cond)
    return found(values, possible)


def _explainer(cond: Cond) -> Explain:
    if isinstance(cond, Compare | Member):
        read = tuple(sorted(fields_of(cond)))
        return lambda values, possible: {f for f in read if f not in values}
    if isinstance(cond, Known | Truth):
        return lambda values, possible: set()
    if isinstance(cond, Not):
        inner = cond.item
        return lambda values, possible: unknown_fields(inner, values, possible)
    parts = [(compile_kleene(item), item) for item in cond.items]

    def explain(values: Values, possible: Possible) -> set[str]:
        found: set[str] = set()
        for decide, item in parts:
            if decide(values, possible) is None:
                found |= unknown_fields(item, values, possible)
        return found

    return explain


def narrow(cond: Cond, possible: Possible) -> Cond:
    """The condition with values the constraints rule out removed, for showing to a reader.

    `mis_technique in ["tubular_discectomy", "llif"]` reads `mis_technique in
    ["tubular_discectomy"]` for a discectomy; the truth value is the same for these facts.
    """
    if isinstance(cond, Member) and cond.field in possible and not cond.negated:
        kept = tuple(v for v in cond.values if v in possible[cond.field])
        return Member(cond.field, kept) if kept else Truth(False)
    if isinstance(cond, Compare) and cond.op == "==" and cond.field in possible:
        if isinstance(cond.rhs, Const) and cond.rhs.value not in possible[cond.field]:
            return Truth(False)
        return cond
    if isinstance(cond, Not):
        return Not(narrow(cond.item, possible))
    if isinstance(cond, And | Or):
        parts = [narrow(item, possible) for item in cond.items]
        neutral = isinstance(cond, And)  # true is neutral in a conjunction, false in a disjunction
        if any(isinstance(p, Truth) and p.value is not neutral for p in parts):
            return Truth(not neutral)
        remaining: tuple[Cond, ...] = tuple(p for p in parts if not isinstance(p, Truth))
        if not remaining:
            return Truth(neutral)
        if len(remaining) == 1:
            return remaining[0]
        return And(remaining) if isinstance(cond, And) else Or(remaining)
    return cond
