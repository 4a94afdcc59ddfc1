"""`miss-screen rules sweep`: how a cohort's verdicts move as one constant of one rule moves.

The rule is changed in a copy of the parsed ruleset, in memory: the N-th numeric constant of its
condition (scope first, then `when`, left to right) takes each value of the range, and the
condition is written out and parsed again (engine.rules.condition), so a value the rule language
refuses is refused here too, and the copy's sha256 is re-derived from what it now says: every
point of the report is stamped with the rules that produced it. Nothing on disk changes, and the
other rules (those that read the same field included) keep their own thresholds.

The cohort is read once, through the batch readers and their identifier guard
(engine.batch.run.open_inputs), and its chunks kept; each value's ruleset then screens them in
this process through the batch worker's own path (engine.batch.worker.screen_chunk), with the
engine asked, so a sweep sees exactly what `batch` would. On the durable and reference engines each
value is screened in a process of its own, which ends with it: durable-rules never frees a ruleset
it has built (about 50 MB each, engine/evaluate/durable.py HandleSet), so one process would grow
with every value of a long sweep. The vectorised engine builds none (the few rows it leaves to the
per-row path go to the reference evaluator), so its values are all screened in this process,
without a process start and a durable-rules build per value; and it decides the cohort once, at the
first value, then per value re-evaluates only the swept rule, compiled from its edited condition,
and asks the policy again (_screen_values). Validation comes before evaluation, so every value
rejects the same rows and the screened rows line up value by value: a row's verdict codes are
compared between neighbouring values to count the cases that change.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import math
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa

from engine.batch.run import BatchOptions, all_chunks, open_inputs
from engine.batch.startup import forbid_core_dumps
from engine.batch.worker import OutputFormat, WorkerConfig, screen_chunk, use_screener
from engine.cohort import row_verdicts
from engine.errors import RuleFileError, UsageError
from engine.evaluate.vectorised import STATUSES, CohortPlan
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


def with_constant(
    ruleset: Ruleset, rule: Rule, constant: Constant, value: int | float
) -> Ruleset:
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
    """What changed between two neighbouring values."""

    low: int | float
    high: int | float
    changed: int
    transitions: dict[str, int]  # "from->to": rows
    case_ids: list[str]  # the first ones the identifier guard lets a report show
    ids_withheld: int  # among those first ones, ids not shown (they could identify someone)


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


@dataclass
class _Screened:
    codes: np.ndarray  # one verdict code per screened row, in input order
    case_ids: pa.ChunkedArray
    verdicts: collections.Counter[str]
    rule_fired: int
    rows: int
    rejected: int


def _screen_point(
    chunks: Sequence[Chunk], screener: Screener, config: WorkerConfig, rule_id: str
) -> _Screened:
    """Every chunk screened with one value's rules, in this process, as batch screens it."""
    use_screener(config, screener)
    codes, ids = [], []
    verdicts: collections.Counter[str] = collections.Counter()
    fired = rows = rejected = 0
    for chunk in chunks:
        result = screen_chunk(chunk)
        codes.append(np.fromiter((_CODE[r[1]] for r in result.records), np.uint8))
        ids.append(pa.array([r[0] for r in result.records], pa.string()))
        verdicts.update(result.verdicts)
        fired += result.rule_status[(rule_id, _FIRED)]
        rows += result.rows
        rejected += result.rejected
    return _Screened(
        np.concatenate(codes) if codes else np.zeros(0, np.uint8),
        pa.chunked_array(ids, pa.string()),
        verdicts,
        fired,
        rows,
        rejected,
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


def _step(low: Point, high: Point, before: _Screened, after: _Screened, keep: int) -> Step:
    if len(before.codes) != len(after.codes):  # validation precedes evaluation: cannot differ
        raise RuntimeError("the screened rows differ between two values of a sweep")
    moved = np.flatnonzero(before.codes != after.codes)
    pairs = collections.Counter(
        zip(before.codes[moved].tolist(), after.codes[moved].tolist(), strict=True)
    )
    shown, withheld = [], 0
    for index in moved[:keep].tolist():
        case_id = shown_case_id(after.case_ids[index].as_py())
        if case_id is None:
            withheld += 1
        else:
            shown.append(case_id)
    return Step(
        low.value,
        high.value,
        len(moved),
        {f"{VERDICTS[a]}->{VERDICTS[b]}": n for (a, b), n in sorted(pairs.items())},
        shown,
        withheld,
    )


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
    this process unless `per_process` (the path every other engine takes: a process per value;
    tests hold the two to one another)."""
    rule, constant = pick_constant(ruleset, spec)
    engine = check_engine(options.engine or COHORT_ENGINE)
    rulesets = [with_constant(ruleset, rule, constant, value) for value in values]  # all checked
    readers, ignored = open_inputs(options)
    chunks = list(all_chunks(readers))  # the cohort, read once
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
    previous: tuple[Point, _Screened] | None = None
    if engine == "vectorised" and not per_process:
        config = _config(report, options, rulesets[0])
        every = _screen_values(chunks, rulesets, rule.id, config, options.site)
        for value, swept, screened in zip(values, rulesets, every, strict=True):
            previous = _add_point(report, rule.id, value, swept, screened, previous)
        return report
    points = ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("forkserver"), max_tasks_per_child=1
    )
    with points:
        for value, swept in zip(values, rulesets, strict=True):
            screened = _point_apart(report, rule.id, swept, chunks, options, points)
            previous = _add_point(report, rule.id, value, swept, screened, previous)
    return report


def _config(report: SweepReport, options: BatchOptions, swept: Ruleset) -> WorkerConfig:
    return WorkerConfig(
        rules_dir=options.rules_dir,
        ruleset_sha256=swept.sha256,
        site=options.site,
        output_format=OutputFormat.csv,
        ignored_columns=frozenset(report.ignored_columns),
        in_process=True,
        mapping=options.mapping,
        engine=report.engine,
    )


def _point_apart(
    report: SweepReport,
    rule_id: str,
    swept: Ruleset,
    chunks: Sequence[Chunk],
    options: BatchOptions,
    points: ProcessPoolExecutor,
) -> _Screened:
    """The cohort screened at one value in a fresh process."""
    config = _config(report, options, swept)
    # a fresh copy: what a process computed from `swept` (compiled closures) does not pickle
    fresh = dataclasses.replace(swept)
    task = points.submit(
        _point_in_child, chunks, fresh, report.engine, dict(options.site), config, rule_id
    )
    return task.result()


def _add_point(
    report: SweepReport,
    rule_id: str,
    value: int | float,
    swept: Ruleset,
    screened: _Screened,
    previous: tuple[Point, _Screened] | None,
) -> tuple[Point, _Screened]:
    """Add the cohort screened at one value, and its step from the previous value, to the
    report."""
    moved = swept.by_id[rule_id]
    point = Point(
        value=value,
        condition=(f"{to_text(moved.scope)} / " if moved.scope else "") + to_text(moved.when),
        ruleset_sha256=swept.sha256,
        verdicts={v: screened.verdicts[v] for v in VERDICTS},
        rule_fired=screened.rule_fired,
    )
    report.points.append(point)
    if previous is None:
        report.rows_read, report.rows_rejected = screened.rows, screened.rejected
        report.rows_screened = len(screened.codes)
    else:
        report.steps.append(_step(previous[0], point, previous[1], screened, report.examples))
    return point, screened


# --- the vectorised sweep: the cohort decided once, the swept rule once per value -------------


class _SweepPlan(CohortPlan):
    """The first value's plan, which also keeps, for the chunk it last decided, each decided
    row's statuses and the swept rule's status at every value: the same compiler on the same
    facts (the swept rule reads no derived attribute it changes: screening rules derive none)."""

    def __init__(self, ruleset: Ruleset, swept: Sequence[Rule], site: Mapping[str, Any]) -> None:
        super().__init__(ruleset, probes=SUBGROUP_FIELDS, site=site)
        self.swept = swept
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    def _statuses(self, frame: Any) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        statuses, cache = super()._statuses(frame)
        keep = ~frame.bad
        moved = np.zeros((frame.rows, len(self.swept)), dtype=np.int8)
        for n, rule in enumerate(self.swept):
            moved[:, n] = self._status(rule, frame, {})
        self.last = (statuses[keep], moved[keep])
        return statuses, cache


def _screen_values(
    chunks: Sequence[Chunk],
    rulesets: Sequence[Ruleset],
    rule_id: str,
    config: WorkerConfig,
    site: Mapping[str, Any],
) -> list[_Screened]:
    """Every value's screening, in this process. Each chunk is screened once, at the first
    value, as batch screens it; where the vectorised engine decided every row it screened, the
    other values only change the swept rule's status column and ask the policy again
    (engine.cohort.row_verdicts). A chunk with rows screened one by one (contradictory facts,
    a site profile the compiler leaves to them) is screened again at each value."""
    position = [r.id for r in rulesets[0].rules].index(rule_id)
    base = _vectorised(rulesets[0], site)
    plan = _SweepPlan(rulesets[0], [r.by_id[rule_id] for r in rulesets], base._site)
    base.__dict__["cohort_plan"] = plan  # its cached_property, filled in before any use
    codes: list[list[np.ndarray]] = [[] for _ in rulesets]
    verdicts = [collections.Counter[str]() for _ in rulesets]
    fired = [0] * len(rulesets)
    ids, rows, rejected = [], 0, 0
    others: list[Screener] | None = None
    for chunk in chunks:
        use_screener(config, base)
        plan.last = None
        first = screen_chunk(chunk)
        rows += first.rows
        rejected += first.rejected
        ids.append(pa.array([r[0] for r in first.records], pa.string()))
        if plan.last is not None and len(plan.last[0]) == len(first.records):
            statuses, moved = plan.last
            for n, swept in enumerate(rulesets):
                statuses[:, position] = moved[:, n]
                _, _, named, verdict_at = row_verdicts(statuses, swept)
                found = np.asarray([_CODE[v] for v in named], np.uint8)[verdict_at]
                codes[n].append(found.astype(np.uint8))
                counts = np.bincount(found, minlength=len(VERDICTS)).tolist()
                verdicts[n].update({VERDICTS[c]: k for c, k in enumerate(counts) if k})
                fired[n] += int(np.count_nonzero(moved[:, n] == _FIRED_AT))
            screened = np.fromiter((_CODE[r[1]] for r in first.records), np.uint8)
            if not np.array_equal(codes[0][-1], screened):  # the plan is the batch's own
                raise RuntimeError("the sweep's statuses differ from the batch worker's")
            continue
        others = others or [_vectorised(r, site) for r in rulesets]
        for n, screener in enumerate(others):
            use_screener(dataclasses.replace(config, ruleset_sha256=rulesets[n].sha256), screener)
            result = screen_chunk(chunk)
            codes[n].append(np.fromiter((_CODE[r[1]] for r in result.records), np.uint8))
            verdicts[n].update(result.verdicts)
            fired[n] += result.rule_status[(rule_id, _FIRED)]
    case_ids = pa.chunked_array(ids, pa.string())
    return [
        _Screened(
            np.concatenate(found) if found else np.zeros(0, np.uint8),
            case_ids,
            verdicts[n],
            fired[n],
            rows,
            rejected,
        )
        for n, found in enumerate(codes)
    ]
