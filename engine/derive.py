"""From validated case values to the facts the evaluators read.

Constraints first (known facts narrow unknown fields; a field left with one value is inferred),
then derived attributes in file order. Both evaluators read the same Facts, so they agree on
inferred and derived values by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.errors import CaseProblem
from engine.models import Inferred, Scalar
from engine.rules.condition import Cond, evaluate_expr, fields_of, to_text
from engine.rules.logic import compile_kleene, unknown_fields
from engine.rules.ruleset import Constraint, DerivedRule, Ruleset, points_key

DERIVED_DECIMALS = 6


class InconsistentInput(Exception):
    """Input facts that contradict each other.

    A supplied value a constraint rules out, constraints that leave a field no value, or a
    supplied score total that disagrees with its components.
    """

    def __init__(self, problem: CaseProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True)
class Facts:
    """What is known about one case, and what is still possible for unknown constrained fields."""

    values: dict[str, Scalar]
    possible: dict[str, frozenset[Scalar]] = field(default_factory=dict)
    inferred: tuple[Inferred, ...] = ()
    derived: dict[str, Scalar] = field(default_factory=dict)


def build_facts(values: Mapping[str, Scalar], ruleset: Ruleset) -> Facts:
    """Apply constraints and compute derived attributes for one case's known values."""
    known = dict(values)
    possible, inferred = _apply_constraints(known, ruleset)
    derived: dict[str, Scalar] = {}
    # the totals a points score left unknown can still reach, read only by later derived
    # attributes (a band is decided when every reachable total agrees); never a fact
    reachable: dict[str, frozenset[Scalar]] = {}
    seen = possible  # what a deriver reads: possible values, then the totals reachable so far
    for name, derive, points in _derivers(ruleset):
        value = derive(known, seen)
        if value is not None:
            known[name] = value
            derived[name] = value
            continue
        if points is not None:
            totals = _reachable_totals(points, known, possible)
            if totals is not None:
                reachable[name] = totals
                seen = {**possible, **reachable}
    return Facts(values=known, possible=possible, inferred=tuple(inferred), derived=derived)


def _reachable_totals(
    rule: DerivedRule, values: dict[str, Scalar], possible: dict[str, frozenset[Scalar]]
) -> frozenset[Scalar] | None:
    """Every total a points score can still take given its known components (an unknown
    component may take any value the constraints leave), or None when none is known.

    Interval evaluation of a sum, done exactly: burst (2) + injured PLC (3) reaches 5 to 8
    whatever the neurology, so the TLICS band is operative before the neurology is recorded.
    """
    if not any(name in values for name, _ in rule.points):
        return None
    sums: set[int] = {0}
    for name, table in rule.points:
        if name in values:
            options = {table[points_key(values[name])]}
        else:
            allowed = possible.get(name, FIELDS_BY_NAME[name].domain)
            options = {table[points_key(v)] for v in allowed}
        sums = {s + p for s in sums for p in options}
    return frozenset(sums)


Deriver = Callable[[dict[str, Scalar], dict[str, frozenset[Scalar]]], Scalar | None]


def _derivers(ruleset: Ruleset) -> list[tuple[str, Deriver, DerivedRule | None]]:
    """A ruleset's derived attributes, each compiled to one closure once (kept by the ruleset),
    with its rule where it is a points score."""
    memo = ruleset.memo
    plan = memo.derivers
    if plan is None:
        plan = memo.derivers = [
            (r.field, _compile_deriver(r), r if r.points else None) for r in ruleset.derived
        ]
    return plan


def _compile_deriver(rule: DerivedRule) -> Deriver:
    if rule.expression is not None:
        expression, integer = rule.expression, rule.spec.type is FieldType.integer

        def from_expression(
            values: dict[str, Scalar], possible: dict[str, frozenset[Scalar]]
        ) -> Scalar | None:
            result = evaluate_expr(expression, values)
            if result is None:
                return None
            if integer:
                return round(result)  # type: ignore[arg-type]  # numeric, checked at load
            return round(float(result), DERIVED_DECIMALS)  # 60.1 - 40.1 -> 20.0, not 20.000..4

        return from_expression
    if rule.condition is not None:
        return compile_kleene(rule.condition)
    if rule.points:
        return lambda values, possible: _points_value(rule, values)
    bands = [(compile_kleene(cond), value) for cond, value in rule.bands]

    def from_bands(
        values: dict[str, Scalar], possible: dict[str, frozenset[Scalar]]
    ) -> Scalar | None:
        for decide, value in bands:
            outcome = decide(values, possible)
            if outcome is None:
                return None
            if outcome:
                return value
        return None

    return from_bands


