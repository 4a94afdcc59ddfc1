"""The batch summary: counts, attrition, missingness, reconciliation and the run stamp.

Written as JSON by `miss-screen batch --summary` and read by the HTML report. Keys follow field
order and are a public contract: extend, never rename.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from html import escape

from pydantic import BaseModel, ConfigDict, Field

from engine.models import Category, RulesetStamp, Severity, Verdict

_MODEL = ConfigDict(extra="forbid")


class InputStamp(BaseModel):
    """One input file: where it came from and its content hash."""

    model_config = _MODEL
    path: str
    format: str
    sha256: str
    rows: int


class MappingStamp(BaseModel):
    """The mapping file (`--map`) every row went through: where it was and its content hash."""

    model_config = _MODEL
    path: str
    sha256: str


class RunStamp(BaseModel):
    """What produced this summary: tool, rules, inputs, when and how long."""

    model_config = _MODEL
    tool_version: str
    ruleset: RulesetStamp
    inputs: list[InputStamp]
    started: str  # ISO 8601, UTC
    duration_s: float
    workers: int
    executor: str
    worker_restarts: int = 0  # pools restarted after a worker process died
    site: dict[str, bool | int | float | str | dict[str, int]] = Field(default_factory=dict)
    mapping: MappingStamp | None = None  # --map FILE; null when the columns were the fields
    worker_stalls: int = 0  # of those restarts, workers killed for making no progress
    run_id: str = ""  # this run's id: the summary, the report and the lock files carry it
    engine: str = "durable"  # --engine (engine.screener.ENGINES); older summaries: durable


class OutputStamp(BaseModel):
    """A file of the run's output set as it was committed (engine/batch/verify.py checks it)."""

    model_config = _MODEL
    option: str  # the batch option that named it: --out, --errors, --detail ids (rules)
    path: str  # relative to the summary's folder
    sha256: str
    bytes: int


class Reconciliation(BaseModel):
    """Every row read is screened or rejected: nothing is lost."""

    model_config = _MODEL
    rows_read: int
    rows_screened: int
    rows_rejected: int
    balanced: bool


class RuleCounts(BaseModel):
    """How often one rule reached each status over the screened rows."""

    model_config = _MODEL
    rule_id: str
    name: str
    category: Category
    severity: Severity
    fired: int = 0
    not_fired: int = 0
    not_applicable: int = 0
    conditional: int = 0
    not_evaluable: int = 0


class AttritionStep(BaseModel):
    """Verdicts in policy order: rows that stop at this verdict and rows that go on."""

    model_config = _MODEL
    verdict: Verdict
    count: int
    remaining: int


class FieldMissingness(BaseModel):
    """How often a field is unknown, and how often it leaves a case insufficient_data."""

    model_config = _MODEL
    field: str
    missing: int
    missing_pct: float
    blocks_verdict: int  # insufficient_data rows where a rule that can change the verdict needs it


class Duplicate(BaseModel):
    """A case_id found more than once: the row of each time, in input order, and the input
    each of those rows is in (its place in stamp.inputs, from 0; a row number counts within
    its input)."""

    model_config = _MODEL
    case_id: str
    rows: list[int]
    inputs: list[int] = []


class SubgroupRow(BaseModel):
    """Verdicts of the screened cases with one value of a subgroup field ("(unknown)": none)."""

    model_config = _MODEL
    value: str
    count: int
    pct: float  # share of screened rows
    verdicts: dict[Verdict, int]
    verdicts_pct: dict[Verdict, float]  # share of this subgroup's rows


class Subgroup(BaseModel):
    """Verdicts broken down by one field (diagnosis, planned_procedure, region)."""

    model_config = _MODEL
    field: str
    rows: list[SubgroupRow]


class RejectedExample(BaseModel):
    """One rejected row, without its values: the field at fault, the row number, the reason."""

    model_config = _MODEL
    field: str | None
    row: int
    reason: str


class NormalisedValues(BaseModel):
    """Values of one field the normaliser read as the dictionary spells them (`M` as male)."""

    model_config = _MODEL
    count: int
    example: str | None = None  # `M → male`; never a case id, never free text


def _pct(count: int, total: int) -> float:
    return round(100 * count / total, 2) if total else 0.0


