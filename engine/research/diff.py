"""What a rule change does to a cohort: `miss-screen rules diff OLD NEW --cohort FILE`.

The cohort is screened twice with the batch machinery (engine.batch.run.run_batch: streaming,
workers, exact reconciliation), once per rule set, to flattened CSV outputs in a temp folder. The
two outputs list the screened rows in input order; the errors files name the rejected rows, so
each output line is matched to its input row number and the two runs are compared row by row
with flat memory. Nothing here screens a case itself.
"""

from __future__ import annotations

import collections
import csv
import difflib
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.batch.run import BatchOptions, run_batch
from engine.batch.summary import BatchSummary
from engine.batch.worker import FLAT_COLUMNS, OutputFormat
from engine.batch.writers import FORMULA_START, AtomicPath
from engine.errors import UsageError
from engine.io.deid import escape_text
from engine.mapping import ColumnMapping
from engine.models import SiteProfile, Verdict
from engine.rules.condition import to_text
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Rule, Ruleset
from engine.screener import COHORT_ENGINE

STATUS_COLUMNS = {
    "fired_red_flag": "fired",
    "fired_major": "fired",
    "fired_caution": "fired",
    "fired_info": "fired",
    "conditional": "conditional",
    "not_evaluable": "not_evaluable",
}
QUIET = "not_fired_or_not_applicable"  # the flattened output does not tell these two apart
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_TOKEN = re.compile(r'"[^"]*"|[()]|[^\s()]+')
# what obliges a rule's author to bump its `version` (docs/style: when, scope, severity, threshold)
VERSIONED_ASPECTS = ("condition", "scope", "severity", "thresholds")


class RulesSource:
    """A rules directory, or a git revision of one (`HEAD~1:rules`) extracted to a temp folder."""

    def __init__(self, spec: str, repo: Path | None = None) -> None:
        self.spec = spec
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        given = Path(spec)
        if given.is_dir():
            self.path = given
            return
        if ":" not in spec:
            raise UsageError(f"{spec}: not a rules folder, nor a git revision such as HEAD~1:rules")
        git = shutil.which("git")
        if git is None:
            raise UsageError(f"{spec}: git is not installed, so a revision cannot be read")
        self._temp = tempfile.TemporaryDirectory(prefix="miss-screen-rules-")
        try:
            self.path = _extract_revision(git, spec, Path(self._temp.name), repo or Path.cwd())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._temp is not None:
            self._temp.cleanup()


def _extract_revision(git: str, spec: str, work: Path, repo: Path) -> Path:
    """The rules folder of a git revision (`HEAD~1:rules`), unpacked under `work`.

    The revision follows `--`, so one spelt like an option (`--output=FILE`) is only ever a
    revision; a link leaving the folder, or an archive tarfile cannot read, is one error line.
    """
    archive = work / "rules.tar"
    done = subprocess.run(  # noqa: S603  # fixed program, the revision as one argument after --
        [git, "archive", "--format=tar", f"--output={archive}", "--", spec],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["git archive failed"])[-1]
        raise UsageError(f"{spec}: cannot read this git revision ({escape_text(reason, 200)})")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(work / "rules", filter="data")
    except tarfile.FilterError as exc:
        name = escape_text(exc.tarinfo.name, 200)
        raise UsageError(
            f"{spec}: {name} is a link leading outside the rules folder; not read"
        ) from None
    except (tarfile.TarError, OSError) as exc:
        reason = type(exc).__name__
        raise UsageError(f"{spec}: cannot unpack this git revision ({reason})") from None
    archive.unlink()
    return work / "rules"


@dataclass(frozen=True)
class RuleChange:
    """One rule that differs between the two sets: what changed, old and new canonical text."""

    rule_id: str
    change: str  # added, removed, changed
    aspects: list[str]  # condition, scope, severity, category, thresholds
    old: dict[str, str]
    new: dict[str, str]
    diff: dict[str, str]  # per changed text: a word diff, [-old-]{+new+}
    thresholds: dict[str, list[str]]  # numbers in the condition and scope, old and new
    versions: dict[str, str] = field(default_factory=dict)  # old and new `version:`

    @property
    def version_not_bumped(self) -> list[str]:
        """The aspects that oblige a new `version` (the style guide: when, scope, severity or a
        threshold) which changed while the version stayed the same; empty when none did."""
        if self.change != "changed" or self.versions["old"] != self.versions["new"]:
            return []
        return [a for a in self.aspects if a in VERSIONED_ASPECTS]

    def version_warning(self) -> str | None:
        """The one line `rules diff` prints (stderr, report) for a rule edited without a bump."""
        aspects = self.version_not_bumped
        if not aspects:
            return None
        return (
            f"{self.rule_id}: {', '.join(aspects)} changed but its version is still "
            f"{self.versions['new']}; bump the version when a rule's logic changes"
        )


