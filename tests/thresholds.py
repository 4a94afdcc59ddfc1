"""Cases at every numeric threshold of a ruleset and just either side of it (issue 29 item 2).

The thresholds are read from the parsed conditions (engine.rules.condition), never from rule
text: every numeric constant (or arithmetic of the case's own values) compared against a field in
a rule's scope or condition, a derived attribute's bands or condition, or a constraint. Each is
probed at c, c - eps and c + eps (eps 1 for a whole number; for a decimal both 0.1, the
precision of the synthetic cohort, and the next float either way) within the data dictionary's
range, and with the field unknown.

A threshold on a derived field is reached through the inputs: an arithmetic attribute by solving
for one of its inputs (pi_ll_mismatch_deg through pelvic_incidence_deg), a points score through
its supplied total (tlics_score), and a banded attribute (meyerding_grade, misdef_class) at every
threshold of its own bands. The rest of each case is a synthetic row (engine.synth) on which the
threshold bites: the reference engine's result differs between the probed values, so the rule is
in scope there and the comparison decides something.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine.dictionary import INPUT_FIELDS, FieldSpec, FieldType
from engine.errors import CaseInputError
from engine.evaluate.base import rule_status
from engine.io.cases import validate_case
from engine.rules.condition import (
    And,
    Compare,
    Cond,
    Const,
    Expr,
    Member,
    Not,
    Or,
    evaluate_expr,
    fields_of,
    to_text,
)
from engine.rules.logic import compile_kleene
from engine.rules.ruleset import DerivedRule, Ruleset
from engine.screen import prepare

DECIMAL_STEP = 0.1  # the synthetic cohort's precision for decimal fields
BITING_ROWS = 3  # base rows kept per threshold
INPUTS = frozenset(INPUT_FIELDS)

Values = dict[str, Any]
Change = dict[str, Any]  # fields set (None: left unknown) on a base row


@dataclass(frozen=True)
class Threshold:
    """One numeric comparison in a ruleset: who owns it, where, and what it compares."""

    owner: str  # a rule, derived attribute or constraint id
    part: str  # scope | when | band | condition | constraint
    field: str
    rhs: Expr  # a constant, or arithmetic of other fields

    @property
    def label(self) -> str:
        return f"{self.owner} {self.part}: {self.field} vs {to_text(self.rhs)}"


@dataclass(frozen=True)
class ThresholdCase:
    """One case of the threshold cases: its name, the threshold it probes, its raw values and
    the fields set on its base row to probe it (None: left unknown)."""

    name: str
    threshold: Threshold
    values: Values
    change: Change


def thresholds(ruleset: Ruleset) -> list[Threshold]:
    """Every numeric comparison of every condition in the ruleset, in file order."""
    found: list[Threshold] = []
    for rule in ruleset.rules:
        for part, cond in (("scope", rule.scope), ("when", rule.when)):
            if cond is not None:
                found += _comparisons(cond, rule.id, part, ruleset)
    for derived in ruleset.derived:
        for band, _ in derived.bands:
            found += _comparisons(band, derived.meta.id, "band", ruleset)
        if derived.condition is not None:
            found += _comparisons(derived.condition, derived.meta.id, "condition", ruleset)
    for constraint in ruleset.constraints:
        for cond, _ in constraint.narrowings:
            found += _comparisons(cond, constraint.id, "constraint", ruleset)
    return found


def _comparisons(cond: Cond, owner: str, part: str, ruleset: Ruleset) -> list[Threshold]:
    found: list[Threshold] = []
    for node in _leaves(cond):
        if not ruleset.field_spec(node.field).is_numeric:
            continue
        if isinstance(node, Compare):
            found.append(Threshold(owner, part, node.field, node.rhs))
        else:  # a numeric `in` list: each value is a threshold of its own
            found += [Threshold(owner, part, node.field, Const(v)) for v in node.values]
    return found


def _leaves(cond: Cond) -> Iterator[Compare | Member]:
    if isinstance(cond, And | Or):
        for item in cond.items:
            yield from _leaves(item)
    elif isinstance(cond, Not):
        yield from _leaves(cond.item)
    elif isinstance(cond, Compare | Member):
        yield cond


def values_around(spec: FieldSpec, c: float) -> list[float]:
    """c and just either side of it, kept within the field's range (whole numbers for integers)."""
    if spec.type is FieldType.integer:
        low, high = math.floor(c), math.ceil(c)
        near: set[float] = {low - 1, low, high, high + 1}
    else:
        near = {
            round(c - DECIMAL_STEP, 9),
            math.nextafter(c, -math.inf),
            c,
            math.nextafter(c, math.inf),
            round(c + DECIMAL_STEP, 9),
        }
    lowest = -math.inf if spec.minimum is None else spec.minimum
    highest = math.inf if spec.maximum is None else spec.maximum
    return sorted(v for v in near if lowest <= v <= highest)


