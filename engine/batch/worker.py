"""Screen one chunk of rows in a worker process: validate, screen, flatten, count.

Each worker process builds its ruleset and durable-rules handles once, in `init_worker`
(docs/durable-rules-notes.md §3 and §7); chunks carry only rows. Nothing here writes files: a
ChunkResult goes back to the parent, which writes outputs in input order.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.derive import InconsistentInput
from engine.dictionary import INPUT_FIELDS
from engine.errors import CaseInputError
from engine.evaluate.durable import DurableEvaluator
from engine.io.cases import validate_case
from engine.io.tables import Chunk, RowProblem
from engine.models import RuleStatus, Scalar, Severity, Verdict
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Ruleset
from engine.screen import Screening, screen_values

FAULT_ENV = "MISS_SCREEN_FAULT_CASE_ID"  # test hook: a worker that meets this case_id is killed
STATUSES = list(RuleStatus)
FLAT_COLUMNS = (
    "case_id",
    "verdict",
    "fired_red_flag",
    "fired_major",
    "fired_caution",
    "fired_info",
    "conditional",
    "not_evaluable",
    "missing_fields",
)
BLOCKING = (Severity.red_flag, Severity.major)
CASE_FIELDS = [f for f in INPUT_FIELDS if f != "case_id"]


class OutputFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


@dataclass(frozen=True)
class WorkerConfig:
    rules_dir: str
    site: dict[str, Scalar]
    output_format: OutputFormat
    ignored_columns: frozenset[str]
    in_process: bool = False


@dataclass
class ChunkResult:
    """What one chunk produced: output records, error records and counts to add up."""

    index: int
    source: str = ""
    records: list[Any] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    screened: int = 0
    rejected: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    rule_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    blocks: Counter[str] = field(default_factory=Counter)
    rejected_by_field: Counter[str] = field(default_factory=Counter)
    ids: list[tuple[int, str, int, str]] = field(default_factory=list)  # hash, source, row, id

    def merge(self, other: ChunkResult) -> None:
        self.records += other.records
        self.errors += other.errors
        self.ids += other.ids
        self.rows += other.rows
        self.screened += other.screened
        self.rejected += other.rejected
        for name in ("verdicts", "rule_status", "missing", "blocks", "rejected_by_field"):
            getattr(self, name).update(getattr(other, name))


class _State:
    config: WorkerConfig
    ruleset: Ruleset
    evaluator: DurableEvaluator


_STATE = _State()


def init_worker(config: WorkerConfig) -> None:
    """Build the ruleset and durable-rules handles once per process."""
    _STATE.config = config
    _STATE.ruleset = load_ruleset(config.rules_dir)
    _STATE.evaluator = DurableEvaluator(_STATE.ruleset)


def id_hash(case_id: str) -> int:
    """A stable signed 64-bit hash of a case_id, for finding duplicates without keeping ids."""
    return int.from_bytes(
        hashlib.blake2b(case_id.encode(), digest_size=8).digest(), "big", signed=True
    )


def screen_chunk(chunk: Chunk) -> ChunkResult:
    """Validate and screen every row of a chunk; a bad row becomes error records, never a stop."""
    config, ruleset, evaluator = _STATE.config, _STATE.ruleset, _STATE.evaluator
    fault = None if config.in_process else os.environ.get(FAULT_ENV)
    result = ChunkResult(chunk.index, chunk.source, rows=len(chunk.rows))
    for number, row in chunk.rows:
        if isinstance(row, RowProblem):
            reject(result, chunk.source, number, None, [(None, None, row.reason)])
            continue
        raw = {k: v for k, v in row.items() if k not in config.ignored_columns}
        case_id = raw.get("case_id") if isinstance(raw.get("case_id"), str) else None
        if case_id:
            result.ids.append((id_hash(case_id), chunk.source, number, case_id))
            if fault is not None and case_id == fault:
                os.kill(os.getpid(), signal.SIGKILL)
        try:
            valid_id, values = validate_case(raw, chunk.source, row=number)
            screening = screen_values(
                valid_id, values, ruleset, evaluator, site=config.site, source=chunk.source
            )
        except CaseInputError as exc:
            problems = [(p.field, _plain(p.value), p.message) for p in exc.problems]
            reject(result, chunk.source, number, case_id, problems)
            continue
        except InconsistentInput as exc:  # pragma: no cover - screen_values wraps it
            reject(result, chunk.source, number, case_id, [(exc.problem.field, None, str(exc))])
            continue
        record(result, screening, values, config.output_format)
    return result


def reject(
    result: ChunkResult,
    source: str,
    row: int,
    case_id: str | None,
    problems: list[tuple[str | None, Any, str]],
) -> None:
    """Count a rejected row and keep one error record per problem."""
    result.rejected += 1
    for field_name, value, reason in problems:
        result.errors.append(
            {
                "source": source,
                "row": row,
                "case_id": case_id,
                "field": field_name,
                "value": value,
                "reason": reason,
            }
        )
        result.rejected_by_field[field_name or "(row)"] += 1


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def record(
    result: ChunkResult, screening: Screening, values: dict[str, Scalar], fmt: OutputFormat
) -> None:
    """Add one screened case's output record and counts."""
    res = screening.result
    result.screened += 1
    result.verdicts[res.verdict.value] += 1
    for outcome in screening.outcomes:
        result.rule_status[(outcome.rule_id, outcome.status.value)] += 1
    for name in CASE_FIELDS:
        if name not in values:
            result.missing[name] += 1
    if res.verdict is Verdict.insufficient_data:
        blocking = {m for n in res.not_evaluable if n.severity in BLOCKING for m in n.missing}
        result.blocks.update(blocking)
    if fmt is OutputFormat.jsonl:
        result.records.append(res.model_dump_json())
    else:
        result.records.append(flatten(screening))


def flatten(screening: Screening) -> tuple[str, ...]:
    """The CSV/Parquet row of a result (columns: FLAT_COLUMNS)."""
    res = screening.result
    by_severity: dict[str, list[str]] = {s.value: [] for s in Severity}
    for finding in res.findings:
        by_severity[finding.severity.value].append(finding.rule_id)
    missing = sorted({m for n in res.not_evaluable for m in n.missing})
    return (
        res.case_id,
        res.verdict.value,
        ";".join(by_severity["red_flag"]),
        ";".join(by_severity["major"]),
        ";".join(by_severity["caution"]),
        ";".join(by_severity["info"]),
        ";".join(c.rule_id for c in res.conditional),
        ";".join(n.rule_id for n in res.not_evaluable),
        ";".join(missing),
    )
