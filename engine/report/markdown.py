"""The screen of one case as short Markdown (a CDS Hooks card's `detail`).

Same selection and order as the text report (engine/report/text.py): red flags not yet excluded
first, then each finding with its evidence label and best source, then the questions that could
change the verdict, ranked as the policy ranks them. Rule-author notes are never shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from engine.models import Finding, Result, SourceRef, best_evidence
from engine.report.text import (
    CAUTIONS_HEADING,
    CAUTIONS_NOTE,
    Reasons,
    finding_summary,
    open_red_flags,
    question_plan,
    settings_note,
    source_text,
    worked_out_words,
)
from engine.report.words import VERDICT_PHRASES, field_label

# A screening aid for a conversation, never an order to operate: said on every card.
CARD_DISCLAIMER = (
    "miss-screen is a screening aid for a conversation between clinician and patient, never an "
    "order to operate; the treating surgeon decides."
)
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md(text: str) -> str:
    """Text with Markdown's special characters escaped, on one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))


def code(name: str) -> str:
    """A field name or rule id as inline code (field names hold underscores)."""
    return f"`{name.replace('`', '')}`"


def best_source(sources: Sequence[SourceRef]) -> SourceRef | None:
    """The source a finding's evidence label comes from (else its first source)."""
    return best_evidence(list(sources)) or (sources[0] if sources else None)


def _finding_line(finding: Finding) -> str:
    severity = "benefit" if finding.category.value == "benefit" else finding.severity.value
    summary = finding_summary(finding, words=True)  # the values in words, as the text report
    line = f"- **{severity.replace('_', ' ')}** {code(finding.rule_id)} {md(summary)}"
    source = best_source(finding.sources)
    if source is not None:
        line += f"; source: {md(source_text(source))}"
    return line


def result_markdown(
    result: Result,
    *,
    site_option: str = "the service's site profile",
    notes: Sequence[str] = (),
    reasons: Reasons | None = None,
) -> str:
    """The detail of one screen in GitHub-flavoured Markdown, ending with the disclaimer.

    `notes` are extra lines (already Markdown) said before the stamp, such as where the data
    came from; `site_option` names what sets a hospital's settings in this context; `reasons`
    (Ruleset.asked_because) say why each open question is asked.
    """
    parts: list[str] = []
    flags = open_red_flags(result)
    if flags:
        listed = ", ".join(
            f"{md(field_label(name))} ({', '.join(ids)})" for name, ids in flags.items()
        )
        parts.append(f"**Red flags not yet excluded**: supply {listed}")
    if result.findings:
        parts.append("**Findings**\n\n" + "\n".join(map(_finding_line, result.findings)))
    else:
        parts.append("**Findings**: none")
    plan = question_plan(result, reasons=reasons)
    if not plan.any_open:
        parts.append("**Open questions**: none; every rule was decided")
    else:
        if plan.shown:
            lines = [
                "**Questions that decide the verdict**, most decisive first; verdicts still "
                f"possible: {md(plan.possible)}",
                "",
            ]
            lines += [
                f"{n}. {md(field_label(name))} ({code(name)}): {md(words)}"
                + (f" — {md(plan.reasons[name])}" if name in plan.reasons else "")
                for n, (name, words) in enumerate(plan.shown, 1)
            ]
            if plan.rest:
                lines.append(f"\nthen: {md(', '.join(map(field_label, plan.rest)))}")
            parts.append("\n".join(lines))
        else:
            parts.append(
                "**Questions that decide the verdict**: none; "
                f"{md(VERDICT_PHRASES[result.verdict])} stands"
            )
        if plan.cautions:
            lines = [f"**{CAUTIONS_HEADING}** ({CAUTIONS_NOTE})", ""]
            lines += [
                f"- {md(message)} Ask: {md(', '.join(map(field_label, fields)))}."
                for _, message, fields in plan.cautions
            ]
            parts.append("\n".join(lines))
        if plan.settings:
            parts.append(f"Note: {md(settings_note(plan.settings, site_option))}")
        if plan.details_only:
            names = ", ".join(md(field_label(name)) for name, _ in plan.details_only)
            parts.append(f"Details only (cannot change the verdict): {names}")
    worked = worked_out_words(result)
    if worked:
        parts.append(f"Worked out: {md(worked)}")
    parts.extend(notes)
    stamp = result.ruleset
    parts.append(
        f"Rule set {md(stamp.name)} {md(stamp.version)} (sha256 {stamp.sha256[:12]}), "
        f"miss-screen {md(result.tool_version)}"
    )
    parts.append(f"*{md(CARD_DISCLAIMER)}*")
    return "\n\n".join(parts)