class Prober:
    """The changes that put one field of a base row at, beside and off a threshold."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.derived = ruleset.derived_by_field
        self.derived_ids = {d.meta.id: d.field for d in ruleset.derived}
        self.by_owner: dict[str, list[Threshold]] = {}
        for threshold in thresholds(ruleset):
            self.by_owner.setdefault(threshold.owner, []).append(threshold)

    def changes(self, threshold: Threshold, base: Values) -> list[Change] | None:
        """The changes probing `threshold` on `base`; None when `base` cannot reach it (the
        threshold reads a field the row lacks, or the value it needs is out of range)."""
        target = evaluate_expr(threshold.rhs, _known(base))
        if target is None or isinstance(target, bool | str):
            return None
        return self.reach(threshold.field, float(target), base)

    def reach(self, name: str, target: float, base: Values) -> list[Change] | None:
        """The changes putting field `name` (an input, or derived from inputs) at, beside and
        off `target` on `base`; None when the row cannot."""
        spec = self.ruleset.field_spec(name)
        if name in INPUTS:
            return [{name: _typed(spec, v)} for v in values_around(spec, target)] + [{name: None}]
        derived = self.derived.get(name)
        if derived is None:
            raise ValueError(f"{name} is neither an input nor a derived field")
        if derived.expression is not None:
            return self._solved(derived, target, base)
        if derived.supplied_total is not None:
            return self._through_total(derived, target)
        return self._through_bands(derived, base)

    def bites(self, threshold: Threshold, row: Values, changes: list[Change]) -> bool:
        """Whether what the threshold's owner decides differs between the probed values of a
        row, on the reference logic: a rule's status (scope and condition, compiled as the
        reference evaluator compiles them), a derived attribute's value, a constraint's facts.
        Only known values count: a rule left open by an unknown field says nothing of its
        threshold. (One rule, not the whole screening: this runs for thousands of rows.)"""
        seen: set[object] = set()
        for change in changes:
            if all(value is None for value in change.values()):
                continue
            seen.add(self._decided_by(threshold.owner, _applied(row, change, "probe")))
            if len(seen) > 1:
                return True
        return False

    def _decided_by(self, owner: str, raw: Values) -> object:
        try:
            case_id, values = validate_case(_known(raw), "<threshold>")
            facts, _ = prepare(case_id, values, self.ruleset)
        except CaseInputError as error:
            return str(error)
        rule = self.ruleset.by_id.get(owner)
        if rule is not None:
            scope = compile_kleene(rule.scope)(facts.values, facts.possible) if rule.scope else True
            return rule_status(scope, compile_kleene(rule.when)(facts.values, facts.possible))
        if owner in self.derived_ids:
            return repr(facts.derived.get(self.derived_ids[owner]))
        return repr(facts)

    def _solved(self, derived: DerivedRule, target: float, base: Values) -> list[Change] | None:
        """Arithmetic of inputs: each value around the target reached by solving for the first
        input whose solution is in range (the others as the row has them)."""
        expression = derived.expression
        assert expression is not None  # checked by the caller
        spec = derived.spec
        known = _known(base)
        for name in sorted(fields_of(expression)):
            if name not in INPUTS or any(
                other not in known for other in fields_of(expression) if other != name
            ):
                continue
            at_zero = evaluate_expr(expression, {**known, name: 0})
            at_one = evaluate_expr(expression, {**known, name: 1})
            if not isinstance(at_zero, int | float) or not isinstance(at_one, int | float):
                continue
            slope = at_one - at_zero
            if slope == 0:
                continue
            input_spec = self.ruleset.field_spec(name)
            changes: list[Change] = []
            for value in values_around(spec, target):
                solved = _exact((value - at_zero) / slope, value, expression, name, known)
                if input_spec.type is FieldType.integer and solved != int(solved):
                    continue
                if _in_range(input_spec, solved):
                    changes.append({name: _typed(input_spec, solved)})
            if changes:
                return [*changes, {name: None}]
        return None

    def _through_total(self, derived: DerivedRule, target: float) -> list[Change] | None:
        """A points score: its supplied total at each value, its components left unknown (a
        total and components that disagree are an input error, not a threshold)."""
        total = derived.supplied_total
        assert total is not None  # checked by the caller
        spec = self.ruleset.field_spec(total)
        cleared: Change = {name: None for name, _ in derived.points}
        values = values_around(spec, target)
        return [{**cleared, total: _typed(spec, v)} for v in values] + [{**cleared, total: None}]

    def _through_bands(self, derived: DerivedRule, base: Values) -> list[Change] | None:
        """A banded attribute: every threshold of its own bands, each reached on this row."""
        changes: list[Change] = []
        for own in self.by_owner.get(derived.meta.id, []):
            changes += self.changes(own, base) or []
        return changes or None


def _exact(solved: float, value: float, expression: Expr, name: str, known: Values) -> float:
    """The float nearest `solved` at which the expression gives exactly `value`, if one is a
    few steps away (63.2 - 43.2 is not 20.0): a boundary is only probed when it is hit."""
    candidates = [solved]
    for direction in (-math.inf, math.inf):
        step = solved
        for _ in range(8):
            step = math.nextafter(step, direction)
            candidates.append(step)
    for candidate in candidates:
        if evaluate_expr(expression, {**known, name: candidate}) == value:
            return candidate
    return solved


def _known(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _in_range(spec: FieldSpec, value: float) -> bool:
    return (spec.minimum is None or value >= spec.minimum) and (
        spec.maximum is None or value <= spec.maximum
    )


def _typed(spec: FieldSpec, value: float) -> int | float:
    return int(value) if spec.type is FieldType.integer else value


@dataclass(frozen=True)
class Probed:
    """The cases probing one threshold, and whether they were drawn where it bites."""

    threshold: Threshold
    cases: tuple[ThresholdCase, ...]
    bites: bool


def probe(threshold: Threshold, label: str, prober: Prober, rows: list[Values]) -> Probed:
    """The cases at and beside one threshold, each on a base row of `rows` (valid rows).

    The base rows are the first BITING_ROWS on which the threshold bites (what its owner
    decides differs between the probed values, on the reference logic), else the first row
    that reaches it at all (`bites` False); no case when no row reaches it.
    """
    chosen: list[tuple[Values, list[Change]]] = []
    fallback: tuple[Values, list[Change]] | None = None
    for row in rows:
        changes = prober.changes(threshold, row)
        if not changes:
            continue
        fallback = fallback or (row, changes)
        if prober.bites(threshold, row, changes):
            chosen.append((row, changes))
            if len(chosen) == BITING_ROWS:
                break
    bites = bool(chosen)
    if not chosen and fallback is not None:
        chosen = [fallback]
    cases = tuple(
        ThresholdCase(name, threshold, _applied(row, change, name), change)
        for row_number, (row, changes) in enumerate(chosen)
        for change_number, change in enumerate(changes)
        for name in [f"{label}-{row_number}-{change_number}"]
    )
    return Probed(threshold, cases, bites)


def _applied(row: Values, change: Change, case_id: str) -> Values:
    return {**row, **change, "case_id": case_id}


def valid_rows(ruleset: Ruleset, rows: list[Values]) -> list[Values]:
    """The rows that validate and whose facts are consistent: the base rows of the cases."""
    valid = []
    for row in rows:
        try:
            case_id, values = validate_case(_known(row), "<threshold>")
            prepare(case_id, values, ruleset)
        except CaseInputError:
            continue
        valid.append(row)
    return valid
