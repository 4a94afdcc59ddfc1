"""Three-valued conditions as durable-rules patterns: the pattern compiler and its limits.

A condition compiles to the patterns of "definitely true", "definitely false" and "unknown"
(Kleene logic, negation normal form); engine/evaluate/durable.py says how they are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.models import Scalar
from engine.rules.condition import (
    COMPARE,
    NEGATED_OP,
    And,
    Compare,
    Cond,
    Const,
    Expr,
    FieldRef,
    Known,
    Member,
    Not,
    Truth,
    fields_of,
)

# durable-rules' alpha-node stack holds 64 entries (MAX_STACK_SIZE); keep a margin.
STACK_BUDGET = 60
MAX_GROUPS = 48
# conjunctions one status pattern may expand to; the bundled rules need at most 116
MAX_ALTERNATIVES = 256
# a conjunction with parts kept whole (too wide to expand): rete.c MAX_SEQUENCE_EXPRESSIONS is
# 32 per pattern and every $and/$or takes two; one $and is the guard and group test around it
MAX_PATTERN_OPERATORS = 14
MAX_ACTIONS = 4000  # durable-rules rules per ruleset: rete.c MAX_ACTIONS is 4096
MAX_RULESETS = 8  # the layout search stops here: a rule base needing more is refused
SID = "0"
# cases asserted together in one call (each in its own slot, with the slot number as its id), and
# matches of one conjunction delivered in one action (`cap`): one action per conjunction per
# batch of cases instead of one per match. More matches than the cap arrive in further actions.
SLOTS = 512
CAP = 1000
_OPS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_ARITH = {"+": "$add", "-": "$sub", "*": "$mul"}
Pattern = dict[str, Any] | bool  # True / False are patterns folded to a constant
GUARD = {"kind": "case"}


class EngineError(Exception):
    """durable-rules refused something it should not have: a bug in miss-screen."""


class LayoutError(EngineError):
    """No layout of the conjunctions fits durable-rules' limits; `rules` are the indices of
    the rules to blame (those whose conjunctions fit no layout even alone, if any)."""

    def __init__(self, message: str, rules: list[int]) -> None:
        super().__init__(message)
        self.rules = rules


# --- compiling conditions to patterns ---------------------------------------------------------


def ruled_out_key(field: str, values: frozenset[Scalar]) -> str:
    """Name of the flag asserted when constraints rule out every value of `values` for unknown
    `field` (e.g. `__ro__mis_technique__0_3`: the domain positions of the set)."""
    domain = FIELDS_BY_NAME[field].domain
    if not domain:  # a bounded derived integer (Ruleset.bounded_fields): the values themselves
        return f"__ro__{field}__" + "_".join(sorted(str(v) for v in values))
    return f"__ro__{field}__" + "_".join(str(i) for i in sorted(domain.index(v) for v in values))


def _all(parts: list[Pattern]) -> Pattern:
    if any(p is False for p in parts):
        return False
    kept = [p for p in parts if p is not True]
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else {"$and": kept}


def _any(parts: list[Pattern]) -> Pattern:
    if any(p is True for p in parts):
        return True
    kept = [p for p in parts if p is not False]
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else {"$or": kept}


def _expr(expr: Expr) -> Any:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, FieldRef):
        return {"$m": expr.name}
    if not fields_of(expr):  # the parser folds these; an unfolded one would never match
        raise EngineError("an expression without a field reached the durable-rules compiler")
    return {_ARITH[expr.op]: {"$l": _expr(expr.left), "$r": _expr(expr.right)}}


def _compare(field: str, op: str, rhs: Any) -> dict[str, Any]:
    return {field: rhs} if op == "==" else {_OPS[op]: {field: rhs}}


def _absent(field: str) -> dict[str, Any]:
    return {"$nex": {field: 1}}


@dataclass(frozen=True)
class KleenePatterns:
    """The NNF patterns of a condition: true, false, not false, not true, and unknown.

    `unknown` is built directly (an atom is unknown when its field is missing and the
    constraints leave it open; a conjunction when no part is false and some part is unknown)
    rather than as `not_false and not_true`: the same truth, in far fewer tests.
    """

    true: Pattern
    false: Pattern
    not_false: Pattern
    not_true: Pattern
    unknown: Pattern

    def negate(self) -> KleenePatterns:
        return KleenePatterns(self.false, self.true, self.not_true, self.not_false, self.unknown)


class PatternCompiler:
    """Kleene condition -> its durable-rules patterns (KleenePatterns)."""

    def __init__(
        self,
        constrained: frozenset[str],
        bounded: dict[str, tuple[Scalar, ...]] | None = None,
    ) -> None:
        # bounded: derived fields whose band values stand in for a finite domain (a comparison
        # on one is the membership of the values it holds for); their bounds narrow like
        # constraints do (Ruleset.bounded_fields)
        self.bounded = bounded or {}
        self.constrained = constrained | frozenset(self.bounded)
        # value sets whose ruled-out flag the patterns read, per field: the evaluator asserts
        # one flag per set rather than one per value, so "some of these is still possible" is
        # one `$nex` test instead of an `$or` that fires once for every possible value
        self.value_sets: dict[str, set[frozenset[Scalar]]] = {}

    def kleene(self, cond: Cond) -> KleenePatterns:
        if isinstance(cond, Truth):
            return KleenePatterns(cond.value, not cond.value, cond.value, not cond.value, False)
        if isinstance(cond, Known):
            present, absent = {"$ex": {cond.field: 1}}, _absent(cond.field)
            known = KleenePatterns(present, absent, present, absent, False)
            return known.negate() if cond.negated else known
        if isinstance(cond, Compare):
            return self._comparison(cond)
        if isinstance(cond, Member):
            member = self._membership(cond)
            return member.negate() if cond.negated else member
        if isinstance(cond, Not):
            return self.kleene(cond.item).negate()
        parts = [self.kleene(item) for item in cond.items]
        trues = [p.true for p in parts]
        falses = [p.false for p in parts]
        not_falses = [p.not_false for p in parts]
        not_trues = [p.not_true for p in parts]
        some_unknown = _any([p.unknown for p in parts])
        if isinstance(cond, And):  # unknown: no part false, some part unknown
            return KleenePatterns(
                _all(trues),
                _any(falses),
                _all(not_falses),
                _any(not_trues),
                _all([*not_falses, some_unknown]),
            )
        return KleenePatterns(  # unknown: no part true, some part unknown
            _any(trues),
            _all(falses),
            _any(not_falses),
            _all(not_trues),
            _all([*not_trues, some_unknown]),
        )

    def _flag(self, field: str, values: Sequence[Scalar]) -> str:
        chosen = frozenset(values)
        self.value_sets.setdefault(field, set()).add(chosen)
        return ruled_out_key(field, chosen)

    def _ruled_out(self, field: str, values: Sequence[Scalar]) -> Pattern:
        """Pattern of "constraints rule out every one of values" (only while field is unknown)."""
        if not values:
            return True
        if field not in self.constrained:
            return False
        return {self._flag(field, values): True}

    def _still_possible(self, field: str, values: Sequence[Scalar]) -> Pattern:
        """Pattern of "some of values is still possible": not all of them ruled out."""
        if not values:
            return False
        if field not in self.constrained:
            return True
        return _absent(self._flag(field, values))

    def _comparison(self, cond: Compare) -> KleenePatterns:
        rhs = _expr(cond.rhs)
        # durable-rules can match `$m` references to a missing field (events.c reads a stale
        # result), so every field the right side reads is required to exist first
        present = [{"$ex": {f: 1}} for f in sorted(fields_of(cond.rhs))]
        holds = _all([*present, _compare(cond.field, cond.op, rhs)])
        fails = _all([*present, _compare(cond.field, NEGATED_OP[cond.op], rhs)])
        missing = _any([_absent(f) for f in sorted({cond.field} | fields_of(cond.rhs))])
        spec = FIELDS_BY_NAME[cond.field]
        if cond.field in self.bounded and isinstance(cond.rhs, Const):
            test, bound = COMPARE[cond.op], cond.rhs.value
            domain = self.bounded[cond.field]
            holding = [v for v in domain if test(v, bound)]
            failing = [v for v in domain if not test(v, bound)]
            if holding and failing:  # else as any number: unknown while the field is unknown
                # the comparison itself when known, the bounds' ruled-out flags when not
                field, missing = cond.field, _absent(cond.field)
                holds = _compare(field, cond.op, rhs)
                fails = _compare(field, NEGATED_OP[cond.op], rhs)
                return KleenePatterns(
                    true=_any([holds, self._ruled_out(field, failing)]),
                    false=_any([fails, self._ruled_out(field, holding)]),
                    not_false=_all([_any([holds, missing]), self._still_possible(field, holding)]),
                    not_true=_all([_any([fails, missing]), self._still_possible(field, failing)]),
                    unknown=_all(
                        [
                            missing,
                            self._still_possible(field, holding),
                            self._still_possible(field, failing),
                        ]
                    ),
                )
        if spec.type in (FieldType.enum, FieldType.boolean) and isinstance(cond.rhs, Const):
            value = cond.rhs.value
            equal = _compare(cond.field, "==", value)
            unequal = _compare(cond.field, "!=", value)
            # unknown field: `x == v` is false once v is ruled out, and `x != v` true
            eq = KleenePatterns(
                true=equal,
                false=_any([unequal, self._ruled_out(cond.field, [value])]),
                not_false=_all([_any([equal, missing]), self._still_possible(cond.field, [value])]),
                not_true=_any([unequal, missing]),
                # missing, and v still possible: with one value left the field is inferred
                unknown=_all([missing, self._still_possible(cond.field, [value])]),
            )
            return eq if cond.op == "==" else eq.negate()
        return KleenePatterns(holds, fails, _any([holds, missing]), _any([fails, missing]), missing)

    def _membership(self, cond: Member) -> KleenePatterns:
        spec = FIELDS_BY_NAME[cond.field]
        field, members = cond.field, list(cond.values)
        domain = self.bounded.get(field, spec.domain)
        others = [v for v in domain if v not in set(members)]
        finite = spec.type in (FieldType.enum, FieldType.boolean) or (
            field in self.bounded and bool(others) and any(v in domain for v in members)
        )
        return self._member_patterns(field, members, others, finite=finite)

    def _member_patterns(
        self, field: str, members: list[Scalar], others: list[Scalar], *, finite: bool
    ) -> KleenePatterns:
        """`field in members`, `others` being the rest of its finite domain (if finite)."""
        any_equal = _any([_compare(field, "==", v) for v in members])
        all_unequal = _all([_compare(field, "!=", v) for v in members])
        missing = _absent(field)
        if finite and not others:  # the list holds every value: true whatever is unknown
            return KleenePatterns(True, False, True, False, False)
        out_members = self._ruled_out(field, members) if finite else False
        out_others = self._ruled_out(field, others) if finite else False
        return KleenePatterns(
            true=_any([any_equal, out_others]),
            false=_any([all_unequal, out_members]),
            not_false=_all(
                [
                    _any([any_equal, missing]),
                    self._still_possible(field, members) if finite else True,
                ]
            ),
            not_true=_all(
                [
                    _any([all_unequal, missing]),
                    self._still_possible(field, others) if finite else True,
                ]
            ),
            unknown=_all(
                [
                    missing,
                    self._still_possible(field, members) if finite else True,
                    self._still_possible(field, others) if finite else True,
                ]
            ),
        )
