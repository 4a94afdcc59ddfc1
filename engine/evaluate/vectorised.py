"""The vectorised cohort engine: the parsed rules compiled to numpy column operations.

A chunk of plainly valid rows (engine.io.columnar) becomes, per field, a known mask and a value
column; for an enum or boolean field (and a derived field with finitely many values) a bitmask
of the values still possible. Constraints narrow those bitmasks, derived attributes are computed
in file order, and every rule's scope and condition are evaluated with Kleene logic, each node of
the parsed tree (engine.rules.condition) one column operation. Truth values are 0 (false),
1 (unknown) and 2 (true): `and` is the minimum, `or` the maximum, `not` is 2 - x.

What is not recomputed here is taken from the per-row code, once per distinct case of it: the
outcome of a not-evaluable rule comes from engine.evaluate.base.explained_outcome on one
representative row per rule and set of fields it names as missing (that set, found by column,
is all the outcome depends on: _GapWalks). Rows whose facts contradict each other, or that a
feature this compiler does not cover touches, are not decided here: the caller screens them one
by one. docs/vectorised.md gives the design and what holds it to the other engines.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.derive import DERIVED_DECIMALS, Facts, derivation_plan
from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.evaluate.base import explained_outcome, rule_status
from engine.models import RuleOutcome, RuleStatus, Scalar, SiteValue, settled_outcome
from engine.rules.condition import (
    And,
    Arith,
    Compare,
    Cond,
    Const,
    Expr,
    FieldRef,
    Known,
    Member,
    Not,
    Or,
    Truth,
    fields_of,
)
from engine.rules.ruleset import DerivedRule, Rule, Ruleset, points_key

FALSE, UNKNOWN, TRUE = 0, 1, 2
# every condition node class and how this compiler evaluates it (a test holds the registry
# against condition.Cond, so a new node type fails a test instead of a case)
NODE_CLASSES = (Compare, Member, Known, And, Or, Not, Truth)
Prepare = Callable[[dict[str, Scalar]], Facts]  # a case's values to its facts (screen.prepare)
RowValues = Callable[[list[int]], list[dict[str, Scalar]]]  # chunk rows -> validated values
EXPLAINED_LIMIT = 50_000  # cached explanations per plan, cleared when reached
# the comparisons and arithmetic of condition.COMPARE and condition.ARITH, on columns
_NUMPY_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NUMPY_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
}
_PYTHON_COMPARE: dict[str, Callable[[object, object], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,  # type: ignore[dict-item]  # numbers only, checked at load
    "<=": operator.le,  # type: ignore[dict-item]
    ">": operator.gt,  # type: ignore[dict-item]
    ">=": operator.ge,  # type: ignore[dict-item]
}
STATUSES = (
    RuleStatus.not_applicable,
    RuleStatus.not_fired,
    RuleStatus.conditional,
    RuleStatus.not_evaluable,
    RuleStatus.fired,
)
NOT_APPLICABLE, NOT_FIRED, CONDITIONAL, NOT_EVALUABLE, FIRED = range(5)
_TRUE8 = np.int8(TRUE)
# base.rule_status as a table: the status of (scope, when), at scope * 3 + when
_STATUS_OF = np.asarray(
    [
        STATUSES.index(rule_status(scope, when))
        for scope in (False, None, True)
        for when in (False, None, True)
    ],
    dtype=np.int8,
)


@dataclass
class CohortDecisions:
    """What the vectorised engine decided for the plainly valid rows of a chunk.

    `rows`: the rows it decided (positions in the chunk, ascending); any other row is left to
    the per-row path (its facts contradict each other, or the plan cannot run). Per decided row
    and rule (ruleset order): `statuses`, an index into STATUSES, and `numbers`, the index of
    its outcome in `tables[rule]` (a conditional one without its missing fields, which no
    output reads: _outcomes). `probed`: per probed field, its value after constraints, as
    the index of each row's value among the values listed (the last entry, None: unknown).
    `variants`: per decided row, the status of each of the plan's `variants` (rules evaluated
    on the same facts beside the ruleset's own, e.g. `rules sweep`'s edited copies of one rule),
    an index into STATUSES; no columns if the plan has none."""

    rows: np.ndarray
    statuses: np.ndarray
    numbers: np.ndarray
    tables: list[list[RuleOutcome]]
    probed: dict[str, tuple[np.ndarray, tuple[Scalar | None, ...]]]
    report_order: dict[str, tuple[int, str]]
    variants: np.ndarray | None = None


class _Frame:
    """One chunk's facts as columns: known masks, values (finite fields as the index of their
    value in the field's domain), and bitmasks of possible values (0: no entry).

    `states` keeps, per finite field, what the conditions on it read (CohortPlan._state); a
    step that changes a field's facts calls `touch` so they are read again."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.known: dict[str, np.ndarray] = {}
        self.value: dict[str, np.ndarray] = {}
        self.possible: dict[str, np.ndarray] = {}
        self.reachable: dict[str, np.ndarray] = {}  # points totals, read by derivers only
        self.bad = np.zeros(rows, dtype=bool)  # contradictory facts
        self.states: dict[tuple[str, bool], tuple[np.ndarray, list[int]]] = {}
        self._unknown = _frozen(np.zeros(rows, dtype=bool))
        self._constants = {v: _frozen(np.full(rows, v, dtype=np.int8)) for v in (FALSE, TRUE)}

    def is_known(self, name: str) -> np.ndarray:
        """The field's known mask (read-only where no row of it is known)."""
        found = self.known.get(name)
        return found if found is not None else self._unknown

    def constant(self, truth: int) -> np.ndarray:
        """TRUE or FALSE on every row, one read-only column per frame."""
        return self._constants[truth]

    def touch(self, name: str) -> None:
        """A field's facts changed: what was read from them is stale."""
        self.states.pop((name, False), None)
        self.states.pop((name, True), None)


