"""The batch report: one self-contained HTML page built from a BatchSummary.

The page has no external assets and needs no JavaScript: CSS is inline and the charts are
matplotlib SVG embedded in the page. Every number in a table is the summary's own number, in an
element with a stable id (`verdict-urgent_review-count`, `rule-ACC-007-fired`, ...) so tests and
readers can trace it back to the JSON. The same summary always gives byte-identical HTML.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from engine.batch.summary import BatchSummary, FieldMissingness, RuleCounts, Subgroup
from engine.models import SEVERITY_ORDER, Verdict
from engine.report.text import show_value

if TYPE_CHECKING:  # matplotlib.typing is newer than the oldest matplotlib we accept
    from matplotlib.typing import RcKeyType

TOP_RULES = 15
TOP_FIELDS = 15

VERDICT_COLOURS = {
    Verdict.urgent_review: "#8e1b1b",
    Verdict.not_favoured: "#d1495b",
    Verdict.insufficient_data: "#8d99ae",
    Verdict.discuss_with_caution: "#e9a23b",
    Verdict.worth_discussing: "#2e8b57",
}
STATUS_COLOURS = {"fired": "#1f4e79", "conditional": "#6fa8dc", "not_evaluable": "#b7b7b7"}
_REMAINING_COLOUR = "#e6e9ef"
_TEXT_COLOUR = "#1c1c1c"

# Fixed salt and no date: matplotlib otherwise derives SVG ids from a random salt and stamps the
# clock time, and the same summary must give byte-identical HTML.
_SVG_RC: dict[RcKeyType, Any] = {
    "svg.hashsalt": "miss-screen-batch-report",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#666666",
    "axes.labelcolor": _TEXT_COLOUR,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
}
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_SVG_ID = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class VerdictRow:
    """One line of the verdict table: the summary's count and its share of screened rows."""

    verdict: str
    count: int
    pct: str
    colour: str


@dataclass(frozen=True)
class Balance:
    """Whether rows read = screened + rejected, by the summary's flag and by its numbers."""

    balanced: bool
    flag: bool
    arithmetic: bool


def render_html(summary: BatchSummary) -> str:
    """The batch report of one run as a single HTML page."""
    rec = summary.reconciliation
    arithmetic = rec.rows_read == rec.rows_screened + rec.rows_rejected
    verdict_rows = [
        VerdictRow(
            verdict=verdict.value,
            count=summary.verdicts.get(verdict, 0),
            pct=_percent(summary.verdicts.get(verdict, 0), rec.rows_screened),
            colour=VERDICT_COLOURS[verdict],
        )
        for verdict in Verdict
    ]
    rules = sorted(summary.rules, key=lambda r: (SEVERITY_ORDER[r.severity], -r.fired, r.rule_id))
    fields = sorted(summary.missingness, key=lambda f: (-f.blocks_verdict, -f.missing, f.field))
    rejected = sorted(summary.rejected_by_field.items(), key=lambda item: (-item[1], item[0]))
    template = report_environment().get_template("batch.html.j2")
    return template.render(
        summary=summary,
        stamp=summary.stamp,
        site=[(key, _site_value(value)) for key, value in summary.stamp.site.items()],
        rec=rec,
        balance=Balance(rec.balanced and arithmetic, rec.balanced, arithmetic),
        verdict_rows=verdict_rows,
        verdict_total=sum(row.count for row in verdict_rows),
        rules=rules,
        fields_top=fields[:TOP_FIELDS],
        fields_rest=fields[TOP_FIELDS:],
        rejected=rejected,
        verdict_colours={v.value: c for v, c in VERDICT_COLOURS.items()},
        charts={
            "verdicts": _verdict_chart(verdict_rows),
            "rules": _rule_chart(summary.rules),
            "attrition": _attrition_chart(summary),
            "missingness": _missingness_chart(fields[:TOP_FIELDS]),
        },
        subgroup_charts={g.field: _subgroup_chart(g) for g in summary.subgroups},
        verdicts=[v.value for v in Verdict],
    )


