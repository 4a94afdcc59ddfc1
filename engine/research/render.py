"""Markdown and HTML of the research reports (rules diff, rules sweep, agreement); JSON is their
as_json()."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from engine.models import DISCLAIMER, Verdict

if TYPE_CHECKING:  # agree needs the research extra (scipy, statsmodels); rules diff does not
    from engine.research.agree import AgreementReport
    from engine.research.diff import DiffReport
    from engine.research.sweep import SweepReport

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


# --- rules sweep ----------------------------------------------------------------------------------

CHART_WIDTH = 50  # characters of the text chart's bars
# one mark per verdict in the text chart, in Verdict order (its legend says which)
_MARKS = dict(zip(VERDICTS, "UN?CW", strict=True))


def _value(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bar(verdicts: dict[str, int], total: int) -> str:
    """A stacked bar of CHART_WIDTH characters, a mark per verdict, by largest remainder."""
    if not total:
        return ""
    exact = {v: CHART_WIDTH * verdicts[v] / total for v in VERDICTS}
    widths = {v: int(exact[v]) for v in VERDICTS}
    short = CHART_WIDTH - sum(widths.values())
    for v in sorted(VERDICTS, key=lambda v: widths[v] - exact[v])[:short]:
        widths[v] += 1
    return "".join(_MARKS[v] * widths[v] for v in VERDICTS)


def _withheld(count: int) -> str:
    return f" ({count} withheld: could identify someone)" if count else ""


def _counted(rule_id: str) -> str:
    """What the columns of the table of changes count (text and HTML say the same)."""
    return (
        f"Cases changed: rows whose verdict differs between the two values. {rule_id} outcome "
        f"changed: rows whose {rule_id} outcome differs (fired, conditional, not evaluable, or "
        "none of these), whether their verdict moved with it or not."
    )


def sweep_text(report: SweepReport) -> str:
    """The sweep as text (Markdown tables): counts per value, a chart, what changed between
    neighbouring values, and which other rules read the field."""
    data = report.as_json()
    constant, rec = report.constant, data["reconciliation"]
    out = [f"# Rules sweep: {md(report.rule_id)} constant {constant.number}", ""]
    out += [
        f"Swept: {md_code(constant.comparison)} ({constant.part}), {md(constant.field)} from "
        f"{_value(report.points[0].value)} to {_value(report.points[-1].value)} in "
        f"{len(report.points)} values; the rules file says {_value(constant.value)}.",
        f"Rules: {md(report.base.name)} {md(report.base.version)} (sha256 {report.base.sha256}),"
        f" changed in memory only; each value's sha256 is in the JSON output.",
        f"Cohort: {md(report.cohort)} (sha256 {report.cohort_sha256}); engine {md(report.engine)};"
        f" rows read {rec['rows_read']} = screened {rec['rows_screened']} + rejected "
        f"{rec['rows_rejected']}.",
        "",
    ]
    others = ", ".join(report.readers_of_field) or "none"
    out.append(
        f"Other rules reading {md(constant.field)} (they keep their own thresholds): {md(others)}."
    )
    if report.derived_from_field:
        out.append(f"Derived from it: {md(', '.join(report.derived_from_field))}.")
    out += ["", "## Verdicts per value", ""]
    out += _table(
        [constant.field, *VERDICTS, f"{report.rule_id} fired"],
        [
            [_value(p.value), *(p.verdicts[v] for v in VERDICTS), p.rule_fired]
            for p in report.points
        ],
    )
    out.append("")  # the chart, indented: a code block in Markdown, plain lines in a terminal
    out += [
        f"    {_value(p.value):>8} |{_bar(p.verdicts, report.rows_screened)}"
        for p in report.points
    ]
    out.append(" " * 14 + ", ".join(f"{m} {v}" for v, m in _MARKS.items()))
    out += ["", "## Cases that change verdict between neighbouring values", ""]
    if not report.steps:
        out += ["One value: nothing to compare.", ""]
    else:
        out += [_counted(report.rule_id), ""]
        out += _table(
            ["from", "to", "cases changed", f"{report.rule_id} outcome changed",
             "verdicts (from → to: cases)", "first case ids"],
            [
                [
                    _value(s.low),
                    _value(s.high),
                    s.changed,
                    s.rule_changed,
                    "; ".join(f"{k.replace('->', ' → ')}: {n}" for k, n in s.transitions.items()),
                    ", ".join(s.case_ids) + _withheld(s.ids_withheld),
                ]
                for s in report.steps
            ],
        )  # fmt: skip
        out += ["", f"(at most {report.examples} case ids per row)", ""]
    out += [DISCLAIMER, ""]
    return "\n".join(out) + "\n"


def sweep_html(report: SweepReport) -> str:
    """The sweep as one HTML page with the chart (needs the report extra: matplotlib)."""
    from engine.report.html import sweep_chart

    chart = sweep_chart(
        [_value(p.value) for p in report.points],
        {v: [p.verdicts[v] for p in report.points] for v in VERDICTS},
        report.constant.field,
    )
    return (
        _environment()
        .get_template("sweep.html.j2")
        .render(
            r=report,
            data=report.as_json(),
            verdicts=VERDICTS,
            shown=_value,
            chart=chart,
            counted=_counted(report.rule_id),
            disclaimer=DISCLAIMER,
        )
    )
