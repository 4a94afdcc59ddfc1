"""The printable report of one case: a self-contained HTML page (inline CSS, no script, nothing
fetched), with the sections of the text report, every rationale and its sources as links."""

from __future__ import annotations

from dataclasses import dataclass

from engine.models import Finding, Result, SourceRef, Verdict, evidence_label
from engine.report.html import report_environment
from engine.report.text import (
    CAUTIONS_HEADING,
    SETTING_FIELD_SET,
    SEVERITY_WORDS,
    VERDICT_WORDS,
    Reasons,
    _display,
    field_reasons,
    finding_summary,
    needed_words,
    open_red_flags,
    possible_words,
    questions_by_field,
    scope_words,
    technique_groups,
    worked_out_words,
)
from engine.report.words import VERDICT_PHRASES, fact_words, field_label

VERDICT_COLOURS = {
    Verdict.urgent_review: "#8e1b1b",
    Verdict.not_favoured: "#b3261e",
    Verdict.insufficient_data: "#5c6b7a",
    Verdict.discuss_with_caution: "#9a6700",
    Verdict.worth_discussing: "#1e6b3c",
}


@dataclass(frozen=True)
class Link:
    text: str
    href: str | None
    label: str


def source_link(source: SourceRef) -> Link:
    """A source with the best address it has: its DOI, then its URL, then PubMed."""
    if source.doi:
        href: str | None = f"https://doi.org/{source.doi}"
    elif source.url and source.url.startswith(("https://", "http://")):
        href = source.url
    elif source.pmid:
        href = f"https://pubmed.ncbi.nlm.nih.gov/{source.pmid}/"
    else:
        href = None
    return Link(source.citation, href, evidence_label([source]))


def _finding_row(finding: Finding) -> dict[str, object]:
    return {
        "id": finding.rule_id,
        "severity": finding.severity.value,
        "severity_words": (
            "benefit" if finding.category.value == "benefit" else SEVERITY_WORDS[finding.severity]
        ),
        "message": finding.message,
        "shown_values": "; ".join(fact_words(k, v) for k, v in finding.values.items()),
        "evidence": evidence_label(finding.sources),
        "provisional": finding.provisional,
        "rationale": finding.rationale,
        "sources": [source_link(s) for s in finding.sources],
        "summary": finding_summary(finding, words=True),
    }


def render_case_html(result: Result, *, reasons: Reasons | None = None) -> str:
    """The page of one case; the same result always gives the same bytes. `reasons`
    (Ruleset.asked_because) says why each open question is asked."""
    env = report_environment()
    needed_by = questions_by_field(result)
    why = field_reasons(result, reasons, verdict_only=True)
    said = reasons or {}
    groups, apart = technique_groups(result)
    considerations = [(f"If {_display(t)} is considered", cs) for t, cs in groups.items()]
    considerations += [(scope_words(c.scope), [c]) for c in apart]
    return env.get_template("case.html.j2").render(
        result=result,
        verdict_words=VERDICT_WORDS[result.verdict][0].upper(),
        verdict_colour=VERDICT_COLOURS[result.verdict],
        red_flags=open_red_flags(result),
        findings=[_finding_row(f) for f in result.findings],
        questions=[
            (name, needed_words(needed_by[name]), why.get(name, []))
            for name in result.deciding_questions
        ],
        stands=VERDICT_PHRASES[result.verdict],
        cautions=[
            {
                "message": said.get(c.rule_id, c.message),
                "asked": ", ".join(map(field_label, c.missing)),
                "rule_id": c.rule_id,
            }
            for c in result.open_cautions
        ],
        cautions_heading=CAUTIONS_HEADING,
        label=field_label,
        possible=possible_words(result),
        details_only=[
            field_label(n)
            for n in sorted(
                set(needed_by)
                - set(result.next_questions)
                - {m for c in result.open_cautions for m in c.missing}
            )
        ],
        settings=[field_label(n) for n in result.next_questions if n in SETTING_FIELD_SET],
        considerations=[
            (
                title,
                "; ".join(f"{c.rule_id} {SEVERITY_WORDS[c.severity]}" for c in conds),
            )
            for title, conds in considerations
        ],
        conditional=[
            {
                **_finding_row(c),
                "scope": scope_words(c.scope),
                "missing": ", ".join(map(field_label, c.missing)),
            }
            for c in result.conditional
        ],
        worked=worked_out_words(result),
    )
