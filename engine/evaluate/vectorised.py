"""The vectorised cohort engine's compiler: which rows of a cohort every rule treats alike.

Every step from a row's values to its outputs (constraints, derived attributes, rule outcomes,
the verdict policy, the flat and compact rows) reads the values only through the conditions of
the rule files: comparisons with constants, membership, `is known`, and arithmetic. Walking the
parsed conditions once (rules, derived attributes, constraints), this module finds, per input
field, the coarsest code that no condition can tell apart:

- an enum or boolean field: its value (or unknown);
- a text field: which of the constants compared with it it equals (or none, or unknown);
- a number compared with constants only: its cell among those constants (below the lowest,
  equal to it, between it and the next, ...), or unknown;
- a number read by arithmetic (a derived expression, `a > b + 20`) or standing in for a
  points total: its exact value.

Rows with equal codes in every field get equal facts up to those cells, hence equal outcomes,
verdicts and questions; the cohort path (engine.cohort) screens one row of each group with the
per-row engine and gives its outputs to the others. Nothing here decides a rule: the semantics
stays in one place, and this reads the same parsed trees the other backends compile.
Docs: docs/vectorised.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.derive import Facts
from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.errors import CaseInputError
from engine.evaluate.base import make_outcome, rule_status
from engine.models import RuleOutcome, Scalar
from engine.rules.condition import (
    Arith,
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
from engine.rules.logic import compile_kleene
from engine.rules.ruleset import Ruleset

_INPUTS = frozenset(INPUT_FIELDS) - {"case_id"}
TECHNIQUE = "mis_technique"  # the field per-technique settings follow (engine.screen)


@dataclass(frozen=True)
class FieldCode:
    """How one input field is coded: `cuts` for a number told apart by constants only,
    `constants` for a text field, `exact` for a number whose value itself matters."""

    name: str
    cuts: tuple[float, ...] = ()
    constants: tuple[str, ...] = ()
    exact: bool = False


Prepare = Callable[[dict[str, Scalar]], Facts]  # a case's values to its facts (screen.prepare)
CACHE_LIMIT = 200_000  # cached representatives per ruleset plan, cleared when reached


@dataclass(frozen=True)
class _Closure:
    """Fields whose codes decide some outputs, and those outputs: rules' outcomes, the value
    of probed fields after constraints, and (always) whether the facts are consistent."""

    fields: tuple[str, ...]
    rules: tuple[int, ...]  # positions in ruleset.rules
    probes: tuple[str, ...]


@dataclass
class CohortDecisions:
    """What the vectorised path decided for the rows of a chunk it could decide.

    `rows`: the decided rows (positions in the chunk, ascending); every other row is left to
    the per-row path (a value not plainly valid, or facts that contradict each other).
    `signature`: per decided row, its index into `outcomes` (every rule's outcome, ruleset
    order). `probed`: per probed field, its value after constraints per decided row."""

    rows: np.ndarray
    signature: np.ndarray
    outcomes: list[list[RuleOutcome]]
    probed: dict[str, list[Scalar | None]]


class CohortPlan:
    """A ruleset compiled for cohorts: its fields' codes and the closures of its rules."""

    def __init__(
        self, ruleset: Ruleset, *, probes: Iterable[str] = (), linked: Iterable[str] = ()
    ) -> None:
        """`probes`: fields whose value after constraints an output shows (subgroups);
        `linked`: setting fields a site profile sets per technique (they follow the technique).
        """
        self.ruleset = ruleset
        read: set[str] = set()
        cuts: dict[str, set[float]] = {}
        constants: dict[str, set[str]] = {}
        exact: set[str] = set()
        for cond in _conditions(ruleset):
            _collect(cond, read, cuts, constants, exact)
        for derived in ruleset.derived:
            if derived.expression is not None:  # arithmetic: its inputs' values matter
                exact |= fields_of(derived.expression)
            if derived.supplied_total:  # it stands in for the total, whatever it is
                exact.add(derived.supplied_total)
        self.codes = {
            name: FieldCode(
                name,
                cuts=tuple(sorted(cuts.get(name, ()))),
                constants=tuple(sorted(constants.get(name, ()))),
                exact=name in exact,
            )
            for name in INPUT_FIELDS
            if name in _INPUTS
        }
        closure = _Closures(ruleset, frozenset(linked))
        by_fields: dict[tuple[str, ...], tuple[list[int], list[str]]] = {}
        for position, rule in enumerate(ruleset.rules):
            by_fields.setdefault(closure.of(rule.fields), ([], []))[0].append(position)
        for name in probes:
            by_fields.setdefault(closure.of((name,)), ([], []))[1].append(name)
        for fields in closure.consistency():  # contradictions: each set of linked facts
            by_fields.setdefault(closure.of(fields), ([], []))
        self.closures = tuple(
            _Closure(fields, tuple(rules), tuple(probed))
            for fields, (rules, probed) in by_fields.items()
        )
        self._compiled = [
            (rule, compile_kleene(rule.scope) if rule.scope else None, compile_kleene(rule.when))
            for rule in ruleset.rules
        ]
        # per closure: its key -> (outcome numbers of its rules, probed values), None if the
        # facts contradict each other; per rule, its outcomes by number
        self._seen: list[dict[bytes, tuple[tuple[int, ...], tuple[Scalar | None, ...]] | None]]
        self._seen = [{} for _ in self.closures]
        self._outcomes: list[list[RuleOutcome]] = [[] for _ in ruleset.rules]
        self._numbers: list[dict[int, int]] = [{} for _ in ruleset.rules]  # id(outcome) -> n

    def decide(self, columns: Mapping[str, pa.Array], plain: np.ndarray, prepare: Prepare) -> (
        CohortDecisions
    ):
        """Every rule's outcome for each plainly valid row (`plain`), by closure."""
        rows = np.flatnonzero(plain)
        taken = pa.array(rows, pa.int64())
        picked = {name: column.take(taken) for name, column in columns.items()}
        count = len(rows)
        numbers = np.zeros((count, len(self.ruleset.rules)), dtype=np.int32)
        contradicted = np.zeros(count, dtype=bool)
        probed: dict[str, list[Scalar | None]] = {}
        coded: dict[str, np.ndarray] = {}
        for position, closure in enumerate(self.closures):
            keys, first, inverse = self._keys(closure, picked, coded, count)
            seen = self._seen[position]
            missing = [n for n, key in enumerate(keys) if key not in seen]
            if missing:
                if sum(map(len, self._seen)) > CACHE_LIMIT:
                    for table in self._seen:
                        table.clear()
                values = _row_values(picked, closure.fields, first[missing])
                for n, given in zip(missing, values, strict=True):
                    seen[keys[n]] = self._represent(closure, given, prepare)
            found = [seen[key] for key in keys]
            bad = np.array([f is None for f in found], dtype=bool)
            if bad.any():
                contradicted |= bad[inverse]
            if closure.rules:
                table = np.array(
                    [f[0] if f is not None else (0,) * len(closure.rules) for f in found],
                    dtype=np.int32,
                ).reshape(len(found), len(closure.rules))
                numbers[:, list(closure.rules)] = table[inverse]
            for index, name in enumerate(closure.probes):
                values_of = [f[1][index] if f is not None else None for f in found]
                probed[name] = [values_of[g] for g in inverse.tolist()]
        keep = ~contradicted
        signature, outcomes = self._signatures_of(numbers[keep])
        return CohortDecisions(
            rows[keep],
            signature,
            outcomes,
            {name: [v for v, k in zip(vals, keep.tolist(), strict=True) if k]
             for name, vals in probed.items()},
        )

    def _keys(
        self,
        closure: _Closure,
        picked: Mapping[str, pa.Array],
        coded: dict[str, np.ndarray],
        count: int,
    ) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        """The distinct keys of a closure's fields, a row having each, and each row's key."""
        parts = []
        for name in closure.fields:
            if name not in coded:
                column = picked.get(name)
                coded[name] = (
                    np.zeros((count, 2), dtype=np.int64)
                    if column is None
                    else _coded(self.codes[name], column)
                )
            parts.append(coded[name])
        if not parts:
            matrix = np.zeros((count, 1), dtype=np.int64)
        else:
            matrix = np.ascontiguousarray(np.concatenate(parts, axis=1))
        flat = matrix.view(np.dtype((np.void, matrix.shape[1] * 8))).reshape(-1)
        unique, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        return [u.tobytes() for u in unique], first, inverse.reshape(-1)

    def _represent(
        self, closure: _Closure, values: dict[str, Scalar], prepare: Prepare
    ) -> tuple[tuple[int, ...], tuple[Scalar | None, ...]] | None:
        """The outcomes of a closure's rules and its probed values for one representative."""
        try:
            facts = prepare(values)
        except CaseInputError:
            return None
        known, possible = facts.values, facts.possible
        numbers = []
        for position in closure.rules:
            rule, scope, when = self._compiled[position]
            scope_value = scope(known, possible) if scope else True
            when_value = when(known, possible)
            status = rule_status(scope_value, when_value)
            outcome = make_outcome(rule, status, when_value, facts, self.ruleset)
            table = self._numbers[position]
            number = table.get(id(outcome))
            if number is None or self._outcomes[position][number] is not outcome:
                number = table[id(outcome)] = len(self._outcomes[position])
                self._outcomes[position].append(outcome)
            numbers.append(number)
        return tuple(numbers), tuple(known.get(name) for name in closure.probes)

    def _signatures_of(self, numbers: np.ndarray) -> tuple[np.ndarray, list[list[RuleOutcome]]]:
        """Per row, the number of its whole outcome vector, and each vector's outcomes."""
        if not len(numbers):
            return np.zeros(0, dtype=np.int64), []
        matrix = np.ascontiguousarray(numbers)
        flat = matrix.view(np.dtype((np.void, matrix.shape[1] * 4))).reshape(-1)
        unique, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        outcomes = [
            [self._outcomes[p][n] for p, n in enumerate(row)]
            for row in matrix[first].tolist()
        ]
        return inverse.reshape(-1), outcomes