class CohortPlan:
    """A ruleset compiled to column operations, with the caches of its explanations.

    `variants`: screening rules that are not the ruleset's (a rule with its condition edited),
    whose statuses each decision also gives, from the same facts (CohortDecisions.variants);
    they change no output. Their conditions must read only what the ruleset's rules may."""

    def __init__(
        self,
        ruleset: Ruleset,
        *,
        probes: Iterable[str] = (),
        site: Mapping[str, SiteValue] | None = None,
        variants: Sequence[Rule] = (),
    ) -> None:
        self.ruleset = ruleset
        self.probes = tuple(probes)
        self.variants = tuple(variants)
        site = site or {}
        # a per-technique setting is chosen after constraints (screen.technique_setting): such
        # a site profile is screened row by row
        self.runs = not any(isinstance(v, dict) for v in site.values()) and _monotone(ruleset)
        self.site = {k: v for k, v in site.items() if not isinstance(v, dict)}
        self.domains: dict[str, tuple[Scalar, ...]] = {}
        for spec in FIELDS_BY_NAME.values():
            if spec.type in (FieldType.enum, FieldType.boolean):
                self.domains[spec.name] = tuple(spec.domain)
        for derived in ruleset.derived:
            if derived.spec.type in (FieldType.enum, FieldType.boolean):
                continue
            if derived.bands:
                self.domains[derived.field] = tuple(dict.fromkeys(v for _, v in derived.bands))
            elif derived.points:
                top = sum(max(table.values()) for _, table in derived.points)
                if derived.supplied_total:
                    top = max(top, int(FIELDS_BY_NAME[derived.supplied_total].maximum or 0))
                self.domains[derived.field] = tuple(range(top + 1))
        self.runs = self.runs and all(len(d) < 63 for d in self.domains.values())
        self.runs = self.runs and all(  # a supplied total is a value of its score's domain
            (FIELDS_BY_NAME[d.supplied_total].minimum or 0) >= 0
            for d in ruleset.derived
            if d.supplied_total
        )
        self.derivers = derivation_plan(ruleset).derivers
        self._tables: dict[int, _Table] = {}  # per condition node (id): its domain table
        self._masks: dict[int, int] = {}  # per narrowing: the values it allows (_allowed)
        self._value_sets: dict[tuple[str, pa.DataType], pa.Array] = {}
        self._settled = [
            [settled_outcome(r.id, status) for status in STATUSES] for r in ruleset.rules
        ]
        self._gap_bits = _GapBits(ruleset)
        self._gap_walks = _GapWalks(ruleset, self._gap_bits)
        self._explained: dict[int | bytes, RuleOutcome] = {}  # _GapBits keys -> outcome
        # per node value and spelling: the first such node (_shared)
        self._by_value: dict[tuple[Cond, str], Cond] = {}
        self._shared_nodes: dict[int, tuple[Cond, Cond]] = {}

    # --- the chunk -----------------------------------------------------------------------------

    def decide(
        self,
        columns: Mapping[str, pa.Array],
        plain: np.ndarray,
        prepare: Prepare,
        row_values: RowValues,
    ) -> CohortDecisions:
        """Every rule's outcome for each plainly valid row whose facts hold together."""
        rows = np.flatnonzero(plain) if self.runs else np.zeros(0, dtype=np.int64)
        frame = _Frame(len(rows))
        if len(rows):
            self._load(frame, columns, rows)
            self._constrain(frame)
            self._derive(frame)
        statuses, cache = self._statuses(frame)
        keep = ~frame.bad
        numbers, tables = self._outcomes(frame, statuses, cache, keep, rows, prepare, row_values)
        probed = {name: self._values_of(frame, name, keep) for name in self.probes}
        variants = np.zeros((frame.rows, len(self.variants)), dtype=np.int8)
        for n, rule in enumerate(self.variants):
            variants[:, n] = self._status(rule, frame, {})
        # the facts and node tables (most of a chunk's memory) are let go first; the rows x
        # rules tables keep their rows in place (where some rows' facts contradict each other)
        del frame, cache
        if not keep.all():
            rows, variants = rows[keep], variants[keep]
            statuses, numbers = _kept(statuses, keep), _kept(numbers, keep)
        return CohortDecisions(
            rows, statuses, numbers, tables, probed, self.ruleset.report_order, variants
        )

    def _load(self, frame: _Frame, columns: Mapping[str, pa.Array], rows: np.ndarray) -> None:
        """The input columns of the chosen rows, with the site profile's settings filled in."""
        every = len(rows) == len(next(iter(columns.values())))

        def chosen(values: np.ndarray) -> np.ndarray:  # the rows' values of a whole column
            return values if every else values[rows]

        for name, column in columns.items():
            if name == "case_id" or name not in FIELDS_BY_NAME:
                continue
            if pa.types.is_null(column.type):  # a column with no value at all: unknown, as absent
                continue
            # computed on the whole column and then picked in numpy (an Arrow take per column
            # cost more); a value of a row not picked may be anything, and is never read
            known = chosen(_valid(column))
            domain = self.domains.get(name)
            if domain is not None and pa.types.is_boolean(column.type):  # domain (True, False)
                flags = chosen(_bits(column.buffers()[1], column.offset, len(column)))
                values = np.where(flags, domain.index(True), domain.index(False))
            elif domain is not None:
                index = pc.index_in(column, value_set=self._value_set(name, column.type))
                values = chosen(index.fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64)
            elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                whole = pc.cast(column, pa.float64(), safe=False).fill_null(0.0)
                values = chosen(np.asarray(whole.to_numpy(zero_copy_only=False), np.float64))
            else:  # another type: the picked rows hold none of its values (absent)
                picked = column if every else column.take(pa.array(rows, pa.int64()))
                values = np.asarray(
                    picked.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False),
                    dtype=np.float64,
                )
            frame.known[name], frame.value[name] = known, values
        for name, given in self.site.items():  # screen.apply_site: case values win
            known = frame.is_known(name)
            value = self._code(name, given)
            found = frame.value.get(name, np.zeros(frame.rows, dtype=type(value)))
            frame.value[name] = np.where(known, found, value)
            frame.known[name] = np.ones(frame.rows, dtype=bool)

    def _value_set(self, name: str, kind: pa.DataType) -> pa.Array:
        """A finite field's domain as an Arrow array of a column's type (once per plan)."""
        found = self._value_sets.get((name, kind))
        if found is None:
            found = self._value_sets[(name, kind)] = pa.array(self.domains[name], kind)
        return found

    def _code(self, name: str, value: Scalar) -> float | int:
        domain = self.domains.get(name)
        return domain.index(value) if domain is not None else float(value)

    # --- constraints ---------------------------------------------------------------------------

    def _constrain(self, frame: _Frame) -> None:
        """Apply every narrowing whose condition holds until nothing changes (derive's passes
        reach the same facts: conditions here only gain truth as values are narrowed)."""
        items = self.ruleset.compiled_narrowings
        applied = [np.zeros(frame.rows, dtype=bool) for _ in items]
        # a condition none of whose fields has changed since it was read holds where it held,
        # and was applied there: it is not read again (`step`: narrowings applied so far)
        step = 0
        read_at: list[int | None] = [None] * len(items)
        changed_at: dict[str, int] = {}
        changed = True
        while changed:
            changed = False
            for n, (_, name, when, _, _, reads) in enumerate(items):
                seen = read_at[n]
                if seen is not None and all(changed_at.get(f, 0) <= seen for f in reads):
                    continue
                read_at[n] = step
                hit = (self._kleene(when, frame, {}, True) == TRUE) & ~applied[n]
                if not hit.any():
                    continue
                changed = True
                applied[n] |= hit
                self._narrow(frame, name, self._allowed(n), hit)
                step += 1
                changed_at[name] = step

    def _allowed(self, narrowing: int) -> int:
        """The bitmask of the values a narrowing allows (built once per plan)."""
        found = self._masks.get(narrowing)
        if found is None:
            _, name, _, _, allowed, _ = self.ruleset.compiled_narrowings[narrowing]
            found = self._masks[narrowing] = _mask(self.domains[name], allowed)
        return found

    def _narrow(self, frame: _Frame, name: str, allowed: int, hit: np.ndarray) -> None:
        """A field narrowed to the values a narrowing allows, on the rows it hit (read there
        only): a known value it rules out, or no value left, contradicts; one left is known."""
        at = np.flatnonzero(hit)
        known = frame.is_known(name)
        values = frame.value.setdefault(name, np.zeros(frame.rows, dtype=np.int64))
        given = known[at]
        stated = at[given]
        frame.bad[stated[((allowed >> values[stated]) & 1) == 0]] = True
        open_at = at[~given]
        full = (1 << len(self.domains[name])) - 1
        possible = frame.possible.setdefault(name, np.zeros(frame.rows, dtype=np.int64))
        before = possible[open_at]
        now = np.where(before != 0, before, full) & allowed
        frame.bad[open_at[now == 0]] = True
        single = (now != 0) & ((now & (now - 1)) == 0)
        inferred = open_at[single]
        values[inferred] = np.log2(now[single]).astype(np.int64)
        known = known.copy()  # the frame's, or a read-only column
        known[inferred] = True
        frame.known[name] = known
        possible[inferred] = 0
        many = ~single & (now != 0)
        possible[open_at[many]] = now[many]
        frame.touch(name)

    # --- derived attributes --------------------------------------------------------------------

    def _derive(self, frame: _Frame) -> None:
        """Each derived attribute in file order, as engine.derive.build_facts computes it."""
        by_field = self.ruleset.derived_by_field
        bounded = self.ruleset.bounded_fields
        for name, _, _, inputs, unread in self.derivers:
            rule = by_field[name]
            reads = np.zeros(frame.rows, dtype=bool)  # an input known or narrowed
            for field in inputs:
                reads |= frame.is_known(field)
                for narrowed in (frame.possible.get(field), frame.reachable.get(field)):
                    if narrowed is not None:
                        reads |= narrowed != 0
            value, known = self._derived_value(frame, rule)
            if unread is None:
                known = known & reads
            else:  # none of its inputs known or narrowed: the value it takes with none known
                value = np.where(reads, value, self._code(name, unread))
                known = known | ~reads
            frame.value[name], frame.known[name] = value, known
            frame.touch(name)
            open_rows = reads & ~known
            if rule.points and open_rows.any():
                self._reach(frame, rule, open_rows)
            if name in bounded and open_rows.any():
                self._bound(frame, rule, open_rows)

    def _derived_value(self, frame: _Frame, rule: DerivedRule) -> tuple[np.ndarray, np.ndarray]:
        if rule.expression is not None:
            value, known = self._expression(rule.expression, frame)
            if rule.spec.type is FieldType.integer:
                return np.rint(value), known
            return _round(value, DERIVED_DECIMALS), known
        if rule.condition is not None:
            truth = self._kleene(rule.condition, frame, {}, True)
            return np.where(truth == TRUE, 0, 1), truth != UNKNOWN  # (True, False)
        if rule.points:
            return self._points(frame, rule)
        value = np.zeros(frame.rows, dtype=np.int64)
        known = np.zeros(frame.rows, dtype=bool)
        searching = np.ones(frame.rows, dtype=bool)
        domain = self.domains[rule.field]
        for cond, band in rule.bands:
            truth = self._kleene(cond, frame, {}, True)
            searching &= truth != UNKNOWN  # unknown: the band, and so the value, is unknown
            chosen = searching & (truth == TRUE)
            value[chosen] = domain.index(band)
            known |= chosen
            searching &= ~chosen
        return value, known

    def _points(self, frame: _Frame, rule: DerivedRule) -> tuple[np.ndarray, np.ndarray]:
        """The sum of a score's components, else the supplied total; contradictions marked."""
        total = np.zeros(frame.rows, dtype=np.int64)
        complete = np.ones(frame.rows, dtype=bool)
        for name, table in rule.points:
            points = np.asarray([table[points_key(v)] for v in self.domains[name]], np.int64)
            total += points[frame.value.get(name, np.zeros(frame.rows, dtype=np.int64))]
            complete &= frame.is_known(name)
        supplied = rule.supplied_total
        given = frame.is_known(supplied) if supplied else np.zeros(frame.rows, dtype=bool)
        stated = frame.value.get(supplied, np.zeros(frame.rows)) if supplied else 0
        frame.bad |= complete & given & (stated != total)
        value = np.where(complete, total, stated).astype(np.int64)
        return value, complete | given

    def _reach(self, frame: _Frame, rule: DerivedRule, open_rows: np.ndarray) -> None:
        """The totals a score can still reach (derive._reachable_totals), as a bitmask."""
        some = np.zeros(frame.rows, dtype=bool)
        sums = np.ones(frame.rows, dtype=np.int64)  # {0}
        for name, table in rule.points:
            domain = self.domains[name]
            known = frame.is_known(name)
            some |= known
            points = [table[points_key(v)] for v in domain]
            possible = frame.possible.get(name)
            full = (1 << len(domain)) - 1
            allowed = full if possible is None else np.where(possible != 0, possible, full)
            code = frame.value.get(name, np.zeros(frame.rows, dtype=np.int64))
            allowed = np.where(known, np.left_shift(1, code), allowed)
            after = np.zeros(frame.rows, dtype=np.int64)
            for index, point in enumerate(points):
                takes = ((allowed >> index) & 1) == 1
                after |= np.where(takes, sums << point, 0)
            sums = after
        frame.reachable[rule.field] = np.where(open_rows & some, sums, 0)
        frame.touch(rule.field)

    def _bound(self, frame: _Frame, rule: DerivedRule, open_rows: np.ndarray) -> None:
        """The band values an unknown banded field can still take (derive._band_bounds)."""
        domain = self.domains[rule.field]
        found = np.zeros(frame.rows, dtype=np.int64)
        going = np.ones(frame.rows, dtype=bool)
        for cond, band in rule.bands:
            truth = self._kleene(cond, frame, {}, True)
            found |= np.where(going & (truth != FALSE), 1 << domain.index(band), 0)
            going &= truth != TRUE
        every = _mask(domain, [v for _, v in rule.bands])
        left = open_rows & (found != every)
        possible = frame.possible.setdefault(rule.field, np.zeros(frame.rows, dtype=np.int64))
        possible[left] = found[left]
        frame.touch(rule.field)

    # --- conditions ----------------------------------------------------------------------------

    def _kleene(
        self, cond: Cond, frame: _Frame, cache: dict[int, np.ndarray], deriving: bool
    ) -> np.ndarray:
        """A condition's truth per row (0, 1, 2); `cache` keeps nodes while facts stay put.

        A returned column may be shared (a cached node, a frame's constant): never written."""
        key = id(cond)  # this call's cache only; no table outlives the facts it was built on
        found = cache.get(key)
        if found is None:
            shared = self._shared(cond)
            found = cache.get(id(shared))
            if found is None:
                found = cache[id(shared)] = self._node(shared, frame, cache, deriving)
            cache[key] = found
        return found

    def _shared(self, cond: Cond) -> Cond:
        """The plan's first node equal to this one: equal nodes (the same test of the same
        fields, in different rules) have the same truth on every row, computed once."""
        entry = self._shared_nodes.get(id(cond))  # an entry holds its node, as _table's
        if entry is None or entry[0] is not cond:
            # equal and spelt alike: Const(True) == Const(1) == Const(1.0), and whether such
            # nodes test alike should not rest on the parser's typing of comparisons
            same = self._by_value.setdefault((cond, repr(cond)), cond)
            entry = self._shared_nodes[id(cond)] = (cond, same)
        return entry[1]

    def _node(
        self, cond: Cond, frame: _Frame, cache: dict[int, np.ndarray], deriving: bool
    ) -> np.ndarray:
        if isinstance(cond, Compare | Member):
            table = self._table(cond)
            truth = table.truth
            if truth is None:
                return self._number(cond, frame)
            index, sets = self._state(frame, cond.field, deriving)
            if sets:  # decided over the values still possible, once per set of them
                extra = np.asarray([table.over(m) for m in sets], dtype=np.int8)
                truth = np.concatenate((truth, extra))
            return truth[index]  # type: ignore[no-any-return]
        if isinstance(cond, Truth):
            return frame.constant(TRUE if cond.value else FALSE)
        if isinstance(cond, Known):
            known = frame.is_known(cond.field)
            return _doubled(~known if cond.negated else known)
        if isinstance(cond, Not):
            return _TRUE8 - self._kleene(cond.item, frame, cache, deriving)
        parts = [self._kleene(item, frame, cache, deriving) for item in cond.items]
        combine = np.minimum if isinstance(cond, And) else np.maximum
        if len(parts) == 1:
            return parts[0]
        found = combine(parts[0], parts[1])
        for part in parts[2:]:
            combine(found, part, out=found)
        return found  # type: ignore[no-any-return]

    def _table(self, cond: Compare | Member) -> _Table:
        """A test of a field against constants as its truth per value of the field's finite
        domain, built once per plan (a number's, or a comparison with an expression's, has
        none)."""
        entry = self._tables.get(id(cond))  # an entry holds its node: the id stays its own
        if entry is None or entry.cond is not cond:
            entry = self._tables[id(cond)] = _table_of(cond, self.domains.get(cond.field))
        return entry

    def _state(self, frame: _Frame, name: str, deriving: bool) -> tuple[np.ndarray, list[int]]:
        """What a test of a finite field reads, per row: the index of its value in the domain;
        unknown, the domain's length; unknown and narrowed (by constraints, band bounds or,
        while deriving, a score's reachable totals), the domain's length + 1 + the index of
        its set of possible values in the list of distinct sets also returned."""
        reached = deriving and name in frame.reachable
        key = (name, reached)
        found = frame.states.get(key)
        if found is not None:
            return found
        size = len(self.domains[name])
        known = frame.is_known(name)
        codes = frame.value.get(name, np.zeros(frame.rows, dtype=np.int64))
        index = np.where(known, codes, size)
        possible = frame.possible.get(name)
        if reached:
            reach = frame.reachable[name]
            possible = reach if possible is None else np.where(possible != 0, possible, reach)
        sets: list[int] = []
        if possible is not None:
            narrowed = np.flatnonzero(~known & (possible != 0))
            if len(narrowed):
                distinct, at = np.unique(possible[narrowed], return_inverse=True)
                index[narrowed] = size + 1 + at.reshape(-1)
                sets = distinct.tolist()
        found = frame.states[key] = (index, sets)
        return found

    def _number(self, cond: Compare | Member, frame: _Frame) -> np.ndarray:
        """A test of a number (or a finite field's value against an expression): unknown
        where any operand is unknown."""
        if isinstance(cond, Compare) and not isinstance(cond.rhs, Const):
            left, left_known = self._numeric(frame, cond.field)
            right, right_known = self._expression(cond.rhs, frame)
            holds = _NUMPY_COMPARE[cond.op](left, right)
            known = left_known & right_known
        else:
            known = frame.is_known(cond.field)
            values = frame.value.get(cond.field, np.zeros(frame.rows))
            if isinstance(cond, Member):
                holds = np.isin(values, np.asarray(cond.values, dtype=np.float64))
                holds = holds != cond.negated
            else:
                assert isinstance(cond.rhs, Const)  # noqa: S101  # the branch above
                holds = _NUMPY_COMPARE[cond.op](values, cond.rhs.value)
        truth = _doubled(holds & known)  # TRUE where it holds, FALSE where not, else:
        truth |= (~known).view(np.int8)  # UNKNOWN
        return truth

    def _numeric(self, frame: _Frame, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A field's values as numbers (a finite field's codes read through its domain)."""
        values = frame.value.get(name, np.zeros(frame.rows))
        domain = self.domains.get(name)
        if domain is not None:
            values = np.asarray(domain, dtype=np.float64)[values]
        return values, frame.is_known(name)

    def _expression(self, expr: Expr, frame: _Frame) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(expr, Const):
            return np.full(frame.rows, float(expr.value)), np.ones(frame.rows, dtype=bool)
        if isinstance(expr, FieldRef):
            return self._numeric(frame, expr.name)
        assert isinstance(expr, Arith)  # noqa: S101  # the Expr union
        left, left_known = self._expression(expr.left, frame)
        right, right_known = self._expression(expr.right, frame)
        return _NUMPY_ARITH[expr.op](left, right), left_known & right_known

    # --- outcomes ------------------------------------------------------------------------------

    def _statuses(self, frame: _Frame) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Rows x rules: each rule's status (an index into STATUSES), from base.rule_status."""
        cache: dict[int, np.ndarray] = {}
        statuses = np.zeros((frame.rows, len(self.ruleset.rules)), dtype=np.int8)
        for position, rule in enumerate(self.ruleset.rules):
            statuses[:, position] = self._status(rule, frame, cache)
        return statuses, cache

    def _status(self, rule: Rule, frame: _Frame, cache: dict[int, np.ndarray]) -> np.ndarray:
        """One rule's status per row (an index into STATUSES), from base.rule_status."""
        when = self._kleene(rule.when, frame, cache, False)
        if rule.scope is None:  # in scope
            return _STATUS_OF[TRUE * 3 :].take(when)
        scope = self._kleene(rule.scope, frame, cache, False)
        return _STATUS_OF.take(scope * 3 + when)  # type: ignore[no-any-return]

    def _outcomes(
        self,
        frame: _Frame,
        statuses: np.ndarray,
        cache: dict[int, np.ndarray],
        keep: np.ndarray,
        rows: np.ndarray,
        prepare: Prepare,
        row_values: RowValues,
    ) -> tuple[np.ndarray, list[list[RuleOutcome]]]:
        """Rows x rules: the number of each outcome in its rule's table; the tables.

        A not-evaluable outcome names the fields that would settle it: it comes from
        base.explained_outcome, on one row per rule and set of those fields (_GapWalks finds each
        row's set by column; the outcome depends on nothing else), kept across chunks. Only
        not-evaluable outcomes are explained: no output reads the missing fields of a
        conditional one (screener.flat_outcomes, cohort.flat_columns), so it stays the settled
        outcome of its status."""
        rules = self.ruleset.rules
        numbers = statuses.astype(np.int32)
        tables = [list(table) for table in self._settled]
        explained = statuses == NOT_EVALUABLE
        if not keep.all():
            explained[~keep] = False
        at, positions = np.divmod(np.flatnonzero(explained), len(rules))
        if not len(at):
            return numbers, tables
        by_rule = np.argsort(positions.astype(np.min_scalar_type(len(rules))), kind="stable")
        at, positions = at[by_rule], positions[by_rule]
        bits = self._gap_bits
        keys = np.zeros((len(at), bits.words), dtype=np.uint64)  # every rule's rows at once
        bounds = np.searchsorted(positions, np.arange(len(rules) + 1)).tolist()
        for position in range(len(rules)):
            start, stop = bounds[position], bounds[position + 1]
            walk = self._gap_walks.rules[position]
            if start == stop or walk is None:
                continue
            if isinstance(walk, np.ndarray):
                keys[start:stop] = walk
            else:
                keys[start:stop] = walk(_Rows(self, frame, cache, at[start:stop]))
        keys[:, 0] |= positions.astype(np.uint64)  # the rule, below the fields (_GapBits)
        if bits.words == 1:  # a key is an int (hashed faster than bytes)
            unique, first, inverse = np.unique(keys[:, 0], return_index=True, return_inverse=True)
        else:
            unique, first, inverse = unique_rows(keys)
        tokens: list[int] | list[bytes] = unique.tolist()
        found: list[RuleOutcome | None] = [self._explained.get(key) for key in tokens]
        wanted = [n for n, outcome in enumerate(found) if outcome is None]
        if len(self._explained) + len(wanted) > EXPLAINED_LIMIT:
            self._explained.clear()
            wanted = list(range(len(found)))
        if wanted:
            chosen = sorted({int(at[first[n]]) for n in wanted})
            facts = {
                row: prepare(values)
                for row, values in zip(chosen, row_values(rows[chosen].tolist()), strict=True)
            }
            status = STATUSES[NOT_EVALUABLE]
            for n in wanted:
                row, position = int(at[first[n]]), int(positions[first[n]])
                outcome = explained_outcome(rules[position], status, facts[row], self.ruleset)
                self._explained[tokens[n]] = found[n] = outcome
        numbered = []
        for position, entry in zip(positions[first].tolist(), found, strict=True):
            assert entry is not None  # noqa: S101  # each one found or explained above
            table = tables[position]
            numbered.append(len(table))
            table.append(entry)
        numbers[at, positions] = np.asarray(numbered, dtype=np.int32)[inverse.reshape(-1)]
        return numbers, tables

    def _values_of(
        self, frame: _Frame, name: str, keep: np.ndarray
    ) -> tuple[np.ndarray, tuple[Scalar | None, ...]]:
        """A probed enum field per kept row: the index of its value, or of None (the last)."""
        domain = self.domains[name]
        codes = frame.value.get(name, np.zeros(frame.rows, dtype=np.int64))
        return np.where(frame.is_known(name), codes, len(domain))[keep], (*domain, None)


