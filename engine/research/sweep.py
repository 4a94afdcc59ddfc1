"""`miss-screen rules sweep`: how a cohort's verdicts move as one constant of one rule moves.

The rule is changed in a copy of the parsed ruleset, in memory: the N-th numeric constant of its
condition (scope first, then `when`, left to right) takes each value of the range, and the
condition is written out and parsed again (engine.rules.condition), so a value the rule language
refuses is refused here too, and the copy's sha256 is re-derived from what it now says: every
point of the report is stamped with the rules that produced it. Nothing on disk changes, and the
other rules (those that read the same field included) keep their own thresholds.

The cohort is read through the batch readers and their identifier guard
(engine.batch.run.open_inputs), and each value's ruleset screens it through the batch worker's
own path (engine.batch.worker.screen_chunk), with the engine asked, so a sweep sees exactly what
`batch` would. On the durable and reference engines the cohort is read once and each value is
screened in a process of its own, which ends with it: durable-rules never frees a ruleset it has
built (about 50 MB each, engine/evaluate/durable.py HandleSet), so one process would grow with
every value of a long sweep. The vectorised engine builds none (the few rows it leaves to the
per-row path go to the reference evaluator), so its values are all screened in this process, the
cohort streamed one chunk at a time and no chunk kept: each chunk is decided once, at the first
value, with the swept rule's copy at every value evaluated beside the rules on the same facts (the
plan's variants, engine.evaluate.vectorised.CohortPlan), and per value only that rule's status
changes and the policy is asked again (_screen_values). Validation comes before evaluation, so
every value rejects the same rows and the screened rows line up value by value: a row's verdict
and the swept rule's outcome are compared between neighbouring values, chunk by chunk, to count
the cases that change (_Changes).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import math
import multiprocessing
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.batch.run import BatchOptions, all_chunks, open_inputs
from engine.batch.startup import forbid_core_dumps
from engine.batch.worker import (
    FLAT_COLUMNS,
    FLAT_SCHEMA,
    ChunkResult,
    OutputFormat,
    WorkerConfig,
    screen_chunk,
    use_screener,
)
from engine.cohort import row_verdicts
from engine.errors import RuleFileError, UsageError
from engine.evaluate.vectorised import (
    STATUSES,
    CohortDecisions,
    CohortPlan,
    Prepare,
    RowValues,
    pack,
    unique_rows,
)
from engine.io.deid import escape_text, shown_case_id
from engine.io.tables import Chunk
from engine.models import RulesetStamp, RuleStatus, Verdict
from engine.rules.condition import (
    And,
    Arith,
    Compare,
    Cond,
    Const,
    Expr,
    Not,
    Or,
    parse_condition,
    to_text,
)
from engine.rules.loader import condition_fields
from engine.rules.ruleset import Rule, Ruleset
from engine.screener import COHORT_ENGINE, SUBGROUP_FIELDS, Screener, check_engine

MAX_POINTS = 101  # values in one sweep: each is a full screening of the cohort
VERDICTS = tuple(v.value for v in Verdict)
_CODE = {name: code for code, name in enumerate(VERDICTS)}
_FIRED = RuleStatus.fired.value
_FIRED_AT = STATUSES.index(RuleStatus.fired)


# --- which constant ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    """One numeric constant of a rule's condition: its number (from 1), where, and its value."""

    number: int
    part: str  # "scope" or "when"
    comparison: str  # the comparison that holds it, as text
    field: str  # the field that comparison reads on its left
    value: int | float


def _numbers(expr: Expr) -> Iterator[Const]:
    if isinstance(expr, Const):
        if isinstance(expr.value, int | float) and not isinstance(expr.value, bool):
            yield expr
    elif isinstance(expr, Arith):
        yield from _numbers(expr.left)
        yield from _numbers(expr.right)


def _compares(cond: Cond) -> Iterator[Compare]:
    if isinstance(cond, Compare):
        yield cond
    elif isinstance(cond, And | Or):
        for item in cond.items:
            yield from _compares(item)
    elif isinstance(cond, Not):
        yield from _compares(cond.item)


def _parts(rule: Rule) -> list[tuple[str, Cond]]:
    """The rule's conditions in reading order: its scope (if any), then `when`."""
    parts: list[tuple[str, Cond]] = [] if rule.scope is None else [("scope", rule.scope)]
    return [*parts, ("when", rule.when)]


