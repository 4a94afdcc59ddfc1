"""How the tool's verdicts agree with surgeons': `miss-screen agree --labels FILE [--cohort FILE]`.

The labels file (CSV) has `case_id` and one column per rater, each cell a verdict
(worth_discussing, discuss_with_caution, not_favoured, urgent_review) or yes/no for "MIS worth
discussing". Columns named like data-dictionary fields are case fields, not raters: without
--cohort, the labels file itself is the cohort. The cases are screened with the batch machinery,
and the labels file is read as a batch input is (engine.io.tables, the identifier guard of
engine.io.columns): a column flagged as an identifier is refused, never taken as a rater.

What a researcher gets, and how each case is counted:
- a case the tool rates insufficient_data has no tool decision to compare: it is counted apart
  and named, and left out of every statistic (never silently);
- a blank label is refused (one line naming rater and case) unless `allow_missing`, which
  counts and names it and leaves only that rater's cell out;
- a case_id of the labels the cohort does not have, or has twice, is refused (one line naming it);
- "MIS worth discussing" is positive for worth_discussing and discuss_with_caution; surgeons'
  labels are the reference, the tool is the index test for sensitivity and specificity.
"""

from __future__ import annotations

import collections
import json
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.inter_rater import aggregate_raters, cohens_kappa, fleiss_kappa

from engine.batch.run import BatchOptions, run_batch
from engine.batch.summary import BatchSummary
from engine.batch.worker import OutputFormat
from engine.dictionary import INPUT_FIELDS
from engine.errors import LinesError, ProblemLines, UsageError
from engine.io.columns import column_problems
from engine.io.deid import (
    case_id_identifier_kinds,
    escape_text,
    kind_words,
    showable,
    withheld_reason,
)
from engine.io.tables import InputFormat, Row, RowProblem, TableReader, detect_format
from engine.mapping import ColumnMapping
from engine.models import SiteProfile, Verdict
from engine.rules.ruleset import Ruleset
from engine.screener import COHORT_ENGINE

POSITIVE = frozenset({Verdict.worth_discussing.value, Verdict.discuss_with_caution.value})
DECISIONS = [v.value for v in Verdict if v is not Verdict.insufficient_data]
YES = frozenset({"yes", "y", "true", "1"})
NO = frozenset({"no", "n", "false", "0"})
BOOTSTRAP_RESAMPLES = 2000
UNDEFINED_NOTE = (
    "a statistic is undefined for these labels (one answer given by every rater or by the tool, "
    "or too few cases): it is shown as n/a"
)
# the severities whose findings decide each verdict (rules/policy.yaml)
DECIDING = {
    Verdict.urgent_review.value: ("fired", "red_flag"),
    Verdict.not_favoured.value: ("fired", "major"),
    Verdict.discuss_with_caution.value: ("fired", "caution"),
}


class LabelsError(LinesError, UsageError):
    """A labels file that cannot be compared as given; every problem on its own line."""


@dataclass
class Labels:
    raters: list[str]
    # case_id -> rater -> label as given (a decision verdict, or "yes"/"no"); blanks left out
    by_case: dict[str, dict[str, str]]
    missing: list[tuple[str, str]]  # (case_id, rater) with a blank label
    kind: dict[str, str]  # rater -> "verdict" or "yes_no"
    case_fields: list[str]


MAX_LABELLED_ROWS = 100_000  # a labels file is read into memory: beyond this, split it
_LABEL_SHAPE = re.compile(r"[a-z][a-z_]{0,31}")


def _shown_label(given: str) -> str:
    """A label as an error shows it: a word near the vocabulary ('maybe', 'worth_discusing'),
    never a name, a number, a date or an address (withheld, with its kind when known)."""
    if _LABEL_SHAPE.fullmatch(given) and showable(given, [*DECISIONS, "yes", "no"]):
        return repr(given)
    return f"the label given ({withheld_reason(given)})"


