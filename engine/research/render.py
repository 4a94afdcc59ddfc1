"""Markdown and HTML of the research reports (rules diff, agreement); JSON is their as_json()."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from engine.models import DISCLAIMER, Verdict

if TYPE_CHECKING:  # agree needs the research extra (scipy, statsmodels); rules diff does not
    from engine.research.agree import AgreementReport
    from engine.research.diff import DiffReport

VERDICTS = [v.value for v in Verdict]


# What Markdown would read as markup: HTML (a rater named <script>...), links and images, code
# spans, table cells and escapes. Underscores and asterisks only ever change emphasis; left as
# typed, surgeon_1 stays surgeon_1 in the raw text.
_MARKUP = re.compile(r"[\\`\[\]|]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def md(value: Any) -> str:
    """Text from an input (a file name, a rater, a case_id, a rule's words) as Markdown that
    renders it literally, on one line."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(" ", text)
    text = html.escape(text, quote=False)
    return _MARKUP.sub(lambda m: "\\" + m[0], text)


def md_code(text: str) -> str:
    """A code span holding `text` literally: fenced by more backticks than it holds in a row."""
    text = _CONTROL.sub(" ", text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in rows]
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
    out += ["", f"Cohort: {md(report.cohort)} (sha256 {report.cohort_sha256})", ""]
    out += [
        f"Verdict changed: {report.changed} of {report.compared} rows screened by both "
        f"({report.share_changed} %); any rule outcome changed: {report.outcome_changed} rows.",
        "",
    ]
    if report.rejected_by_one:
        out += [f"Rows rejected by one rule set only: {report.rejected_by_one_count}", ""]
        out += _table(
            ["row", "rejected by", "reason"],
            [[r["row"], r["rejected_by"], r["reason"]] for r in report.rejected_by_one],
        )
        if report.rejected_by_one_count > len(report.rejected_by_one):
            out.append(f"(first {len(report.rejected_by_one)} of {report.rejected_by_one_count})")
        out.append("")
    out += ["## Rule changes", ""]
    out += [f"**Warning:** {md(w)}" for w in report.version_warnings]
    out += [""] if report.version_warnings else []
    if not report.rules and not report.definitions:
        out += ["No rule, derived attribute, constraint or policy differs.", ""]
    for change in report.rules:
        if change.change != "changed":
            side = change.new or change.old
            out.append(
                f"- **{md(change.rule_id)}** {change.change} ({md(side['severity'])}): "
                f"{md_code(side['condition'])}"
            )
            continue
        out.append(f"- **{md(change.rule_id)}** changed: {', '.join(change.aspects)}")
        for part, text in change.diff.items():
            out.append(f"  - {part}: {md_code(text)}")
        if "severity" in change.aspects:
            out.append(
                f"  - severity: {md(change.old['severity'])} -> {md(change.new['severity'])}"
            )
        if change.thresholds:
            out.append(
                f"  - thresholds: {md(', '.join(change.thresholds['old']))} -> "
                f"{md(', '.join(change.thresholds['new']))}"
            )
    out += [f"- {md(d)}" for d in report.definitions]
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
        out += [f"All of them, with the rules responsible: {md(report.changes_file)}", ""]
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


def _estimate(entry: dict[str, Any], key: str = "value") -> str:
    if entry.get(key) is None:
        return "n/a"
    ci = entry.get("ci95")
    shown = f"{entry[key]:.3f}"
    return shown + (f" (95 % CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else "") + f", n={entry['n']}"


def agree_markdown(report: AgreementReport) -> str:
    data = report.as_json()
    stamp = data["ruleset"]
    out = ["# Agreement with raters", ""]
    out += [
        f"Labels {md(report.labels)}; cases {md(report.cohort)}; rules {md(stamp['name'])} "
        f"{md(stamp['version'])} (sha256 {stamp['sha256']}).",
        f"Cases labelled: {data['cases_labelled']}; compared: {data['cases_compared']}; "
        f"tool insufficient_data (counted apart): {len(report.insufficient)}; "
        f"blank labels: {len(report.missing_labels)}.",
        '"MIS worth discussing" = worth_discussing or discuss_with_caution; raters are the '
        f"reference. Bootstrap: {data['bootstrap']['resamples']} resamples, "
        f"seed {data['bootstrap']['seed']}.",
        "",
        "## Per rater",
        "",
    ]
    rows = []
    for rater, entry in report.per_rater.items():
        wd = entry["worth_discussing"]
        verdict = entry.get("verdict", {}).get("cohen_kappa")
        rows.append(
            [
                rater,
                entry["n"],
                _estimate(wd["cohen_kappa"], "kappa"),
                _estimate(verdict, "kappa") if verdict else "",
                _estimate(wd["sensitivity"]),
                _estimate(wd["specificity"]),
            ]
        )
    out += _table(
        ["rater", "n", "kappa (worth discussing)", "kappa (verdict)", "sensitivity", "specificity"],
        rows,
    )
    fleiss = report.fleiss
    out += [
        "",
        f"Fleiss' kappa across {fleiss['raters']} raters (worth discussing): "
        f"{fleiss['worth_discussing'] if fleiss['worth_discussing'] is not None else 'n/a'}"
        f" over {fleiss['n']} cases every rater labelled.",
        "",
    ]
    for rater, entry in report.per_rater.items():
        confusion = entry["worth_discussing"]["confusion"]["rows_rater_columns_tool"]
        out += [f"### {md(rater)}: confusion (rows: rater, columns: tool)", ""]
        out += _table(
            ["", "tool no", "tool yes"], [["rater no", *confusion[0]], ["rater yes", *confusion[1]]]
        )
        if "verdict" in entry:
            full = entry["verdict"]["confusion"]
            out.append("")
            out += _table(
                ["rater \\ tool", *full["labels"]],
                [
                    [label, *row]
                    for label, row in zip(
                        full["labels"], full["rows_rater_columns_tool"], strict=True
                    )
                ],
            )
        out.append("")
    out += ["## Tool insufficient_data (counted apart, not in the statistics)", ""]
    out += (
        _table(
            ["case_id", "rules that could change the verdict"],
            [[c["case_id"], ", ".join(c["deciding_rules"])] for c in report.insufficient],
        )
        if report.insufficient
        else ["None."]
    )
    if report.missing_labels:
        out += ["", "## Blank labels (left out of that rater's statistics)", ""]
        out += _table(
            ["case_id", "rater"], [[m["case_id"], m["rater"]] for m in report.missing_labels]
        )
    out += ["", '## Disagreements on "MIS worth discussing"', ""]
    out += (
        _table(
            ["case_id", "tool", "raters", "rules that decided the tool's verdict"],
            [
                [
                    d["case_id"],
                    d["tool"],
                    ", ".join(f"{r}: {v}" for r, v in d["raters"].items()),
                    ", ".join(d["deciding_rules"]),
                ]
                for d in report.disagreements
            ],
        )
        if report.disagreements
        else ["None."]
    )
    if report.notes:
        out += ["", "## Notes", "", *(f"- {md(note)}" for note in report.notes)]
    out += ["", DISCLAIMER, ""]
    return "\n".join(out)


def agree_html(report: AgreementReport) -> str:
    """The agreement report as one HTML page (jinja2, autoescaped: a rater or case_id is text)."""
    return (
        _environment()
        .get_template("agree.html.j2")
        .render(r=report, data=report.as_json(), estimate=_estimate, disclaimer=DISCLAIMER)
    )