def numeric_constants(rule: Rule) -> list[Constant]:
    """Every numeric constant of the rule's scope and condition, in reading order."""
    found: list[Constant] = []
    for part, cond in _parts(rule):
        for compare in _compares(cond):
            for const in _numbers(compare.rhs):
                number = len(found) + 1
                value = const.value
                assert isinstance(value, int | float)  # noqa: S101  # _numbers keeps numbers only
                found.append(Constant(number, part, to_text(compare), compare.field, value))
    return found


def _listed(constants: Sequence[Constant]) -> str:
    return "; ".join(f"{c.number}: {c.comparison} ({c.part})" for c in constants)


def pick_constant(ruleset: Ruleset, spec: str) -> tuple[Rule, Constant]:
    """The rule and constant `RULE` or `RULE:N` names; a UsageError saying what exists if not."""
    rule_id, colon, number_text = spec.rpartition(":") if ":" in spec else (spec, "", "")
    rule = ruleset.by_id.get(rule_id)
    if rule is None:
        close = difflib.get_close_matches(rule_id.upper(), list(ruleset.by_id), n=1)
        hint = f"; did you mean {close[0]}?" if close else " (miss-screen rules list shows them)"
        raise UsageError(f"no rule {escape_text(rule_id, 40)!r} in {ruleset.directory}{hint}")
    constants = numeric_constants(rule)
    if not constants:
        raise UsageError(f"{rule.id} has no numeric constant to sweep: {to_text(rule.when)}")
    if colon:
        if not number_text.isdecimal() or not 1 <= int(number_text) <= len(constants):
            raise UsageError(
                f"{rule.id}:{escape_text(number_text, 20)}: {rule.id} has {len(constants)} "
                f"numeric constant(s), numbered from 1: {_listed(constants)}"
            )
        return rule, constants[int(number_text) - 1]
    if len(constants) > 1:
        raise UsageError(
            f"{rule.id} has {len(constants)} numeric constants; name one as {rule.id}:N: "
            f"{_listed(constants)}"
        )
    return rule, constants[0]


# --- the values ---------------------------------------------------------------------------------


def sweep_values(start: str, stop: str, step: str) -> list[int | float]:
    """The values from `start` to `stop` (inclusive, where a step lands on it) by `step`.

    Counted in decimal, so 0.1 steps land on 0.3 and not 0.30000000000000004.
    """
    bounds = []
    for name, text in (("--from", start), ("--to", stop), ("--step", step)):
        try:
            number = Decimal(text.strip())
        except (InvalidOperation, AttributeError):
            raise UsageError(f"{name}: {escape_text(str(text), 30)!r} is not a number") from None
        if not number.is_finite() or not math.isfinite(float(number)):
            raise UsageError(f"{name}: expected a finite number, got {escape_text(text, 30)!r}")
        bounds.append(number)
    low, high, by = bounds
    if by <= 0:
        raise UsageError(f"--step must be more than 0, got {step.strip()}")
    if high < low:
        raise UsageError(f"--to ({stop.strip()}) is below --from ({start.strip()})")
    points = int((high - low) / by) + 1
    if points > MAX_POINTS:
        raise UsageError(
            f"--from {start.strip()} --to {stop.strip()} --step {step.strip()} gives {points:,} "
            f"values; at most {MAX_POINTS} (each screens the whole cohort): take a larger step"
        )
    decimals = [low + i * by for i in range(points)]
    return [int(d) if d == d.to_integral_value() else float(d) for d in decimals]


def with_constant(ruleset: Ruleset, rule: Rule, constant: Constant, value: int | float) -> Ruleset:
    """A copy of `ruleset` in which the rule's constant is `value`: the condition written out
    and parsed again, the copy's sha256 re-derived from it."""
    seen = 0

    def expr(node: Expr) -> Expr:
        nonlocal seen
        if isinstance(node, Arith):
            left = expr(node.left)
            return dataclasses.replace(node, left=left, right=expr(node.right))
        if isinstance(node, Const) and list(_numbers(node)):
            seen += 1
            return Const(value) if seen == constant.number else node
        return node

    def cond(node: Cond) -> Cond:
        if isinstance(node, Compare):
            return Compare(node.op, node.field, expr(node.rhs))
        if isinstance(node, And | Or):
            return type(node)(tuple(cond(item) for item in node.items))
        if isinstance(node, Not):
            return Not(cond(node.item))
        return node

    fields = condition_fields(ruleset.derived)
    texts: dict[str, str] = {}
    trees: dict[str, Cond] = {}
    for part, tree in _parts(rule):
        texts[part] = to_text(cond(tree))
        try:
            trees[part] = parse_condition(texts[part], fields, path=rule.path, key=part)
        except RuleFileError as exc:
            raise UsageError(f"{rule.id} with {constant.field} at {value}: {exc}") from None
    meta = rule.meta.model_copy(update=texts)
    moved = Rule(meta=meta, path=rule.path, scope=trees.get("scope"), when=trees["when"])
    rules = tuple(moved if r.id == rule.id else r for r in ruleset.rules)
    return dataclasses.replace(ruleset, rules=rules)


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Point:
    """The cohort's verdicts with the constant at one value."""

    value: int | float
    condition: str  # the rule's condition at this value
    ruleset_sha256: str
    verdicts: dict[str, int]
    rule_fired: int  # rows on which the swept rule fired


