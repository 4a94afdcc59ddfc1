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
from engine.rules.condition import (
    Compare,
    Cond,
    Const,
    Member,
    evaluate_expr,
    fields_of,
    to_text,
)
from engine.rules.logic import compile_kleene, unknown_fields
from engine.rules.ruleset import Constraint, DerivedRule, Narrowing, Ruleset, points_key

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
    plan = _derivers(ruleset)
    # the fields derivers read that are known, narrowed or reachable (a set, so that testing a
    # deriver's few inputs against it walks those, not every known field)
    read = set(plan.inputs.intersection(known))
    read.update(possible)
    bounds: dict[str, frozenset[Scalar]] = {}  # band values left possible (Ruleset.bounded_fields)
    for name, derive, points, inputs, unread in plan.derivers:
        if inputs.isdisjoint(read):
            # none of its inputs known or narrowed (most cases lack most scores' inputs): the
            # value it takes with nothing known, computed once
            if unread is not None:
                known[name] = derived[name] = unread
                read.add(name)
            continue
        value = derive(known, seen)
        if value is not None:
            known[name] = value
            derived[name] = value
            read.add(name)
            continue
        if points is not None:
            totals = _reachable_totals(points, known, possible)
            if totals is not None:
                reachable[name] = totals
                seen = {**possible, **reachable, **bounds}
                read.add(name)
        bound = plan.bounders.get(name)
        if bound is not None:
            left = bound(known, seen)
            if left is not None:
                bounds[name] = left
                seen = {**possible, **reachable, **bounds}
                read.add(name)
    if bounds:
        possible = {**possible, **bounds}
    return Facts(values=known, possible=possible, inferred=tuple(inferred), derived=derived)


def _band_bounds(rule: DerivedRule) -> Bounder:
    """The values an unknown banded field can still take: a band's value stays possible unless
    its condition is false or an earlier band's is true (the last band is a catch-all, so one of
    them holds); None when that leaves every value possible."""
    bands = [(compile_kleene(cond), value) for cond, value in rule.bands]
    every = frozenset(value for _, value in rule.bands)

    def left(values: dict[str, Scalar], possible: Possible) -> frozenset[Scalar] | None:
        found: set[Scalar] = set()
        for decide, value in bands:
            outcome = decide(values, possible)
            if outcome is not False:
                found.add(value)
            if outcome is True:
                break
        return frozenset(found) if found != every else None

    return left


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
# a derived field, its deriver, its rule where it is a points score, the fields it reads, and
# its value when none of them is known or narrowed
DeriverEntry = tuple[str, Deriver, DerivedRule | None, frozenset[str], Scalar | None]


Possible = dict[str, frozenset[Scalar]]
Bounder = Callable[[dict[str, Scalar], Possible], frozenset[Scalar] | None]


@dataclass(frozen=True)
class _DeriverPlan:
    derivers: list[DeriverEntry]
    inputs: frozenset[str]  # every field some deriver reads
    # per bounded field (Ruleset.bounded_fields): the band values it can still take when unknown
    bounders: dict[str, Bounder]


def derivation_plan(ruleset: Ruleset) -> _DeriverPlan:
    """A ruleset's derived attributes in file order, each with its compiled deriver, inputs
    and value with none of them known (the vectorised engine follows the same plan)."""
    return _derivers(ruleset)


def _derivers(ruleset: Ruleset) -> _DeriverPlan:
    """A ruleset's derived attributes in file order, each compiled to one closure once (kept by
    the ruleset)."""
    memo = ruleset.memo
    plan: _DeriverPlan | None = memo.derivers
    if plan is None:
        derivers = []
        for rule in ruleset.derived:
            derive = _compile_deriver(rule)
            derivers.append(
                (
                    rule.field,
                    derive,
                    rule if rule.points else None,
                    frozenset(rule.inputs),
                    derive({}, {}),
                )
            )
        inputs = frozenset(name for *_, read, _ in derivers for name in read)
        bounders = {
            rule.field: _band_bounds(rule)
            for rule in ruleset.derived
            if rule.field in ruleset.bounded_fields
        }
        plan = memo.derivers = _DeriverPlan(derivers, inputs, bounders)
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


@dataclass(frozen=True, slots=True)
class _Lookup:
    """Consecutive narrowings whose conditions test one enumerated or boolean field against
    constants (`planned_procedure == "fusion"`, `lowest_level in [...]`) and narrow another
    field: which of them hold depends on that field alone, so a known value looks them up."""

    field: str
    positions: tuple[int, ...]
    by_value: dict[Scalar, frozenset[int]]  # the positions that hold for each value
    unread: frozenset[int]  # those that hold with the field unknown and not narrowed


@dataclass(frozen=True)
class _ConstraintPlan:
    narrowings: list[Narrowing]  # Ruleset.compiled_narrowings, in order
    first_pass: tuple[_Lookup | int, ...]  # a lookup, or a narrowing tested on its own
    readers: dict[str, tuple[int, ...]]  # field -> the narrowings whose condition reads it