def read_labels(path: str, allow_columns: frozenset[str] = frozenset()) -> Labels:
    """Read and check a labels file through the batch's guarded reader: identifier columns
    (patient_name, dob, email) and identifier-shaped values are refused before any row is
    read, no value that could identify is echoed, and errors are capped with a count."""
    try:
        fmt = detect_format(path)
    except UsageError:  # labels were always CSV: any other extension is read as CSV
        fmt = InputFormat.csv
    reader = TableReader(path, fmt)
    header = reader.columns
    problems, _ = column_problems(
        reader.source, header, reader.sample(), allow_columns, ignore_unknown=True
    )
    if problems:
        raise LabelsError(problems)
    case_fields = [c for c in header if c in INPUT_FIELDS and c != "case_id"]
    raters = [c for c in header if c not in INPUT_FIELDS]
    if not raters:
        raise LabelsError([f"{path}: no rater column (every column is a case field)"])
    found = ProblemLines()
    by_case: dict[str, dict[str, str]] = {}
    missing: list[tuple[str, str]] = []
    kinds: dict[str, set[str]] = collections.defaultdict(set)
    for chunk in reader.chunks(0):
        for number, row in chunk.rows:
            if number > MAX_LABELLED_ROWS:
                raise LabelsError(
                    [
                        f"{path}: more than {MAX_LABELLED_ROWS:,} rows; agree compares at most "
                        f"{MAX_LABELLED_ROWS:,} labelled cases at once (split the file)"
                    ]
                )
            case_id = _labelled_case(path, number, row, by_case, found)
            if case_id is None:
                continue
            assert isinstance(row, dict)  # noqa: S101  # _labelled_case refused a RowProblem
            labels: dict[str, str] = {}
            for rater in raters:
                value = row.get(rater)
                given = "" if value is None else str(value).strip().lower()
                if not given:
                    missing.append((case_id, rater))
                elif given in YES or given in NO:
                    labels[rater] = "yes" if given in YES else "no"
                    kinds[rater].add("yes_no")
                elif given in DECISIONS:
                    labels[rater] = given
                    kinds[rater].add("verdict")
                else:
                    found.add(
                        f"{path}: row {number} (case_id {escape_text(case_id)}): rater {rater}: "
                        f"{_shown_label(given)} is not a label (one of {', '.join(DECISIONS)}, "
                        "or yes/no)"
                    )
            by_case[case_id] = labels
    for rater, seen in kinds.items():
        if len(seen) > 1:
            found.add(f"{path}: rater {rater} mixes verdicts and yes/no; use one or the other")
    if found:
        raise LabelsError(found.lines())
    kind = {r: next(iter(kinds[r])) if kinds[r] else "yes_no" for r in raters}
    return Labels(raters, by_case, missing, kind, case_fields)


def _labelled_case(
    path: str, number: int, row: Row, by_case: dict[str, dict[str, str]], found: ProblemLines
) -> str | None:
    """The row's case_id, or None with the problem added: an unreadable row, a blank id, an id
    shaped like a date or a phone number (withheld), or one labelled twice."""
    if isinstance(row, RowProblem):
        found.add(f"{path}: row {number}: {row.reason}")
        return None
    case_id = str(row.get("case_id") or "").strip()
    if not case_id:
        found.add(f"{path}: row {number}: case_id is blank")
        return None
    kinds = case_id_identifier_kinds(case_id[:4096])
    if kinds:
        found.add(
            f"{path}: row {number}: case_id looks like {kind_words(kinds)}, not an anonymised "
            "id (value withheld); use a study code such as S-0193"
        )
        return None
    shown = escape_text(case_id)
    if case_id in by_case:
        found.add(f"{path}: row {number}: case_id {shown} is labelled twice")
        return None
    return case_id


@dataclass
class ToolCase:
    verdict: str
    deciding: list[str]  # the rules that decided the verdict


def _deciding(result: dict[str, Any]) -> list[str]:
    verdict = result["verdict"]
    if verdict == Verdict.insufficient_data.value:
        return [n["rule_id"] for n in result["not_evaluable"] if n["can_change_verdict"]]
    if verdict in DECIDING:
        _, severity = DECIDING[verdict]
        return [f["rule_id"] for f in result["findings"] if f["severity"] == severity]
    # worth_discussing: no red-flag, major or caution finding; benefit findings say why
    return [f["rule_id"] for f in result["findings"]]


def screen_cohort(
    cohort: str,
    ruleset: Ruleset,
    rules_dir: str,
    site: SiteProfile,
    workers: int,
    *,
    rater_columns: bool = False,
    mapping: ColumnMapping | None = None,
    allow_columns: frozenset[str] = frozenset(),
    engine: str = COHORT_ENGINE,
) -> tuple[dict[str, list[ToolCase]], BatchSummary, list[dict[str, Any]]]:
    """Every screened case's verdict and deciding rules (a case_id may occur twice), the batch
    summary, and the rejected rows' errors."""
    with tempfile.TemporaryDirectory(prefix="miss-screen-agree-") as work:
        out, errors = Path(work) / "results.jsonl", Path(work) / "errors.jsonl"
        options = BatchOptions(
            inputs=[cohort],
            out=str(out),
            output_format=OutputFormat.jsonl,
            rules_dir=rules_dir,
            errors=str(errors),
            workers=workers,
            site=site,
            ignore_unknown_columns=rater_columns,  # the labels file is the cohort
            mapping=mapping,
            allow_columns=allow_columns,
            engine=engine,
        )
        summary = run_batch(options, ruleset)
        found: dict[str, list[ToolCase]] = collections.defaultdict(list)
        with out.open(encoding="utf-8") as handle:
            for line in handle:
                result = json.loads(line)
                found[result["case_id"]].append(ToolCase(result["verdict"], _deciding(result)))
        rejected = []
        if errors.exists():
            with errors.open(encoding="utf-8") as handle:
                rejected = [json.loads(line) for line in handle]
    return found, summary, rejected