@dataclass
class Step:
    """What changed between two neighbouring values: `changed` counts the rows whose verdict
    differs, `rule_changed` the rows whose swept rule's outcome differs (fired, conditional, not
    evaluable, or none of these: not fired or not applicable, which the outputs do not tell
    apart), whether their verdict moved with it or not."""

    low: int | float
    high: int | float
    changed: int
    transitions: dict[str, int]  # "from->to": rows
    case_ids: list[str]  # the first ones the identifier guard lets a report show
    ids_withheld: int  # among those first ones, ids not shown (they could identify someone)
    rule_changed: int = 0  # rows whose swept rule's outcome changed (see the docstring)


@dataclass
class SweepReport:
    rule_id: str
    constant: Constant
    constants: list[Constant]
    readers_of_field: list[str]  # other screening rules that read the swept field
    derived_from_field: list[str]  # derived attributes computed from it
    cohort: str
    cohort_sha256: str
    engine: str
    base: RulesetStamp
    rows_read: int = 0
    rows_screened: int = 0
    rows_rejected: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    examples: int = 10

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": {
                "id": self.rule_id,
                "constant": dataclasses.asdict(self.constant),
                "constants": [dataclasses.asdict(c) for c in self.constants],
            },
            "field": self.constant.field,
            "other_rules_reading_field": self.readers_of_field,
            "derived_from_field": self.derived_from_field,
            "cohort": {"path": self.cohort, "sha256": self.cohort_sha256},
            "ruleset": self.base.model_dump(),
            "engine": self.engine,
            "reconciliation": {
                "rows_read": self.rows_read,
                "rows_screened": self.rows_screened,
                "rows_rejected": self.rows_rejected,
                "balanced": self.rows_read == self.rows_screened + self.rows_rejected,
            },
            "ignored_columns": self.ignored_columns,
            "points": [dataclasses.asdict(p) for p in self.points],
            "changes": [dataclasses.asdict(s) for s in self.steps],
            "examples_per_change": self.examples,
        }


# --- the sweep -----------------------------------------------------------------------------------

# a rule's outcome as the outputs show it: none (not applicable, not fired), conditional, not
# evaluable, fired; by index into STATUSES
_OUTCOME_OF = np.asarray([0, 0, 1, 2, 3], np.int8)
_FIRED_COLUMNS = tuple(name for name in FLAT_COLUMNS if name.startswith("fired_"))


def _names(table: pa.Table, column: str, rule_id: str) -> np.ndarray:
    """Per row, whether an output column (rule ids joined by `;`) names the rule."""
    pattern = f"(^|;){re.escape(rule_id)}(;|$)"
    found = pc.match_substring_regex(table[column], pattern).fill_null(False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class _Screened:
    """Screened rows at one value, in input order: each one's verdict code and swept rule's
    outcome, with what they add up to."""

    codes: np.ndarray
    outcomes: np.ndarray
    case_ids: Sequence[str] | pa.ChunkedArray
    verdicts: collections.Counter[str]
    rule_fired: int
    rows: int
    rejected: int


def _screened(result: ChunkResult, rule_id: str) -> _Screened:
    """A chunk's result (its records: `batch --format parquet` record batches) as _Screened."""
    table = _records(result)
    fired = np.zeros(table.num_rows, dtype=bool)
    for column in _FIRED_COLUMNS:
        fired |= _names(table, column, rule_id)
    outcomes = np.where(
        fired,
        3,
        np.where(
            _names(table, "not_evaluable", rule_id),
            2,
            np.where(_names(table, "conditional", rule_id), 1, 0),
        ),
    ).astype(np.int8)
    return _Screened(
        _codes(table),
        outcomes,
        table["case_id"],
        collections.Counter(result.verdicts),
        result.rule_status[(rule_id, _FIRED)],
        result.rows,
        result.rejected,
    )


def _records(result: ChunkResult) -> pa.Table:
    return pa.Table.from_batches(result.records, FLAT_SCHEMA)


def _codes(table: pa.Table) -> np.ndarray:
    """Each output row's verdict as its index in VERDICTS."""
    found = pc.index_in(table["verdict"], value_set=pa.array(VERDICTS, pa.string()))
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.uint8)