def subgroup_table(counts: Counter[tuple[str, str, str]], screened: int) -> list[Subgroup]:
    """Subgroups from (field, value, verdict) counts: fields by name, values by
    count (most first), "(unknown)" last."""
    by_field: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for (name, value, verdict), count in sorted(counts.items()):
        by_field[name][value][verdict] += count
    groups = []
    for name, values in by_field.items():
        rows = []
        ordered = sorted(
            values.items(), key=lambda kv: (kv[0] == "(unknown)", -sum(kv[1].values()), kv[0])
        )
        for value, verdicts in ordered:
            total = sum(verdicts.values())
            rows.append(
                SubgroupRow(
                    value=value,
                    count=total,
                    pct=_pct(total, screened),
                    verdicts={v: verdicts[v.value] for v in Verdict},
                    verdicts_pct={v: _pct(verdicts[v.value], total) for v in Verdict},
                )
            )
        groups.append(Subgroup(field=name, rows=rows))
    return groups


class BatchSummary(BaseModel):
    """Everything a researcher needs to trust and describe a batch run."""

    model_config = _MODEL
    stamp: RunStamp
    reconciliation: Reconciliation
    verdicts: dict[Verdict, int]
    rules: list[RuleCounts]
    attrition: list[AttritionStep]
    missingness: list[FieldMissingness]
    rejected_by_field: dict[str, int]
    duplicates: list[Duplicate]
    ignored_columns: list[str]
    disclaimer: str
    # insufficient_data rows whose every verdict-changing question is a site setting
    # (surgeon_mis_cases, navigation_available, mis_equipment_available): --site settles them
    insufficient_only_site: int = 0
    # rows given a verdict other than insufficient_data while cautions are not yet excluded
    # (rules/policy.yaml open_cautions): decided with cautions open, the cautions listed per row
    decided_with_cautions_open: int = 0
    # verdicts by diagnosis, planned procedure and region (inferred values included)
    subgroups: list[Subgroup] = Field(default_factory=list)
    # the first rejected rows: field, row and reason, never the values
    rejected_examples: list[RejectedExample] = Field(default_factory=list)
    # per field, how many values were given in another spelling and read (engine.io.normalise)
    normalised_values: dict[str, NormalisedValues] = Field(default_factory=dict)
    # the run's other files (results, errors, rule texts), hashed as committed; the report,
    # written after the summary, carries stamp.run_id instead
    outputs: list[OutputStamp] = Field(default_factory=list)

    def normalised_lines(self) -> list[str]:
        """`sex: 1,204 values normalised, e.g. M → male`, one line per field."""
        return [
            f"{name}: {entry.count:,} value{'s' if entry.count != 1 else ''} normalised"
            + (f", e.g. {entry.example}" if entry.example else "")
            for name, entry in self.normalised_values.items()
        ]

    def _repr_html_(self) -> str:
        """A short view for Jupyter: rows read, screened and rejected, verdict counts, the
        fields most often rejected and most often blocking a verdict (all escaped)."""
        r = self.reconciliation
        parts = [
            f"<div><b>Batch</b>: {r.rows_read} rows read, {r.rows_screened} screened, "
            f"{r.rows_rejected} rejected ({'balanced' if r.balanced else 'NOT balanced'})"
            f" <small>({escape(self.stamp.ruleset.name)} {escape(self.stamp.ruleset.version)},"
            f" sha256 {escape(self.stamp.ruleset.sha256[:12])})</small>"
        ]
        rows = "".join(
            f"<tr><td>{escape(str(verdict))}</td><td>{count}</td></tr>"
            for verdict, count in self.verdicts.items()
        )
        parts.append(f"<table><tr><th>verdict</th><th>rows</th></tr>{rows}</table>")
        blocking = sorted(
            (m for m in self.missingness if m.blocks_verdict), key=lambda m: -m.blocks_verdict
        )[:5]
        if blocking:
            shown = ", ".join(f"{escape(m.field)} ({m.blocks_verdict})" for m in blocking)
            parts.append(f"<p>Most often keeping a verdict open: {shown}</p>")
        if self.rejected_by_field:
            top = sorted(self.rejected_by_field.items(), key=lambda kv: -kv[1])[:5]
            shown = ", ".join(f"{escape(name)} ({count})" for name, count in top)
            parts.append(f"<p>Rejected rows by field: {shown}</p>")
        return "".join(parts) + "</div>"