def _constraint_plan(ruleset: Ruleset) -> _ConstraintPlan:
    memo = ruleset.memo
    plan: _ConstraintPlan | None = memo.constraint_plan
    if plan is None:
        plan = memo.constraint_plan = _plan_constraints(ruleset.compiled_narrowings)
    return plan


def _plan_constraints(narrowings: list[Narrowing]) -> _ConstraintPlan:
    def looked_up(item: Narrowing) -> str | None:
        _, name, when, _, _, reads = item
        if len(reads) != 1 or name in reads:
            return None
        (read,) = reads
        if FIELDS_BY_NAME[read].type not in (FieldType.enum, FieldType.boolean):
            return None
        plain = isinstance(when, Member) or (
            isinstance(when, Compare) and isinstance(when.rhs, Const)
        )
        return read if plain else None

    steps: list[_Lookup | int] = []
    run: list[int] = []  # consecutive narrowings looked up by the same field, run_field

    def close_run(read: str | None) -> None:
        if run and read is not None:
            holds = [(p, narrowings[p][3]) for p in run]
            steps.append(
                _Lookup(
                    read,
                    tuple(run),
                    {
                        value: frozenset(p for p, test in holds if test({read: value}, {}) is True)
                        for value in FIELDS_BY_NAME[read].domain
                    },
                    frozenset(p for p, test in holds if test({}, {}) is True),
                )
            )
            run.clear()

    run_field: str | None = None
    for position, item in enumerate(narrowings):
        read = looked_up(item)
        if read != run_field:
            close_run(run_field)
            run_field = read
        if read is None:
            steps.append(position)
        else:
            run.append(position)
    close_run(run_field)
    readers: dict[str, set[int]] = {}
    for position, item in enumerate(narrowings):
        for name in item[5]:
            readers.setdefault(name, set()).add(position)
    return _ConstraintPlan(
        narrowings, tuple(steps), {name: tuple(sorted(p)) for name, p in readers.items()}
    )


def _apply_constraints(
    known: dict[str, Scalar], ruleset: Ruleset
) -> tuple[dict[str, frozenset[Scalar]], list[Inferred]]:
    """Narrow the possible values of constrained fields until nothing changes.

    Narrowings apply in file order. The first pass tests each of them once; each later pass
    re-tests only those whose condition reads a field the pass before narrowed (a chain of
    constraints written back to front still settles).
    """
    plan = _constraint_plan(ruleset)
    items = plan.narrowings
    passes = _Passes(known, ruleset)
    waiting: set[int] = set()  # narrowings whose condition is not (yet) true
    for step in plan.first_pass:
        if isinstance(step, int):
            if items[step][3](known, passes.possible) is True:
                passes.apply(items[step])
            else:
                waiting.add(step)
            continue
        value = known.get(step.field)
        holding = None if value is None else step.by_value.get(value)
        if holding is None:
            if value is None and step.field not in passes.possible:
                holding = step.unread
            else:  # narrowed, or a value outside the field's domain: test each
                holding = frozenset(
                    p for p in step.positions if items[p][3](known, passes.possible) is True
                )
        if not holding:
            waiting.update(step.positions)
            continue
        for position in step.positions:
            if position in holding:
                passes.apply(items[position])
            else:
                waiting.add(position)
    touched = passes.take_narrowed()
    while touched and waiting:
        # a condition none of whose fields changed since it was found untrue stays so
        if len(touched) == 1:
            retest = plan.readers.get(next(iter(touched)), ())
        else:
            retest = tuple(sorted({p for name in touched for p in plan.readers.get(name, ())}))
        for position in retest:  # in file order
            if position in waiting and items[position][3](known, passes.possible) is True:
                waiting.discard(position)
                passes.apply(items[position])
        touched = passes.take_narrowed()
    return passes.possible, passes.inferred


class _Passes:
    """One case's constraint passes: the possible values so far and what was inferred."""

    __slots__ = ("applied", "inferred", "known", "narrowed", "possible", "ruleset")

    def __init__(self, known: dict[str, Scalar], ruleset: Ruleset) -> None:
        self.known = known
        self.ruleset = ruleset
        self.possible: dict[str, frozenset[Scalar]] = {}
        # per narrowed field, each narrowing that applied: its constraint, condition, allowed set
        self.applied: dict[str, list[tuple[Constraint, Cond, frozenset[Scalar]]]] = {}
        self.inferred: list[Inferred] = []
        self.narrowed: set[str] = set()  # fields narrowed in this pass

    def take_narrowed(self) -> set[str]:
        narrowed, self.narrowed = self.narrowed, set()
        return narrowed

    def apply(self, item: Narrowing) -> None:
        """A narrowing whose condition holds: its field keeps only the values it allows."""
        constraint, name, when, _, allowed, _ = item
        known, possible = self.known, self.possible
        earlier = self.applied.setdefault(name, [])
        earlier.append((constraint, when, allowed))
        if name in known:
            if known[name] in allowed:
                return
            if any(name == i.field for i in self.inferred):
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
        self.narrowed.add(name)
        if len(now) == 1:
            (value,) = now
            known[name] = value
            possible.pop(name, None)
            self.inferred.append(_inferred(name, value, constraint.id, self.ruleset))
        else:
            possible[name] = now


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