class _Closures:
    """The input fields a set of fields depends on: derived attributes' inputs, every field a
    constraint links to a constrained one, and the technique for per-technique settings."""

    def __init__(self, ruleset: Ruleset, linked: frozenset[str]) -> None:
        self.ruleset = ruleset
        self.linked = linked
        parent: dict[str, str] = {}

        def find(name: str) -> str:
            while parent.get(name, name) != name:
                name = parent[name]
            return name

        for _, name, _, _, _, reads in ruleset.compiled_narrowings:
            for other in reads:
                a, b = find(name), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        self.component: dict[str, frozenset[str]] = {}
        names = set(parent) | {find(n) for n in parent}
        for name in names:
            self.component[name] = frozenset(n for n in names if find(n) == find(name))

    def consistency(self) -> list[tuple[str, ...]]:
        """Sets of fields whose facts alone can contradict each other."""
        found = [tuple(sorted(c)) for c in set(self.component.values())]
        found += [d.inputs for d in self.ruleset.derived if d.points]
        return found

    def of(self, fields: Iterable[str]) -> tuple[str, ...]:
        pending = list(fields)
        found: set[str] = set()
        derived = self.ruleset.derived_by_field
        while pending:
            name = pending.pop()
            if name in found:
                continue
            found.add(name)
            if name in derived:
                pending.extend(derived[name].inputs)
            pending.extend(self.component.get(name, ()))
            if name in self.linked:
                pending.append(TECHNIQUE)
        return tuple(n for n in INPUT_FIELDS if n in found and n in _INPUTS)


