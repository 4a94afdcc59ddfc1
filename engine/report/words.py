"""How fields and values read to a clinician: one place for every report, the form and the card.

A field's label comes from its data-dictionary name ('sva_mm' -> 'SVA', the unit shown beside it,
not repeated); a value reads as words ('tubular_discectomy' -> 'tubular discectomy', true -> yes);
a derived yes/no attribute reads as what it means ('below the conus'). Field names and rule ids
stay for `--details` and for machine outputs.
"""

from __future__ import annotations

from engine.models import Scalar, Verdict
from engine.report.trace import show_value

# the unit, shown beside a field, is not repeated in its label
_UNIT_SUFFIXES = ("_years", "_deg", "_mm", "_pct", "_weeks")
_ACRONYMS = frozenset({"bmi", "asa", "sva", "mis", "tlics", "sins", "slic", "plc", "dlc", "dexa"})
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
    """A field name as a label: 'age_years' -> 'Age', 'sva_mm' -> 'SVA', 'bmi' -> 'BMI'."""
    stem = name
    for suffix in _UNIT_SUFFIXES:
        if stem.endswith(suffix) and stem != suffix.lstrip("_"):
            stem = stem[: -len(suffix)]
            break
    words = [w.upper() if w in _ACRONYMS else w for w in stem.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def value_words(value: object) -> str:
    """A value as a clinician reads it: yes/no for booleans, words for enum codes."""
    if isinstance(value, bool):
        return _VALUE_WORDS[value]
    if isinstance(value, str):
        return value.replace("_", " ")
    return show_value(value)  # type: ignore[arg-type]  # numbers


def fact_words(name: str, value: Scalar) -> str:
    """A field and its value in words: 'BMI 26', 'technique: tubular discectomy', and a derived
    yes/no attribute as what it means ('below the conus ...')."""
    if name in DERIVED_WORDS and isinstance(value, bool):
        return DERIVED_WORDS[name][0 if value else 1]
    return f"{field_label(name)}: {value_words(value)}"


def verdicts_words(verdicts: list[Verdict]) -> str:
    """Verdicts as running text: 'MIS worth discussing or MIS worth discussing, with caution'."""
    return " or ".join(VERDICT_PHRASES[v] for v in verdicts)