@dataclass
class _Totals:
    """What the cohort adds up to at one value."""

    verdicts: collections.Counter[str]
    rule_fired: int


class _Changes:
    """The steps between neighbouring values, added up a part of the cohort at a time (parts
    in input order): per step, the rows whose verdict changed (how many, from which verdict to
    which, the first `keep` of them) and the rows whose swept rule's outcome changed."""

    def __init__(self, steps: int, keep: int) -> None:
        self.keep = keep
        self.changed = [0] * steps
        self.rule_changed = [0] * steps
        self.transitions = [collections.Counter[tuple[int, int]]() for _ in range(steps)]
        self.case_ids: list[list[str]] = [[] for _ in range(steps)]
        self.withheld = [0] * steps

    def add(self, step: int, before: _Screened, after: _Screened) -> None:
        """The same rows of a part, screened at the step's low and high value."""
        if len(before.codes) != len(after.codes):  # validation precedes evaluation: cannot differ
            raise RuntimeError("the screened rows differ between two values of a sweep")
        moved = np.flatnonzero(before.codes != after.codes)
        self.changed[step] += len(moved)
        self.rule_changed[step] += int(np.count_nonzero(before.outcomes != after.outcomes))
        self.transitions[step].update(
            zip(before.codes[moved].tolist(), after.codes[moved].tolist(), strict=True)
        )
        room = self.keep - len(self.case_ids[step]) - self.withheld[step]
        for index in moved[: max(room, 0)].tolist():
            given = after.case_ids[index]
            case_id = shown_case_id(given.as_py() if isinstance(given, pa.Scalar) else given)
            if case_id is None:
                self.withheld[step] += 1
            else:
                self.case_ids[step].append(case_id)

    def steps(self, values: Sequence[int | float]) -> list[Step]:
        return [
            Step(
                values[n],
                values[n + 1],
                self.changed[n],
                {f"{VERDICTS[a]}->{VERDICTS[b]}": k for (a, b), k in sorted(pairs.items())},
                self.case_ids[n],
                self.withheld[n],
                self.rule_changed[n],
            )
            for n, pairs in enumerate(self.transitions)
        ]


def _screen_point(
    chunks: Sequence[Chunk], screener: Screener, config: WorkerConfig, rule_id: str
) -> _Screened:
    """Every chunk screened with one value's rules, in this process, as batch screens it."""
    use_screener(config, screener)
    parts = [_screened(screen_chunk(chunk), rule_id) for chunk in chunks]
    verdicts: collections.Counter[str] = collections.Counter()
    for part in parts:
        verdicts.update(part.verdicts)
    return _Screened(
        np.concatenate([p.codes for p in parts]) if parts else np.zeros(0, np.uint8),
        np.concatenate([p.outcomes for p in parts]) if parts else np.zeros(0, np.int8),
        pa.chunked_array([cast(pa.ChunkedArray, p.case_ids) for p in parts], pa.string()),
        verdicts,
        sum(p.rule_fired for p in parts),
        sum(p.rows for p in parts),
        sum(p.rejected for p in parts),
    )


def _point_in_child(
    chunks: Sequence[Chunk],
    ruleset: Ruleset,
    engine: str,
    site: dict[str, Any],
    config: WorkerConfig,
    rule_id: str,
) -> _Screened:
    """_screen_point in a process of its own (ProcessPoolExecutor, one task per process)."""
    forbid_core_dumps()  # it holds case data, as a batch worker does
    screener = Screener.from_ruleset(ruleset, engine, MappingProxyType(site))
    return _screen_point(chunks, screener, config, rule_id)


def _vectorised(ruleset: Ruleset, site: Mapping[str, Any]) -> Screener:
    """A vectorised Screener whose rows left to the per-row path (facts that contradict each
    other, a feature the compiler does not cover) go to the reference evaluator: it builds no
    durable-rules ruleset, which would stay in this process for good. The identity tests
    (tests/test_engines_differential.py) hold the reference to durable-rules, and
    tests/test_rules_sweep.py this path to the per-process one."""
    screener = Screener.from_ruleset(ruleset, "reference", MappingProxyType(dict(site)))
    return dataclasses.replace(screener, engine="vectorised")