def _conditions(ruleset: Ruleset) -> Iterable[Cond]:
    for rule in ruleset.rules:
        if rule.scope is not None:
            yield rule.scope
        yield rule.when
    for derived in ruleset.derived:
        yield from (cond for cond, _ in derived.bands)
        if derived.condition is not None:
            yield derived.condition
    for constraint in ruleset.constraints:
        yield from (cond for cond, _ in constraint.narrowings)


def _collect(
    cond: Cond,
    read: set[str],
    cuts: dict[str, set[float]],
    constants: dict[str, set[str]],
    exact: set[str],
) -> None:
    """Gather, from one condition tree, the constants each field is compared with."""
    if isinstance(cond, Truth):
        return
    if isinstance(cond, Known):
        read.add(cond.field)
        return
    if isinstance(cond, Not):
        _collect(cond.item, read, cuts, constants, exact)
        return
    if isinstance(cond, Member | Compare):
        read.add(cond.field)
        given = cond.values if isinstance(cond, Member) else _constant(cond.rhs)
        if given is None:  # `field op expression`: every field in it, exactly
            assert isinstance(cond, Compare)  # noqa: S101  # Member holds constants only
            exact.add(cond.field)
            exact.update(fields_of(cond.rhs))
            read.update(fields_of(cond.rhs))
            return
        for value in given:
            if isinstance(value, str):
                constants.setdefault(cond.field, set()).add(value)
            elif not isinstance(value, bool):
                cuts.setdefault(cond.field, set()).add(float(value))
        return
    for item in cond.items:
        _collect(item, read, cuts, constants, exact)