def _site_value(value: bool | int | float | str | dict[str, int]) -> str:
    """A site setting as text; a per-technique one as `technique number` pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{technique} {number}" for technique, number in value.items())
    return show_value(value)


@functools.cache
def report_environment() -> Environment:
    """The Jinja environment of the report templates, built once (templates compiled once)."""
    env = Environment(
        loader=PackageLoader("engine.report", "templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html", "html.j2"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["slug"] = slug
    return env


def slug(text: object) -> str:
    """A piece of an HTML id: rule ids and field names pass unchanged, anything else is tamed."""
    return _UNSAFE_ID_CHARS.sub("_", str(text))


def _percent(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}" if total else "n/a"


# --- charts -----------------------------------------------------------------------------------


def _svg(fig: Figure, name: str, label: str) -> Markup:
    """The figure as inline SVG, its ids prefixed so that several charts share one page."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": _SVG_RC["svg.hashsalt"]}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue()))
    text = _SVG_ID.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}", text)
    text = text.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1)
    return Markup(text.strip())  # noqa: S704  # matplotlib output; its text comments are escaped


def _figure(height_in: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(9.0, height_in), layout="constrained")
    return fig, fig.subplots()


def _label_bars(
    ax: Axes, values: Sequence[int], positions: Sequence[float], horizontal: bool
) -> None:
    top = max(values, default=0) or 1
    for position, value in zip(positions, values, strict=True):
        if horizontal:
            ax.text(value + top * 0.01, position, str(value), va="center", ha="left", fontsize=9)
        else:
            ax.text(position, value + top * 0.01, str(value), ha="center", va="bottom", fontsize=9)


def _verdict_chart(rows: Sequence[VerdictRow]) -> Markup | None:
    counts = [row.count for row in rows]
    if not any(counts):
        return None
    with matplotlib.rc_context(_SVG_RC):
        fig, ax = _figure(3.4)
        positions = list(range(len(rows)))
        ax.bar(positions, counts, color=[row.colour for row in rows], width=0.65)
        ax.set_xticks(positions, [row.verdict for row in rows])
        _label_bars(ax, counts, positions, horizontal=False)
        ax.set_ylim(0, max(counts) * 1.15)
        ax.set_xlabel("verdict")
        ax.set_ylabel("cases")
        title = "Cases by verdict"
        ax.set_title(title, loc="left", fontsize=11)
        return _svg(fig, "chart-verdicts", title)