def _kept(table: np.ndarray, keep: np.ndarray, block: int = 4096) -> np.ndarray:
    """table[keep] (rows) without a second table: each kept row moved up within the table, a
    block of rows at a time (row n is kept only from row n or after, so no row is overwritten
    before it is moved)."""
    at = np.flatnonzero(keep)
    for start in range(0, len(at), block):
        moved = at[start : start + block]
        table[start : start + len(moved)] = table[moved]
    return table[: len(at)]


def pack(parts: Sequence[np.ndarray], bits: int) -> np.ndarray:
    """Small non-negative integer columns packed into rows of uint64 words, `bits` each."""
    per_word = 64 // bits
    words = []
    for start in range(0, max(len(parts), 1), per_word):
        word = np.zeros(len(parts[0]) if parts else 0, dtype=np.uint64)
        for shift, part in enumerate(parts[start : start + per_word]):
            word |= part.astype(np.uint64) << np.uint64(shift * bits)
        words.append(word)
    return np.stack(words, axis=1)


def unique_rows(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of a word matrix (each as its bytes' void scalar), the first row with
    each, and each row's index among them."""
    matrix = np.ascontiguousarray(words)
    if matrix.shape[1] == 1:  # one word: a plain integer sort
        values, first, inverse = np.unique(matrix[:, 0], return_index=True, return_inverse=True)
        unique = np.ascontiguousarray(values).view(np.dtype((np.void, 8)))
        return unique, first, inverse.reshape(-1)
    flat = matrix.view(np.dtype((np.void, matrix.shape[1] * 8))).reshape(-1)
    unique, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    return unique, first, inverse.reshape(-1)


class _GapBits:
    """Where each input field an explanation may name sits in a key of _outcomes: a row of
    `words` 64-bit words, the rule's position in the lowest bits of the first, then one bit per
    field (sorted by name). A derived field is never named (derive.missing_inputs names the
    inputs that would settle it), so it has no bit."""

    def __init__(self, ruleset: Ruleset) -> None:
        derived = ruleset.derived_by_field
        names = sorted(
            {n for r in ruleset.rules for n in ruleset.explanation_inputs[r.id]} - set(derived)
        )
        self.first = max(1, (len(ruleset.rules) - 1).bit_length())  # the rule's bits
        self.words = (self.first + len(names) + 63) // 64
        self.bit: dict[str, np.ndarray] = {}
        for n, name in enumerate(names):
            word, shift = divmod(self.first + n, 64)
            bit = np.zeros(self.words, dtype=np.uint64)
            bit[word] = np.uint64(1) << np.uint64(shift)
            self.bit[name] = bit


Gaps = np.ndarray  # per row, the bits (_GapBits) of the fields named: rows x words
Walk = Callable[["_Rows"], Gaps]  # a condition's gaps on some rows of a chunk


class _Rows:
    """Some rows of a chunk (positions in its frame), where one rule's gaps are found."""

    def __init__(
        self, plan: CohortPlan, frame: _Frame, cache: dict[int, np.ndarray], at: np.ndarray
    ) -> None:
        self.plan, self.frame, self.cache, self.at = plan, frame, cache, at
        self.settled: dict[str, Gaps] = {}  # derived field -> what would settle it

    def truth(self, cond: Cond) -> np.ndarray:
        truth: np.ndarray = self.plan._kleene(cond, self.frame, self.cache, False)[self.at]
        return truth

    def unknown(self, cond: Cond) -> np.ndarray:
        """As a column of one: whether the condition is unknown."""
        unknown: np.ndarray = self.truth(cond) == UNKNOWN
        return unknown[:, None]

    def known(self, name: str) -> np.ndarray:
        known: np.ndarray = self.frame.is_known(name)[self.at]
        return known


class _GapWalks:
    """The fields base.explained_outcome names for a rule's rows, as key bits (_GapBits),
    compiled per rule once (as logic compiles its explainers) and run on a chunk's rows.

    The same walk as logic.unknown_fields, by column: a comparison names the fields it reads
    that are unknown; `and`/`or` name what their children whose truth is unknown name, `not`
    what its item names. derive.missing_inputs then puts in place of an unknown derived field
    what would settle it: for bands, what the first band whose condition is unknown names; for
    a condition, what it names; else its inputs that are unknown (each taken as named). Truth
    values are those of the final facts (CohortPlan._kleene, not deriving), as the explanation
    reads them. Two rows of a rule with the same bits get the same outcome: nothing else of
    the facts reaches it (tests/test_vectorised.py holds every row's outcome against its own
    explanation). None stands for a walk that never names a field."""

    def __init__(self, ruleset: Ruleset, bits: _GapBits) -> None:
        self.derived = ruleset.derived_by_field
        self.bits = bits
        self.settles: dict[str, Walk | None] = {}
        self.rules = [self.rule(rule.when) for rule in ruleset.rules]

    def rule(self, when: Cond) -> Walk | np.ndarray | None:
        """A rule's walk, or the bits every not-evaluable row of it names: a condition that
        compares one input field with constants is unknown only where that field is."""
        if isinstance(when, Compare | Member) and when.field not in self.derived:
            constant = isinstance(when, Member) or isinstance(when.rhs, Const)
            return self.bits.bit[when.field] if constant else self.read(when)
        return self.read(when)

    def read(self, cond: Cond) -> Walk | None:
        """logic.unknown_fields of the condition, whatever its truth."""
        if isinstance(cond, Known | Truth):
            return None
        if isinstance(cond, Not):
            return self.read(cond.item)
        if isinstance(cond, And | Or):
            return _union([self.walked(item) for item in cond.items])
        return _union([self.field(name) for name in sorted(fields_of(cond))])

    def walked(self, cond: Cond) -> Walk | None:
        """What the condition names where it is unknown (where the walk enters it), else none."""
        if isinstance(cond, Known | Truth):
            return None
        if isinstance(cond, Not):
            return self.walked(cond.item)
        if isinstance(cond, Compare) and not isinstance(cond.rhs, Const):
            return self.read(cond)  # unknown exactly where a field it reads is
        if isinstance(cond, Compare | Member) and cond.field not in self.derived:
            table = np.zeros((3, self.bits.words), dtype=np.uint64)  # by truth value
            table[UNKNOWN] = self.bits.bit[cond.field]  # unknown only where its field is
            return lambda rows: table[rows.truth(cond)]
        named = self.settle(cond.field) if isinstance(cond, Compare | Member) else self.read(cond)
        if named is None:
            return None
        return lambda rows: named(rows) * rows.unknown(cond)

    def field(self, name: str) -> Walk | None:
        """The field where it is unknown: its bit, or for a derived field what would settle it."""
        if name not in self.derived:
            table = np.zeros((2, self.bits.words), dtype=np.uint64)  # by knownness
            table[0] = self.bits.bit[name]
            return lambda rows: table[rows.known(name).view(np.uint8)]
        named = self.settle(name)
        if named is None:
            return None
        return lambda rows: named(rows) * ~rows.known(name)[:, None]

    def settle(self, name: str) -> Walk | None:
        """derive.missing_inputs for one unknown derived field (once per rule's rows)."""
        if name in self.settles:
            return self.settles[name]
        rule = self.derived[name]
        body: Walk | None
        if rule.bands:
            bands = [(c, self.read(c)) for c, _ in rule.bands if not isinstance(c, Truth)]
            body = _first_unknown(bands)  # a constant band is never unknown
        elif rule.condition is not None:
            body = self.read(rule.condition)
        else:
            body = _union([self.field(n) for n in rule.inputs])
        self.settles[name] = found = None if body is None else _memoised(name, body)
        return found


def _memoised(name: str, walk: Walk) -> Walk:
    """The walk, run once per rule's rows (a derived field read in several places)."""

    def kept(rows: _Rows) -> Gaps:
        gaps = rows.settled.get(name)
        if gaps is None:
            gaps = rows.settled[name] = walk(rows)
        return gaps

    return kept


def _union(parts: Sequence[Walk | None]) -> Walk | None:
    """What any of the walks names."""
    walks = [part for part in parts if part is not None]
    if len(walks) <= 1:
        return walks[0] if walks else None

    def union(rows: _Rows) -> Gaps:
        found = walks[0](rows)
        for walk in walks[1:]:
            found = found | walk(rows)  # a new array: a walk's result may be kept (settled)
        return found

    return union


def _first_unknown(bands: Sequence[tuple[Cond, Walk | None]]) -> Walk | None:
    """What the first band whose condition is unknown names (derive.missing_inputs)."""
    if all(walk is None for _, walk in bands):
        return None

    def first(rows: _Rows) -> Gaps:
        found = np.zeros((len(rows.at), 1), dtype=np.uint64)
        before = np.zeros((len(rows.at), 1), dtype=bool)
        for cond, walk in bands:
            unknown = rows.unknown(cond)
            if walk is not None:
                found = found | walk(rows) * (unknown & ~before)
            before = before | unknown
        return found

    return first


def _walk(cond: Cond) -> list[Cond]:
    found: list[Cond] = [cond]
    if isinstance(cond, Not):
        found += _walk(cond.item)
    elif isinstance(cond, And | Or):
        for item in cond.items:
            found += _walk(item)
    return found


def _test_of(cond: Compare | Member) -> Callable[[Scalar], bool]:
    """The test a comparison with a constant, or a membership, applies to one value."""
    if isinstance(cond, Member):
        members = frozenset(cond.values)
        return (lambda v: v not in members) if cond.negated else members.__contains__
    assert isinstance(cond.rhs, Const)  # noqa: S101  # the caller's branch
    compare, constant = _PYTHON_COMPARE[cond.op], cond.rhs.value
    return lambda v: compare(v, constant)


@dataclass(frozen=True, slots=True)
class _Table:
    """A test of a field against constants over the field's finite domain (bit n: domain[n]):
    `holds`, the values it holds for; `truth`, its truth value per domain value, then the one
    of an unknown value not narrowed (None: the field has no finite domain, or the test reads
    an expression). `cond` is kept so that the plan's key, the node's id, stays its own."""

    cond: Compare | Member
    truth: np.ndarray | None
    holds: int = 0
    full: int = 0

    def over(self, possible: int) -> int:
        """logic._same over the values a bitmask still allows: true if the test holds for
        every one, false if for none, else unknown."""
        possible &= self.full
        if possible & ~self.holds == 0:
            return TRUE
        return UNKNOWN if possible & self.holds else FALSE


def _table_of(cond: Compare | Member, domain: Sequence[Scalar] | None) -> _Table:
    if domain is None or (isinstance(cond, Compare) and not isinstance(cond.rhs, Const)):
        return _Table(cond, None)
    test = _test_of(cond)
    holds = sum(1 << n for n, value in enumerate(domain) if test(value))
    partial = _Table(cond, None, holds, (1 << len(domain)) - 1)
    truth = [TRUE if holds >> n & 1 else FALSE for n in range(len(domain))]
    # unknown and not narrowed: decided over the whole domain (enum, boolean), else unknown
    finite = FIELDS_BY_NAME[cond.field].type in (FieldType.enum, FieldType.boolean)
    truth.append(partial.over(partial.full) if finite else UNKNOWN)
    return _Table(cond, np.asarray(truth, dtype=np.int8), holds, partial.full)


def _valid(column: pa.Array) -> np.ndarray:
    """Which of a column's values are not null."""
    if column.null_count == 0:
        return np.ones(len(column), dtype=bool)
    return _bits(column.buffers()[0], column.offset, len(column))


def _bits(buffer: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """An Arrow bitmap (validity, or a boolean column's values; a null's bit may be either)
    as booleans."""
    bits = np.unpackbits(np.frombuffer(buffer, np.uint8), count=offset + length, bitorder="little")
    return bits[offset:].view(bool)


def _doubled(flags: np.ndarray) -> np.ndarray:
    """A mask as truth values: TRUE where set, else FALSE."""
    return np.left_shift(flags.view(np.int8), 1)


def _frozen(column: np.ndarray) -> np.ndarray:
    """A column shared between readers, made read-only so that none can change it for all."""
    column.flags.writeable = False
    return column


def _mask(domain: Sequence[Scalar], values: Iterable[Scalar]) -> int:
    """The bitmask of some values of a domain (bit n: domain[n]); True and 1 kept apart."""
    chosen = {(type(v), v) for v in values}
    return sum(1 << n for n, v in enumerate(domain) if (type(v), v) in chosen)


def _round(values: np.ndarray, decimals: int) -> np.ndarray:
    """round(float(x), decimals) for every x: numpy's rounding, and Python's own where the
    scaled value lies near a half (where the two can differ)."""
    rounded = np.round(values, decimals)
    scaled = values * 10.0**decimals
    near = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
    for n in np.flatnonzero(near):
        rounded[n] = round(float(values[n]), decimals)
    return rounded


def _monotone(ruleset: Ruleset) -> bool:
    """No narrowing asks whether a constrained field is known: inferring a value then can only
    make conditions truer, so applying narrowings in any order reaches derive's facts."""
    constrained = ruleset.constrained_fields
    for _, _, when, _, _, _ in ruleset.compiled_narrowings:
        for node in _walk(when):
            if isinstance(node, Known) and node.field in constrained:
                return False
    return True