def _rule_text(rule: Rule) -> dict[str, str]:
    return {
        "condition": to_text(rule.when),
        "scope": to_text(rule.scope) if rule.scope else "",
        "severity": rule.meta.severity.value,
        "category": rule.meta.category.value,
    }


def word_diff(old: str, new: str) -> str:
    """A one-line word diff: unchanged words as they are, [-removed-] and {+added+}."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.extend(a[i1:i2])
            continue
        if i2 > i1:
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return re.sub(r"\( | \)", lambda m: m.group().strip(), " ".join(out))


def rule_changes(old: Ruleset, new: Ruleset) -> list[RuleChange]:
    """Rules added, removed or changed (condition, scope, severity, category, thresholds)."""
    changes: list[RuleChange] = []
    for rule_id in sorted(set(old.by_id) | set(new.by_id)):
        before = _rule_text(old.by_id[rule_id]) if rule_id in old.by_id else {}
        after = _rule_text(new.by_id[rule_id]) if rule_id in new.by_id else {}
        if not before or not after:
            kind = "added" if after else "removed"
            changes.append(RuleChange(rule_id, kind, [], before, after, {}, {}))
            continue
        aspects = [k for k in before if before[k] != after[k]]
        if not aspects:
            continue
        logic = before["scope"] + " " + before["condition"]
        logic_new = after["scope"] + " " + after["condition"]
        numbers = {"old": _NUMBER.findall(logic), "new": _NUMBER.findall(logic_new)}
        if numbers["old"] != numbers["new"]:
            aspects.append("thresholds")
        diffs: dict[str, str] = {
            k: word_diff(before[k], after[k]) for k in ("condition", "scope") if k in aspects
        }
        changes.append(
            RuleChange(
                rule_id,
                "changed",
                aspects,
                before,
                after,
                diffs,
                numbers if "thresholds" in aspects else {},
                {"old": old.by_id[rule_id].meta.version, "new": new.by_id[rule_id].meta.version},
            )
        )
    return changes


def definition_changes(old: Ruleset, new: Ruleset) -> list[str]:
    """Derived attributes, constraints and the verdict policy that differ (they move verdicts
    as surely as a rule does)."""
    found: list[str] = []
    skip = {"rationale", "notes", "sources", "cases", "evidence", "aliases"}

    def logic(models: dict[str, Any]) -> dict[str, str]:
        return {
            key: json.dumps(m.model_dump(mode="json", exclude=skip), sort_keys=True)
            for key, m in models.items()
        }

    for kind, a, b in (
        (
            "derived",
            logic({d.meta.id: d.meta for d in old.derived}),
            logic({d.meta.id: d.meta for d in new.derived}),
        ),
        (
            "constraint",
            logic({c.id: c.meta for c in old.constraints}),
            logic({c.id: c.meta for c in new.constraints}),
        ),
    ):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                found.append(f"{kind} {key} added")
            elif key not in b:
                found.append(f"{kind} {key} removed")
            elif a[key] != b[key]:
                found.append(f"{kind} {key} changed")
    if old.policy.model_dump(mode="json") != new.policy.model_dump(mode="json"):
        found.append("policy (policy.yaml) changed")
    return found


@dataclass
class RuleCount:
    rule_id: str
    old_fired: int | None
    new_fired: int | None
    old_not_evaluable: int | None
    new_not_evaluable: int | None


@dataclass
class DiffReport:
    """Everything `rules diff` reports; `as_json` is its JSON output."""

    cohort: str
    cohort_sha256: str
    old_spec: str
    new_spec: str
    old_summary: BatchSummary
    new_summary: BatchSummary
    rules: list[RuleChange]
    definitions: list[str]
    transitions: dict[str, dict[str, int]] = field(default_factory=dict)
    changed: int = 0  # rows whose verdict changed
    outcome_changed: int = 0  # rows where any rule's outcome changed
    compared: int = 0  # rows screened by both
    rejected_by_one: list[dict[str, Any]] = field(default_factory=list)  # the first ones
    rejected_by_one_count: int = 0  # all of them (a cohort may have millions)
    changes_file: str | None = None
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def version_warnings(self) -> list[str]:
        """A line per rule whose logic changed while its `version` did not."""
        return [w for c in self.rules if (w := c.version_warning()) is not None]

    @property
    def share_changed(self) -> float:
        return round(100 * self.changed / self.compared, 2) if self.compared else 0.0

    def rule_counts(self) -> list[RuleCount]:
        old = {r.rule_id: r for r in self.old_summary.rules}
        new = {r.rule_id: r for r in self.new_summary.rules}
        rows = []
        for rule_id in sorted(set(old) | set(new)):
            a, b = old.get(rule_id), new.get(rule_id)
            rows.append(
                RuleCount(
                    rule_id,
                    a.fired if a else None,
                    b.fired if b else None,
                    a.not_evaluable if a else None,
                    b.not_evaluable if b else None,
                )
            )
        return rows

    def as_json(self) -> dict[str, Any]:
        def run(spec: str, summary: BatchSummary) -> dict[str, Any]:
            rec = summary.reconciliation
            return {
                "rules": spec,
                "ruleset": summary.stamp.ruleset.model_dump(),
                "engine": summary.stamp.engine,
                "reconciliation": rec.model_dump(),
                "verdicts": {v.value: n for v, n in summary.verdicts.items()},
            }

        return {
            "cohort": {"path": self.cohort, "sha256": self.cohort_sha256},
            "old": run(self.old_spec, self.old_summary),
            "new": run(self.new_spec, self.new_summary),
            "rule_changes": [c.__dict__ for c in self.rules],
            "definition_changes": self.definitions,
            "version_not_bumped": [
                {"rule_id": c.rule_id, "version": c.versions["new"], "aspects": aspects}
                for c in self.rules
                if (aspects := c.version_not_bumped)
            ],
            "compared_rows": self.compared,
            "verdict_changed": self.changed,
            "verdict_changed_pct": self.share_changed,
            "rule_outcome_changed": self.outcome_changed,
            "transitions": self.transitions,
            "rejected_by_one": self.rejected_by_one,
            "rejected_by_one_count": self.rejected_by_one_count,
            "rule_counts": [c.__dict__ for c in self.rule_counts()],
            "changes_file": self.changes_file,
            "changed_examples": self.examples,
        }


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rejections(errors_path: Path) -> Iterator[tuple[int, str]]:
    """Each rejected row with its first reason, in row order (the errors file has one line per
    problem, in input order), read as the outputs are: memory stays flat for any cohort."""
    if not errors_path.exists():
        return
    with errors_path.open(encoding="utf-8") as handle:
        last = 0
        for line in handle:
            error = json.loads(line)
            row = int(error["row"])
            if row == last:
                continue
            where = f"{error['field']}: " if error.get("field") else ""
            last = row
            yield row, where + str(error["reason"])


def _numbered(
    output: Path, errors: Path, rows_read: int
) -> Iterator[tuple[int, dict[str, str] | None, str]]:
    """Every input row number with its flattened output row, or None and the reason where it
    was rejected."""
    rejected = _rejections(errors)
    pending = next(rejected, None)
    with output.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for number in range(1, rows_read + 1):
            if pending is not None and pending[0] == number:
                yield number, None, pending[1]
                pending = next(rejected, None)
            else:
                yield number, next(reader), ""


def outcomes(row: dict[str, str]) -> dict[str, str]:
    """The notable outcome of every rule listed in a flattened output row."""
    found: dict[str, str] = {}
    for column, status in STATUS_COLUMNS.items():
        for rule_id in filter(None, row[column].split(";")):
            found[rule_id] = status
    return found


CHANGE_COLUMNS = (
    "row",
    "case_id",
    "old_verdict",
    "new_verdict",
    "verdict_changed",
    "rules_responsible",
    "outcome_changes",
)


def diff_cohort(
    old_spec: str,
    new_spec: str,
    cohort: str,
    *,
    site: SiteProfile | None = None,
    workers: int = 1,
    changes_out: str | None = None,
    all_outcome_changes: bool = False,
    repo: Path | None = None,
    examples: int = 20,
    mapping: ColumnMapping | None = None,
    engine: str = COHORT_ENGINE,
) -> DiffReport:
    """Screen `cohort` with both rule sets and compare them row by row, both with `engine`.

    `changes_out` (CSV, or JSONL by its extension) gets one line per row whose verdict changed,
    or, with `all_outcome_changes`, per row where any rule's outcome changed.
    """
    if cohort == "-":
        raise UsageError("rules diff reads the cohort twice: give a file, not -")
    old_src = RulesSource(old_spec, repo)
    try:
        new_src = RulesSource(new_spec, repo)
    except BaseException:
        old_src.close()
        raise
    try:
        old_rules, new_rules = load_ruleset(old_src.path), load_ruleset(new_src.path)
        with tempfile.TemporaryDirectory(prefix="miss-screen-diff-") as work:
            summaries = []
            for name, src, rules in (("old", old_src, old_rules), ("new", new_src, new_rules)):
                options = BatchOptions(
                    inputs=[cohort],
                    out=str(Path(work) / f"{name}.csv"),
                    output_format=OutputFormat.csv,
                    rules_dir=str(src.path),
                    errors=str(Path(work) / f"{name}.errors.jsonl"),
                    workers=workers,
                    site=site or {},
                    mapping=mapping,
                    engine=engine,
                )
                summaries.append(run_batch(options, rules))
            report = DiffReport(
                cohort=cohort,
                cohort_sha256=_sha256(cohort),
                old_spec=old_spec,
                new_spec=new_spec,
                old_summary=summaries[0],
                new_summary=summaries[1],
                rules=rule_changes(old_rules, new_rules),
                definitions=definition_changes(old_rules, new_rules),
                changes_file=changes_out,
            )
            _compare(report, Path(work), changes_out, all_outcome_changes, examples)
    finally:
        old_src.close()
        new_src.close()
    return report


def _compare(
    report: DiffReport, work: Path, changes_out: str | None, every: bool, keep: int
) -> None:
    rows_read = report.old_summary.reconciliation.rows_read
    transitions: collections.Counter[tuple[str, str]] = collections.Counter()
    sink = _ChangeSink(changes_out)
    try:
        pairs = zip(
            _numbered(work / "old.csv", work / "old.errors.jsonl", rows_read),
            _numbered(work / "new.csv", work / "new.errors.jsonl", rows_read),
            strict=True,
        )
        for (number, old, old_reason), (_, new, new_reason) in pairs:
            if old is None or new is None:
                one_side = (old is None) != (new is None)
                report.rejected_by_one_count += one_side
                if one_side and len(report.rejected_by_one) < keep:
                    report.rejected_by_one.append(
                        {
                            "row": number,
                            "rejected_by": "old" if old is None else "new",
                            "reason": old_reason if old is None else new_reason,
                        }
                    )
                continue
            report.compared += 1
            transitions[(old["verdict"], new["verdict"])] += 1
            before, after = outcomes(old), outcomes(new)
            moved = sorted(
                rule_id
                for rule_id in set(before) | set(after)
                if before.get(rule_id, QUIET) != after.get(rule_id, QUIET)
            )
            verdict_changed = old["verdict"] != new["verdict"]
            report.changed += verdict_changed
            report.outcome_changed += bool(moved)
            if verdict_changed or (every and moved):
                line = {
                    "row": str(number),
                    "case_id": old["case_id"],
                    "old_verdict": old["verdict"],
                    "new_verdict": new["verdict"],
                    "verdict_changed": "true" if verdict_changed else "false",
                    "rules_responsible": ";".join(moved),
                    "outcome_changes": ";".join(
                        f"{r}:{before.get(r, QUIET)}->{after.get(r, QUIET)}" for r in moved
                    ),
                }
                sink.write(line)
                if verdict_changed and len(report.examples) < keep:
                    report.examples.append(line)
        sink.close(commit=True)
    except BaseException:
        sink.close(commit=False)
        raise
    verdicts = [v.value for v in Verdict]
    report.transitions = {a: {b: transitions[(a, b)] for b in verdicts} for a in verdicts}


class _ChangeSink:
    """The changed-cases file (CSV, or JSONL by extension), written atomically; or nothing."""

    def __init__(self, target: str | None) -> None:
        self.atomic = AtomicPath(target) if target else None
        self.jsonl = bool(target) and Path(target or "").suffix.lower() in (".jsonl", ".json")
        self.handle = self.atomic.open("w", encoding="utf-8", newline="") if self.atomic else None
        self.writer: csv.DictWriter[str] | None = None
        if self.handle is not None and not self.jsonl:
            self.writer = csv.DictWriter(self.handle, fieldnames=CHANGE_COLUMNS)
            self.writer.writeheader()

    def write(self, line: dict[str, str]) -> None:
        if self.handle is None:
            return
        if self.writer is not None:
            if line["case_id"].startswith(FORMULA_START):
                line = {**line, "case_id": "'" + line["case_id"]}
            self.writer.writerow(line)
        else:
            self.handle.write(json.dumps(line) + "\n")

    def close(self, *, commit: bool) -> None:
        if self.handle is None or self.atomic is None:
            return
        self.handle.close()
        self.atomic.commit() if commit else self.atomic.abort()


assert set(STATUS_COLUMNS) <= set(FLAT_COLUMNS)  # noqa: S101  # the flattened contract