def _constant(rhs: Expr) -> tuple[object, ...] | None:
    if isinstance(rhs, Const):
        return (rhs.value,)
    assert isinstance(rhs, FieldRef | Arith)  # noqa: S101  # the Expr union
    return None


def _coded(code: FieldCode, column: pa.Array) -> np.ndarray:
    """One column's codes as two int64 columns: known (0/1) and the value's code (its cell,
    its index among the allowed values, or for an exact number its float64 bits)."""
    spec = FIELDS_BY_NAME[code.name]
    known = pc.is_valid(column).to_numpy(zero_copy_only=False).astype(np.int64)
    if spec.type is FieldType.boolean:
        values = pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False)
    elif spec.type in (FieldType.enum, FieldType.string):
        allowed = spec.values if spec.type is FieldType.enum else code.constants
        index = pc.index_in(column, value_set=pa.array(allowed, pa.string()))
        values = pc.fill_null(index, len(allowed)).to_numpy(zero_copy_only=False)
    else:
        numbers = pc.fill_null(pc.cast(column, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        if code.exact:
            values = np.ascontiguousarray(numbers, dtype=np.float64).view(np.int64)
        elif code.cuts:
            limits = np.asarray(code.cuts, dtype=np.float64)
            at = np.searchsorted(limits, numbers, side="left")
            values = 2 * at + (limits[np.minimum(at, len(limits) - 1)] == numbers)
        else:
            values = np.zeros(len(column), dtype=np.int64)
    values = np.where(known == 1, np.asarray(values, dtype=np.int64), 0)
    return np.stack([known, values], axis=1)


def _row_values(
    picked: Mapping[str, pa.Array], fields: tuple[str, ...], rows: np.ndarray
) -> list[dict[str, Scalar]]:
    """The known values of some fields for some rows (validated, so as validate_case gives)."""
    taken = pa.array(rows, pa.int64())
    found: list[dict[str, Scalar]] = [{} for _ in range(len(rows))]
    for name in fields:
        column = picked.get(name)
        if column is None:
            continue
        for row, value in zip(found, column.take(taken).to_pylist(), strict=True):
            if value is not None:
                row[name] = value
    return found
