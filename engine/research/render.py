"""Markdown and HTML of the research reports (rules diff, agreement); JSON is their as_json()."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from engine.models import DISCLAIMER, Verdict
from engine.research.diff import DiffReport

VERDICTS = [v.value for v in Verdict]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def diff_markdown(report: DiffReport) -> str:
    data = report.as_json()
    out = ["# Rules diff", ""]
    out += _table(
        ["", "rules", "ruleset", "sha256", "rows read", "screened", "rejected", "balanced"],
        [
            [
                side,
                data[side]["rules"],
                f"{data[side]['ruleset']['name']} {data[side]['ruleset']['version']}",
                data[side]["ruleset"]["sha256"],
                data[side]["reconciliation"]["rows_read"],
                data[side]["reconciliation"]["rows_screened"],
                data[side]["reconciliation"]["rows_rejected"],
                data[side]["reconciliation"]["balanced"],
            ]
            for side in ("old", "new")
        ],
    )
    out += ["", f"Cohort: {report.cohort} (sha256 {report.cohort_sha256})", ""]
    out += [
        f"Verdict changed: {report.changed} of {report.compared} rows screened by both "
        f"({report.share_changed} %); any rule outcome changed: {report.outcome_changed} rows.",
        "",
    ]
    if report.rejected_by_one:
        out += [f"Rows rejected by one rule set only: {len(report.rejected_by_one)}", ""]
        out += _table(
            ["row", "rejected by", "reason"],
            [[r["row"], r["rejected_by"], r["reason"]] for r in report.rejected_by_one],
        )
        out.append("")
    out += ["## Rule changes", ""]
    if not report.rules and not report.definitions:
        out += ["No rule, derived attribute, constraint or policy differs.", ""]
    for change in report.rules:
        if change.change != "changed":
            side = change.new or change.old
            out.append(
                f"- **{change.rule_id}** {change.change} ({side['severity']}): "
                f"`{side['condition']}`"
            )
            continue
        out.append(f"- **{change.rule_id}** changed: {', '.join(change.aspects)}")
        for part, text in change.diff.items():
            out.append(f"  - {part}: `{text}`")
        if "severity" in change.aspects:
            out.append(f"  - severity: {change.old['severity']} -> {change.new['severity']}")
        if change.thresholds:
            out.append(
                f"  - thresholds: {', '.join(change.thresholds['old'])} -> "
                f"{', '.join(change.thresholds['new'])}"
            )
    out += [f"- {d}" for d in report.definitions]
    out += ["", "## Verdict transitions (rows: old, columns: new)", ""]
    out += _table(
        ["old \\ new", *VERDICTS],
        [[a, *(report.transitions[a][b] for b in VERDICTS)] for a in VERDICTS],
    )
    moved = [
        c
        for c in report.rule_counts()
        if (c.old_fired, c.old_not_evaluable) != (c.new_fired, c.new_not_evaluable)
    ]
    out += ["", "## Rules whose counts changed", ""]
    out += (
        _table(
            ["rule", "fired old", "fired new", "not evaluable old", "not evaluable new"],
            [
                [c.rule_id, c.old_fired, c.new_fired, c.old_not_evaluable, c.new_not_evaluable]
                for c in moved
            ],
        )
        if moved
        else ["None."]
    )
    out += ["", "## Cases whose verdict changed", ""]
    if report.changes_file:
        out += [f"All of them, with the rules responsible: {report.changes_file}", ""]
    if report.examples:
        out += _table(
            ["row", "case_id", "old", "new", "rules responsible"],
            [
                [e["row"], e["case_id"], e["old_verdict"], e["new_verdict"], e["outcome_changes"]]
                for e in report.examples
            ],
        )
        if report.changed > len(report.examples):
            out.append(f"(first {len(report.examples)} of {report.changed})")
    else:
        out.append("None.")
    out += ["", DISCLAIMER, ""]
    return "\n".join(out)


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("engine.research", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def diff_html(report: DiffReport) -> str:
    moved = [
        c
        for c in report.rule_counts()
        if (c.old_fired, c.old_not_evaluable) != (c.new_fired, c.new_not_evaluable)
    ]
    return (
        _environment()
        .get_template("diff.html.j2")
        .render(
            r=report, data=report.as_json(), verdicts=VERDICTS, moved=moved, disclaimer=DISCLAIMER
        )
    )