def _kappa(table: np.ndarray) -> dict[str, Any]:
    """Cohen's kappa of a square table with statsmodels' asymptotic 95 % interval."""
    if table.sum() == 0:
        return {"kappa": None, "ci95": None, "n": 0}
    with np.errstate(invalid="ignore", divide="ignore"):  # a degenerate table: z is nan
        result = cohens_kappa(table)
    kappa = float(result.kappa)
    ci = [max(-1.0, float(result.kappa_low)), min(1.0, float(result.kappa_upp))]  # kappa's range
    return {
        "kappa": round(kappa, 4) if np.isfinite(kappa) else None,
        "ci95": [round(c, 4) for c in ci] if all(np.isfinite(ci)) else None,
        "n": int(table.sum()),
    }


def _proportion_ci(hits: np.ndarray, seed: int) -> dict[str, Any]:
    """A proportion with a seeded percentile bootstrap 95 % interval (scipy.stats.bootstrap)."""
    if hits.size == 0:
        return {"value": None, "ci95": None, "n": 0}
    value = float(hits.mean())
    if hits.min() == hits.max():  # every resample gives the same value
        ci = [value, value]
    else:
        boot = stats.bootstrap(
            (hits,),
            np.mean,
            n_resamples=BOOTSTRAP_RESAMPLES,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        ci = [float(boot.confidence_interval.low), float(boot.confidence_interval.high)]
    return {"value": round(value, 4), "ci95": [round(c, 4) for c in ci], "n": int(hits.size)}


@dataclass
class AgreementReport:
    labels: str
    cohort: str
    raters: list[str]
    kinds: dict[str, str]
    summary: BatchSummary
    seed: int
    compared: list[str] = field(default_factory=list)  # case_ids in every statistic's pool
    insufficient: list[dict[str, Any]] = field(default_factory=list)
    missing_labels: list[dict[str, str]] = field(default_factory=list)
    per_rater: dict[str, dict[str, Any]] = field(default_factory=dict)
    fleiss: dict[str, Any] = field(default_factory=dict)
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # library warnings, in our words, once each

    def as_json(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "cohort": self.cohort,
            "ruleset": self.summary.stamp.ruleset.model_dump(),
            "engine": self.summary.stamp.engine,
            "cohort_reconciliation": self.summary.reconciliation.model_dump(),
            "raters": self.raters,
            "rater_labels": self.kinds,
            "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": self.seed},
            "cases_labelled": len(self.compared) + len(self.insufficient),
            "cases_compared": len(self.compared),
            "tool_insufficient_data": self.insufficient,
            "missing_labels": self.missing_labels,
            "per_rater": self.per_rater,
            "fleiss_kappa": self.fleiss,
            "disagreements": self.disagreements,
            "notes": self.notes,
        }


