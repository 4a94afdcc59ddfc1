"""Markdown and HTML of the research reports (rules diff, agreement); JSON is their as_json()."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from engine.models import DISCLAIMER, Verdict

if TYPE_CHECKING:  # agree needs the research extra (scipy, statsmodels); rules diff does not
    from engine.research.agree import AgreementReport
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
        f"Labels {report.labels}; cases {report.cohort}; rules {stamp['name']} "
        f"{stamp['version']} (sha256 {stamp['sha256']}).",
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
        out += [f"### {rater}: confusion (rows: rater, columns: tool)", ""]
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
    out += ["", DISCLAIMER, ""]
    return "\n".join(out)
