"""CDS Hooks cards of a screening result, and the JSON clean-up every response goes through.

One card per call: `summary` (< 140 characters) says the verdict, `indicator` its urgency,
`detail` the report in Markdown (engine/report/markdown.py), `source` the rule set and a link to
the rule docs this service serves, `overrideReasons` the reasons the feedback endpoint records.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from engine.models import Result, Verdict
from engine.report.markdown import CARD_DISCLAIMER, code, md, result_markdown

SUMMARY_LIMIT = 140  # CDS Hooks: "<140-character summary"
INDICATOR = {
    Verdict.urgent_review: "critical",
    Verdict.not_favoured: "warning",
    Verdict.discuss_with_caution: "warning",
    Verdict.insufficient_data: "info",
    Verdict.worth_discussing: "info",
}
SUMMARY_WORDS = {
    Verdict.urgent_review: "arrange urgent surgical review",
    Verdict.not_favoured: "MIS not favoured",
    Verdict.insufficient_data: "insufficient data",
    Verdict.discuss_with_caution: "MIS worth discussing, with caution",
    Verdict.worth_discussing: "MIS worth discussing",
}
OVERRIDE_SYSTEM = "http://miss-screen.example.org/fhir/CodeSystem/card-override"
OVERRIDE_REASONS: dict[str, str] = {
    "already-discussed": "Already discussed with the patient",
    "record-incomplete": "The record is incomplete or out of date",
    "disagree": "Disagree with the screen",
    "not-relevant": "Not relevant to this order",
}
DEV_NOTE = "DEV MODE: this service accepts unauthenticated calls; not for patient care."
KEEP_EMPTY = frozenset({"cards"})  # CDS Hooks: `cards` is present even when empty


def clean(value: Any, key: str | None = None) -> Any:
    """`value` without JSON null, empty strings, lists or objects, at any depth (a `cards`
    list stays, empty or not, as the spec requires)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            kept = clean(v, str(k))
            if kept is not None:
                out[str(k)] = kept
        return out or None
    if isinstance(value, list | tuple):
        items = [c for c in (clean(v) for v in value) if c is not None]
        return items if items or key in KEEP_EMPTY else None
    if value is None or value == "":
        return None
    return value


def urgent_still_possible(result: Result) -> bool:
    """An open question (a red flag not yet excluded) could still make this an urgent review."""
    return (
        result.verdict is not Verdict.urgent_review
        and Verdict.urgent_review in result.possible_verdicts
    )


def indicator_of(result: Result) -> str:
    """The verdict's indicator, never below warning while urgent review is still possible."""
    found = INDICATOR[result.verdict]
    return "warning" if found == "info" and urgent_still_possible(result) else found


def summary_of(result: Result, *, dev: bool = False) -> str:
    """One sentence under 140 characters: the verdict and what is left to settle."""
    head = f"miss-screen: {SUMMARY_WORDS[result.verdict]} ({result.verdict.value})"
    if urgent_still_possible(result):
        tail = "; a red flag is not yet excluded"
    elif result.verdict is Verdict.insufficient_data and result.deciding_questions:
        count = len(result.deciding_questions)
        tail = f"; {count} question{'s' if count > 1 else ''} decide{'' if count > 1 else 's'} it"
    elif result.open_cautions and result.verdict is not Verdict.urgent_review:
        count = len(result.open_cautions)
        tail = f"; {count} caution{'s' if count > 1 else ''} not yet excluded"
    elif result.verdict is Verdict.urgent_review:
        tail = ", a red flag fired"
    else:
        majors = sum(1 for f in result.findings if f.severity.value in ("major", "caution"))
        tail = f"; {majors} finding{'s' if majors != 1 else ''} to discuss" if majors else ""
    text = ("DEV " if dev else "") + head + tail
    return text if len(text) < SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 2] + "…"


def result_card(
    result: Result,
    *,
    docs_url: str,
    dev: bool = False,
    notes: Sequence[str] = (),
    reasons: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The one card of a screen (a dict ready for JSON; run it through `clean`); `reasons`
    (Ruleset.asked_because) say why each open question is asked."""
    extra = list(notes)
    if dev:
        extra.insert(0, f"**{md(DEV_NOTE)}**")
    return {
        "uuid": str(uuid.uuid4()),
        "summary": summary_of(result, dev=dev),
        "indicator": indicator_of(result),
        "detail": result_markdown(
            result,
            site_option="the service's site profile (serve --site)",
            notes=extra,
            reasons=reasons,
        ),
        "source": {
            "label": f"{result.ruleset.name} {result.ruleset.version}",
            "url": docs_url,
        },
        "overrideReasons": [
            {"system": OVERRIDE_SYSTEM, "code": c, "display": d}
            for c, d in OVERRIDE_REASONS.items()
        ],
        "links": [{"label": "The rules behind this screen", "url": docs_url, "type": "absolute"}],
    }


def problem_card(
    fields: Sequence[str], *, label: str, docs_url: str, dev: bool = False
) -> dict[str, Any]:
    """A card for a record whose values contradict each other (the screen cannot run)."""
    names = ", ".join(code(f) for f in fields) or "some values"
    lines = [
        f"**{md(DEV_NOTE)}**" if dev else "",
        "The record's values contradict each other, so the case could not be screened: "
        f"check {names} in the record.",
        f"*{md(CARD_DISCLAIMER)}*",
    ]
    return {
        "uuid": str(uuid.uuid4()),
        "summary": ("DEV " if dev else "")
        + "miss-screen: not screened, the record contradicts itself",
        "indicator": "warning",
        "detail": "\n\n".join(line for line in lines if line),
        "source": {"label": label, "url": docs_url},
    }