def agreement(
    labels_path: str,
    ruleset: Ruleset,
    rules_dir: str,
    *,
    cohort: str | None = None,
    site: SiteProfile | None = None,
    workers: int = 1,
    allow_missing: bool = False,
    seed: int = 2026,
    mapping: ColumnMapping | None = None,
    allow_columns: frozenset[str] = frozenset(),
    engine: str = COHORT_ENGINE,
) -> AgreementReport:
    labels = read_labels(labels_path, allow_columns)
    if cohort is None and not labels.case_fields:
        raise LabelsError([f"{labels_path} has no case fields: give the cases with --cohort FILE"])
    if labels.missing and not allow_missing:
        blanks = [f"case_id {escape_text(c)}: rater {r}" for c, r in labels.missing[:20]]
        more = len(labels.missing) - len(blanks)
        raise LabelsError(
            [
                f"{labels_path}: {len(labels.missing):,} labels are blank ({'; '.join(blanks)}"
                + (f"; and {more:,} more" if more else "")
                + "); fill them, or give --allow-missing to count them and leave them out"
            ]
        )
    source = cohort or labels_path
    tool, summary, rejected = screen_cohort(
        source,
        ruleset,
        rules_dir,
        site or {},
        workers,
        rater_columns=cohort is None,
        mapping=mapping,
        allow_columns=allow_columns,
        engine=engine,
    )
    problems = ProblemLines()
    rejected_ids = {e["case_id"] for e in rejected if e.get("case_id")}
    for case_id in labels.by_case:
        found = tool.get(case_id, [])
        shown = escape_text(case_id)  # read_labels refused ids shaped like identifiers
        if len(found) > 1:
            problems.add(f"case_id {shown} occurs {len(found)} times in {source}")
        elif not found and case_id in rejected_ids:
            problems.add(
                f"case_id {shown} is a row of {source} that was rejected (see why "
                "with miss-screen batch)"
            )
        elif not found:
            problems.add(f"case_id {shown} of {labels_path} is not in {source}")
    if problems:
        raise LabelsError(problems.lines())
    report = AgreementReport(labels_path, source, labels.raters, labels.kind, summary, seed)
    report.missing_labels = [{"case_id": c, "rater": r} for c, r in labels.missing]
    for case_id in labels.by_case:
        (case,) = tool[case_id]
        if case.verdict == Verdict.insufficient_data.value:
            report.insufficient.append({"case_id": case_id, "deciding_rules": case.deciding})
        else:
            report.compared.append(case_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _statistics(report, labels, tool)
    report.notes = _notes(caught)
    return report


def _notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """What statsmodels, scipy or numpy warned about while computing, each kind said once in
    our words (their text names their internals, and repeats for every rater)."""
    notes: dict[str, None] = {}
    for warning in caught:
        if issubclass(warning.category, RuntimeWarning):
            notes[UNDEFINED_NOTE] = None
        else:
            notes[
                f"the statistics library warned ({warning.category.__name__}); the figures it "
                "concerns may be unreliable"
            ] = None
    return list(notes)


def _positive(label: str) -> bool:
    return label == "yes" or label in POSITIVE


def _statistics(report: AgreementReport, labels: Labels, tool: dict[str, list[ToolCase]]) -> None:
    binary = ["no", "yes"]
    for index, rater in enumerate(labels.raters):
        pairs = [
            (tool[c][0].verdict, labels.by_case[c][rater])
            for c in report.compared
            if rater in labels.by_case[c]
        ]
        tool_yes = np.array([v in POSITIVE for v, _ in pairs], dtype=float)
        rater_yes = np.array([_positive(lab) for _, lab in pairs], dtype=bool)
        table = np.zeros((2, 2), dtype=int)  # rows: rater no/yes; columns: tool no/yes
        for t, r in zip(tool_yes, rater_yes, strict=True):
            table[int(r), int(t)] += 1
        entry: dict[str, Any] = {
            "label": labels.kind[rater],
            "n": len(pairs),
            "worth_discussing": {
                "confusion": {
                    "labels": binary,
                    "rows_rater_columns_tool": table.tolist(),
                },
                "cohen_kappa": _kappa(table),
                "sensitivity": _proportion_ci(tool_yes[rater_yes], report.seed + 2 * index),
                "specificity": _proportion_ci(
                    1 - tool_yes[~rater_yes], report.seed + 2 * index + 1
                ),
            },
        }
        if labels.kind[rater] == "verdict":
            order = {v: i for i, v in enumerate(DECISIONS)}
            full = np.zeros((len(DECISIONS), len(DECISIONS)), dtype=int)
            for verdict, label in pairs:
                full[order[label], order[verdict]] += 1
            entry["verdict"] = {
                "confusion": {"labels": DECISIONS, "rows_rater_columns_tool": full.tolist()},
                "cohen_kappa": _kappa(full),
            }
        report.per_rater[rater] = entry
    # Fleiss' kappa across raters, on "MIS worth discussing", over cases every rater labelled
    rated = [c for c in report.compared if len(labels.by_case[c]) == len(labels.raters)]
    if len(labels.raters) >= 2 and rated:
        matrix = np.array(
            [[int(_positive(labels.by_case[c][r])) for r in labels.raters] for c in rated]
        )
        counts, _ = aggregate_raters(matrix, n_cat=2)
        value = float(fleiss_kappa(counts, method="fleiss"))
        report.fleiss = {
            "worth_discussing": round(value, 4) if np.isfinite(value) else None,
            "n": len(rated),
            "raters": len(labels.raters),
        }
    else:
        report.fleiss = {"worth_discussing": None, "n": len(rated), "raters": len(labels.raters)}
    for case_id in report.compared:
        case = tool[case_id][0]
        given = labels.by_case[case_id]
        against = {
            r: lab for r, lab in given.items() if _positive(lab) != (case.verdict in POSITIVE)
        }
        if against:
            report.disagreements.append(
                {
                    "case_id": case_id,
                    "tool": case.verdict,
                    "raters": against,
                    "deciding_rules": case.deciding,
                }
            )