def _points_value(rule: DerivedRule, values: dict[str, Scalar]) -> int | None:
    """Sum of component points; the supplied total stands in when a component is unknown."""
    supplied = values.get(rule.supplied_total) if rule.supplied_total else None
    if any(name not in values for name, _ in rule.points):
        return supplied if isinstance(supplied, int) else None
    parts = [(name, values[name], table[points_key(values[name])]) for name, table in rule.points]
    total = sum(points for _, _, points in parts)
    if supplied is not None and supplied != total:
        shown = " + ".join(f"{name} {_show(value)} ({points})" for name, value, points in parts)
        raise InconsistentInput(
            CaseProblem(
                rule.supplied_total,
                f"{supplied} disagrees with its components: {shown} = {total}",
                supplied,
            )
        )
    return total


def missing_inputs(names: set[str], ruleset: Ruleset, facts: Facts) -> list[str]:
    """Replace unknown derived fields by the unknown input fields they are computed from."""
    result: set[str] = set()
    pending = list(names)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        rule = ruleset.derived_by_field.get(name)
        if rule is None:
            result.add(name)
            continue
        if rule.bands:
            for cond, _ in rule.bands:
                if compile_kleene(cond)(facts.values, facts.possible) is None:
                    pending.extend(unknown_fields(cond, facts.values, facts.possible))
                    break
        elif rule.condition is not None:
            pending.extend(unknown_fields(rule.condition, facts.values, facts.possible))
        elif rule.points:  # either the components or the supplied total would settle it
            pending.extend(f for f in rule.inputs if f not in facts.values)
        else:
            pending.extend(f for f in rule.inputs if f not in facts.values)
    return sorted(result)


def _apply_constraints(
    known: dict[str, Scalar], ruleset: Ruleset
) -> tuple[dict[str, frozenset[Scalar]], list[Inferred]]:
    possible: dict[str, frozenset[Scalar]] = {}
    # per narrowed field, each narrowing that applied: its constraint, condition and allowed set
    applied: dict[str, list[tuple[Constraint, Cond, frozenset[Scalar]]]] = {}
    inferred: list[Inferred] = []
    pending = ruleset.compiled_narrowings
    touched: set[str] | None = None  # fields narrowed in the last pass (None: first pass)
    while touched is None or touched:
        narrowed: set[str] = set()
        waiting = []  # narrowings whose condition is not (yet) true
        for item in pending:
            constraint, name, when, holds, allowed, reads = item
            # a condition none of whose fields changed since it was found untrue stays so
            unchanged = touched is not None and reads.isdisjoint(touched)
            if unchanged or holds(known, possible) is not True:
                waiting.append(item)
                continue
            earlier = applied.setdefault(name, [])
            earlier.append((constraint, when, allowed))
            if name in known:
                if known[name] in allowed:
                    continue
                if any(name == i.field for i in inferred):
                    raise InconsistentInput(CaseProblem(name, _conflict_text(earlier, known)))
                raise InconsistentInput(
                    CaseProblem(
                        name,
                        f"{_show(known[name])} is ruled out by {constraint.id} "
                        f"({constraint.meta.name}) because {_facts_text(when, known)}; "
                        f"possible: {', '.join(_show(v) for v in sorted(allowed, key=str))}",
                        known[name],
                    )
                )
            before = possible.get(name, frozenset(constraint.spec.domain))
            now = before & allowed
            if not now:
                raise InconsistentInput(CaseProblem(name, _conflict_text(earlier, known)))
            narrowed.add(name)
            if len(now) == 1:
                (value,) = now
                known[name] = value
                possible.pop(name, None)
                inferred.append(_inferred(name, value, constraint.id, ruleset))
            else:
                possible[name] = now
        pending, touched = waiting, narrowed
    return possible, inferred


def _conflict_text(
    narrowings: list[tuple[Constraint, Cond, frozenset[Scalar]]], known: dict[str, Scalar]
) -> str:
    """Why two facts of a case contradict each other, naming both: the narrowings of one field
    that together leave it no value, e.g. "CON-001 allows only false because sex is male, but
    CON-005 allows only true because gestational_age_weeks is 20"."""
    shown = [
        f"{constraint.id} ({constraint.meta.name}) allows only "
        f"{', '.join(_show(v) for v in sorted(allowed, key=str))} "
        f"because {_facts_text(when, known)}"
        for constraint, when, allowed in narrowings
    ]
    return "contradictory facts: " + ", but ".join(shown)


def _inferred(name: str, value: Scalar, constraint: str, ruleset: Ruleset) -> Inferred:
    """One shared (frozen) Inferred per field, value and constraint: cohorts repeat them."""
    key = (name, type(value), value, constraint)  # the type: True and 1 are equal keys
    shared = ruleset.memo.inferred
    found = shared.get(key)
    if found is None:
        found = shared[key] = Inferred(field=name, value=value, constraint=constraint)
    return found


def _facts_text(when: Cond, known: dict[str, Scalar]) -> str:
    """The known facts that made a narrowing apply, e.g. "sex is male"."""
    shown = [f"{f} is {_show(known[f])}" for f in sorted(fields_of(when)) if f in known]
    return " and ".join(shown) if shown else to_text(when)


def _show(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