def sweep_cohort(
    ruleset: Ruleset,
    spec: str,
    values: Sequence[int | float],
    options: BatchOptions,
    *,
    examples: int = 10,
    per_process: bool = False,
) -> SweepReport:
    """Screen `options.inputs` (one cohort) once per value of the constant `spec` names.

    On the vectorised engine, which builds no durable-rules ruleset, every value is screened in
    this process, the cohort streamed chunk by chunk, unless `per_process` (the path every
    other engine takes: a process per value; tests hold the two to one another)."""
    rule, constant = pick_constant(ruleset, spec)
    engine = check_engine(options.engine or COHORT_ENGINE)
    rulesets = [with_constant(ruleset, rule, constant, value) for value in values]  # all checked
    readers, ignored = open_inputs(options)
    report = SweepReport(
        rule_id=rule.id,
        constant=constant,
        constants=numeric_constants(rule),
        readers_of_field=sorted(
            r.id for r in ruleset.rules if constant.field in r.fields and r.id != rule.id
        ),
        derived_from_field=sorted(d.field for d in ruleset.derived if constant.field in d.inputs),
        cohort=readers[0].source,
        cohort_sha256=readers[0].sha256(),
        engine=engine,
        base=ruleset.stamp,
        ignored_columns=ignored,
        examples=examples,
    )
    changes = _Changes(len(values) - 1, examples)
    if engine == "vectorised" and not per_process:
        # closed on every path, as batch closes its reader (issue 26)
        with contextlib.closing(all_chunks(readers)) as stream:
            every = _screen_values(report, stream, rulesets, rule.id, options, changes)
    else:
        chunks = list(all_chunks(readers))  # the cohort, read once, sent to each value's process
        every = _points_apart(report, chunks, rulesets, rule.id, options, changes)
    for value, swept, screened in zip(values, rulesets, every, strict=True):
        moved = swept.by_id[rule.id]
        report.points.append(
            Point(
                value=value,
                condition=(f"{to_text(moved.scope)} / " if moved.scope else "")
                + to_text(moved.when),
                ruleset_sha256=swept.sha256,
                verdicts={v: screened.verdicts[v] for v in VERDICTS},
                rule_fired=screened.rule_fired,
            )
        )
    report.steps = changes.steps(values)
    return report


def _config(report: SweepReport, options: BatchOptions, swept: Ruleset) -> WorkerConfig:
    return WorkerConfig(
        rules_dir=options.rules_dir,
        ruleset_sha256=swept.sha256,
        site=options.site,
        output_format=OutputFormat.parquet,  # records kept as Arrow columns
        ignored_columns=frozenset(report.ignored_columns),
        in_process=True,
        mapping=options.mapping,
        engine=report.engine,
    )


def _points_apart(
    report: SweepReport,
    chunks: Sequence[Chunk],
    rulesets: Sequence[Ruleset],
    rule_id: str,
    options: BatchOptions,
    changes: _Changes,
) -> list[_Totals]:
    """The cohort screened at each value in a fresh process, and the steps between them."""
    points = ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("forkserver"), max_tasks_per_child=1
    )
    found: list[_Totals] = []
    previous: _Screened | None = None
    with points:
        for swept in rulesets:
            config = _config(report, options, swept)
            # a fresh copy: what a process computed from `swept` (compiled closures) does not
            # pickle
            fresh = dataclasses.replace(swept)
            task = points.submit(
                _point_in_child, chunks, fresh, report.engine, dict(options.site), config, rule_id
            )
            screened = task.result()
            if previous is not None:
                changes.add(len(found) - 1, previous, screened)
            found.append(_Totals(screened.verdicts, screened.rule_fired))
            previous = screened
    if previous is not None:
        report.rows_read, report.rows_rejected = previous.rows, previous.rejected
        report.rows_screened = len(previous.codes)
    return found


# --- the vectorised sweep: the cohort streamed, decided once, the swept rule once per value -----


class _SweepPlan(CohortPlan):
    """The first value's plan, with the swept rule at every value as its variants; it keeps
    its last decision (one chunk's), which the batch worker's screen_chunk does not return."""

    last: CohortDecisions | None = None

    def decide(
        self,
        columns: Mapping[str, pa.Array],
        plain: np.ndarray,
        prepare: Prepare,
        row_values: RowValues,
    ) -> CohortDecisions:
        self.last = super().decide(columns, plain, prepare, row_values)
        return self.last


