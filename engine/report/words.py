"""How fields and values read to a clinician: one place for every report, the form and the card.

A field's label is the data dictionary's (engine/dictionary.py `FieldSpec.label`: 'sva_mm' ->
'Sagittal vertical axis (SVA, mm)'), never made up from its name; a value reads as words
('tubular_discectomy' -> 'tubular discectomy', true -> yes); a derived yes/no attribute reads as
what it means ('below the conus'). Field names and rule ids stay for `--details` and for machine
outputs.
"""

from __future__ import annotations

from engine.dictionary import FIELDS_BY_NAME
from engine.models import Scalar, Verdict
from engine.report.trace import show_value

_VALUE_WORDS = {True: "yes", False: "no"}
# derived yes/no attributes as what they mean, (when yes, when no)
DERIVED_WORDS: dict[str, tuple[str, str]] = {
    "cord_at_level": (
        "the treated levels may hold the spinal cord or conus",
        "below the conus (no spinal cord at the treated levels)",
    ),
    "includes_l4_l5": ("L4-L5 is among the treated levels", "L4-L5 is not treated"),
    "lumbar_at_level": ("lumbar or thoracolumbar level", "not a lumbar level"),
    "osteoporotic": ("osteoporotic", "not osteoporotic"),
}
# each verdict as a clinician reads it in running text
VERDICT_PHRASES = {
    Verdict.urgent_review: "urgent review",
    Verdict.not_favoured: "MIS not favoured",
    Verdict.insufficient_data: "insufficient data",
    Verdict.discuss_with_caution: "MIS worth discussing, with caution",
    Verdict.worth_discussing: "MIS worth discussing",
}


def field_label(name: str) -> str:
    """A field as a clinician says it, from the data dictionary ('bmi' -> 'Body mass index
    (BMI)'); a name the dictionary does not hold (a rule base's own) is shown as it is."""
    spec = FIELDS_BY_NAME.get(name)
    return spec.label if spec is not None else name


def field_question(name: str) -> str:
    """The dictionary's short question for a field, or '' where its label says it all."""
    spec = FIELDS_BY_NAME.get(name)
    return spec.question if spec is not None else ""


def value_words(value: object, name: str | None = None) -> str:
    """A value as a clinician reads it: yes/no for booleans, an enum code in the dictionary's
    words for field `name` ('mis_tlif' -> 'MIS TLIF'), else with spaces for underscores."""
    if isinstance(value, bool):
        return _VALUE_WORDS[value]
    if isinstance(value, str):
        spec = FIELDS_BY_NAME.get(name or "")
        return spec.value_words(value) if spec is not None else value.replace("_", " ")
    return show_value(value)  # type: ignore[arg-type]  # numbers


def fact_words(name: str, value: Scalar) -> str:
    """A field and its value in words: 'BMI 26', 'technique: tubular discectomy', and a derived
    yes/no attribute as what it means ('below the conus ...')."""
    if name in DERIVED_WORDS and isinstance(value, bool):
        return DERIVED_WORDS[name][0 if value else 1]
    return f"{field_label(name)}: {value_words(value, name)}"


def verdicts_words(verdicts: list[Verdict]) -> str:
    """Verdicts as running text: 'MIS worth discussing or MIS worth discussing, with caution'."""
    return " or ".join(VERDICT_PHRASES[v] for v in verdicts)