def sweep_chart(values: Sequence[str], counts: dict[str, list[int]], swept: str) -> Markup | None:
    """Cases by verdict at each value of a swept constant (`rules sweep`): stacked bars in the
    verdict colours of the batch report, one bar per value."""
    if not values or not any(any(c) for c in counts.values()):
        return None
    with matplotlib.rc_context(_SVG_RC):
        fig, ax = _figure(3.8)
        positions = list(range(len(values)))
        bottom = [0] * len(values)
        for verdict in Verdict:
            heights = counts[verdict.value]
            ax.bar(
                positions,
                heights,
                bottom=bottom,
                color=VERDICT_COLOURS[verdict],
                width=0.7,
                label=verdict.value,
            )
            bottom = [a + b for a, b in zip(bottom, heights, strict=True)]
        step = max(1, len(values) // 20)  # at most about 20 tick labels
        ax.set_xticks(positions[::step], list(values)[::step])
        ax.set_xlabel(swept)
        ax.set_ylabel("cases")
        title = f"Cases by verdict as {swept} moves"
        ax.set_title(title, loc="left", fontsize=11)
        fig.legend(loc="outside lower center", ncols=len(Verdict), frameon=False, fontsize=8)
        return _svg(fig, "chart-sweep", title)


def _rule_chart(rules: Sequence[RuleCounts]) -> Markup | None:
    statuses = ("fired", "conditional", "not_evaluable")

    def reached(rule: RuleCounts) -> int:
        return rule.fired + rule.conditional + rule.not_evaluable

    top = sorted((r for r in rules if reached(r)), key=lambda r: (-reached(r), r.rule_id))
    top = top[:TOP_RULES]
    if not top:
        return None
    with matplotlib.rc_context(_SVG_RC):
        fig, ax = _figure(1.2 + 0.32 * len(top))
        positions = list(range(len(top)))
        left = [0] * len(top)
        for status in statuses:
            values = [getattr(rule, status) for rule in top]
            ax.barh(
                positions,
                values,
                left=left,
                color=STATUS_COLOURS[status],
                height=0.7,
                label=status,
            )
            left = [a + b for a, b in zip(left, values, strict=True)]
        _label_bars(ax, left, positions, horizontal=True)
        ax.set_yticks(positions, [f"{rule.rule_id} {rule.name}"[:48] for rule in top])
        ax.invert_yaxis()
        ax.set_xlim(0, max(left) * 1.12)
        ax.set_xlabel("cases (fired + conditional + not evaluable; total at bar end)")
        title = f"Rules reaching the most cases (top {len(top)})"
        ax.set_title(title, loc="left", fontsize=11)
        fig.legend(loc="outside lower center", ncols=len(statuses), frameon=False)
        return _svg(fig, "chart-rules", title)


def _attrition_chart(summary: BatchSummary) -> Markup | None:
    steps = summary.attrition
    if not steps or not any(step.count + step.remaining for step in steps):
        return None
    with matplotlib.rc_context(_SVG_RC):
        fig, ax = _figure(1.0 + 0.45 * len(steps))
        positions = list(range(len(steps)))
        counts = [step.count for step in steps]
        remaining = [step.remaining for step in steps]
        ax.barh(
            positions,
            counts,
            color=[VERDICT_COLOURS[step.verdict] for step in steps],
            height=0.65,
        )
        ax.barh(
            positions,
            remaining,
            left=counts,
            color=_REMAINING_COLOUR,
            edgecolor="#9aa3b2",
            linewidth=0.6,
            height=0.65,
        )
        widest = max(c + r for c, r in zip(counts, remaining, strict=True)) or 1
        for position, count, rest in zip(positions, counts, remaining, strict=True):
            ax.text(
                count + rest + widest * 0.01,
                position,
                f"{count} stop, {rest} go on",
                va="center",
                ha="left",
                fontsize=9,
            )
        ax.set_yticks(positions, [step.verdict.value for step in steps])
        ax.invert_yaxis()
        ax.set_xlim(0, widest * 1.3)
        ax.set_xlabel("cases reaching this step of the verdict policy")
        title = "Attrition in verdict-policy order"
        ax.set_title(title, loc="left", fontsize=11)
        return _svg(fig, "chart-attrition", title)


def _subgroup_chart(group: Subgroup) -> Markup | None:
    """Stacked horizontal bars: each value of the field, its cases coloured by verdict."""
    if not group.rows:
        return None
    with matplotlib.rc_context(_SVG_RC):
        fig, ax = _figure(1.0 + 0.36 * len(group.rows))
        positions = list(range(len(group.rows)))
        left = [0] * len(group.rows)
        for verdict in Verdict:
            counts = [row.verdicts.get(verdict, 0) for row in group.rows]
            ax.barh(
                positions,
                counts,
                left=left,
                color=VERDICT_COLOURS[verdict],
                height=0.65,
                label=verdict.value,
            )
            left = [a + b for a, b in zip(left, counts, strict=True)]
        ax.set_yticks(positions, [row.value for row in group.rows])
        ax.invert_yaxis()
        ax.set_xlabel("cases")
        ax.legend(fontsize=8, frameon=False, loc="lower right")
        title = f"Verdicts by {group.field}"
        ax.set_title(title, loc="left", fontsize=11)
        return _svg(fig, f"chart-subgroup-{group.field}", title)


def _missingness_chart(fields: Sequence[FieldMissingness]) -> Markup | None:
    if not fields or not any(f.blocks_verdict for f in fields):
        return None
    with matplotlib.rc_context(_SVG_RC):
        fig, ax = _figure(1.2 + 0.32 * len(fields))
        positions = list(range(len(fields)))
        blocks = [f.blocks_verdict for f in fields]
        ax.barh(positions, blocks, color=VERDICT_COLOURS[Verdict.insufficient_data], height=0.7)
        widest = max(blocks) or 1
        for position, field in zip(positions, fields, strict=True):
            ax.text(
                field.blocks_verdict + widest * 0.01,
                position,
                f"{field.blocks_verdict} (missing in {field.missing_pct:.1f} %)",
                va="center",
                ha="left",
                fontsize=9,
            )
        ax.set_yticks(positions, [f.field for f in fields])
        ax.invert_yaxis()
        ax.set_xlim(0, widest * 1.35)
        ax.set_xlabel("insufficient_data cases in which this field blocked the verdict")
        title = f"Missing fields that most often leave a case insufficient_data (top {len(fields)})"
        ax.set_title(title, loc="left", fontsize=11)
        return _svg(fig, "chart-missingness", title)