def _screen_values(
    report: SweepReport,
    chunks: Iterable[Chunk],
    rulesets: Sequence[Ruleset],
    rule_id: str,
    options: BatchOptions,
    changes: _Changes,
) -> list[_Totals]:
    """Every value's screening, in this process, one chunk at a time: what each value adds up
    to (no rows kept), the steps added to `changes` as each chunk is done.

    Each chunk is screened once, at the first value, as batch screens it; where the vectorised
    engine decided every row it screened, the other values only change the swept rule's status
    column (the plan's variants: the same compiler on the same facts; screening rules derive no
    attribute the swept rule reads) and ask the policy again (engine.cohort.row_verdicts). A
    chunk with rows screened one by one (values to normalise, contradictory facts, a site
    profile the compiler leaves to them) is screened again at each value."""
    position = [r.id for r in rulesets[0].rules].index(rule_id)
    base = _vectorised(rulesets[0], options.site)
    swept = [r.by_id[rule_id] for r in rulesets]
    plan = _SweepPlan(rulesets[0], probes=SUBGROUP_FIELDS, site=base.site, variants=swept)
    base = base.with_cohort_plan(plan)
    config = _config(report, options, rulesets[0])
    verdicts = [collections.Counter[str]() for _ in rulesets]
    fired = [0] * len(rulesets)
    rows = rejected = screened = 0
    others: list[Screener] | None = None
    for chunk in chunks:
        use_screener(config, base)
        plan.last = None
        first = screen_chunk(chunk)
        rows, rejected = rows + first.rows, rejected + first.rejected
        table = _records(first)
        screened += table.num_rows
        if not table.num_rows:  # every row rejected: nothing to compare
            continue
        decided = plan.last
        if decided is not None and len(decided.rows) == table.num_rows:
            parts = _decided_values(decided, first, table, rulesets, position)
        else:
            others = others or [_vectorised(r, options.site) for r in rulesets]
            parts = []
            for ruleset, screener in zip(rulesets, others, strict=True):
                use_screener(dataclasses.replace(config, ruleset_sha256=ruleset.sha256), screener)
                parts.append(_screened(screen_chunk(chunk), rule_id))
        for n, part in enumerate(parts):
            verdicts[n].update(part.verdicts)
            fired[n] += part.rule_fired
            if n:
                changes.add(n - 1, parts[n - 1], part)
    report.rows_read, report.rows_screened, report.rows_rejected = rows, screened, rejected
    return [_Totals(v, f) for v, f in zip(verdicts, fired, strict=True)]


def _decided_values(
    decided: CohortDecisions,
    first: ChunkResult,
    table: pa.Table,
    rulesets: Sequence[Ruleset],
    position: int,
) -> list[_Screened]:
    """A chunk whose screened rows the vectorised engine decided, at every value: the swept
    rule's status replaced by its copy's at that value, and the policy asked once per distinct
    row of the other rules' statuses and each status the swept rule can take
    (engine.cohort.row_verdicts on that small table; the copies differ from the first value's
    rules in that rule's condition only, not in its severity or the policy)."""
    assert decided.variants is not None  # noqa: S101  # a _SweepPlan has variants
    statuses, variants = decided.statuses.copy(), decided.variants
    statuses[:, position] = 0
    _, rows, inverse = unique_rows(pack([statuses[:, n] for n in range(statuses.shape[1])], 3))
    grid = np.repeat(statuses[rows], len(STATUSES), axis=0)
    grid[:, position] = np.tile(np.arange(len(STATUSES), dtype=np.int8), len(rows))
    _, _, named, verdict_at = row_verdicts(grid, rulesets[0])
    verdict_of = np.asarray([_CODE[v] for v in named], np.uint8)[verdict_at]
    verdict_of = verdict_of.reshape(len(rows), len(STATUSES))
    found = []
    for n in range(len(rulesets)):
        codes = verdict_of[inverse, variants[:, n]]
        counts = np.bincount(codes, minlength=len(VERDICTS)).tolist()
        found.append(
            _Screened(
                codes,
                _OUTCOME_OF[variants[:, n]],
                table["case_id"],
                collections.Counter({VERDICTS[c]: k for c, k in enumerate(counts) if k}),
                int(np.count_nonzero(variants[:, n] == _FIRED_AT)),
                first.rows,
                first.rejected,
            )
        )
    if not np.array_equal(found[0].codes, _codes(table)):  # the plan is the batch's own
        raise RuntimeError("the sweep's statuses differ from the batch worker's")
    return found
