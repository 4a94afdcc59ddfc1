"""docs/data-dictionary.md and the case model describe the same fields, types, units and ranges."""

from __future__ import annotations

import re

import pytest

from engine.dictionary import FIELDS, FIELDS_BY_NAME, FieldGroup, FieldType
from engine.models import Case
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "data-dictionary.md").read_text()
ROW = re.compile(r"^\| ([a-z_0-9]+) \| ([a-z]+) \|(.*)$", re.MULTILINE)
MINUS, EN_DASH = "\u2212", "\u2013"  # the document's minus sign and en dash
RANGE = re.compile(rf"({MINUS}?-?[\d.]+)\s*(?:{EN_DASH}|to)\s*({MINUS}?-?[\d.]+)")
SHARED_NAMES = [
    "case_id",
    "age_years",
    "sex",
    "pregnant",
    "bmi",
    "asa_class",
    "diabetes",
    "smoker",
    "immunosuppressed",
    "osteoporosis",
    "dexa_t_score",
    "diagnosis",
    "region",
    "levels",
    "lowest_level",
    "planned_procedure",
    "prior_surgery_same_level",
    "herniation_location",
    "herniation_calcified",
    "herniation_migrated",
    "slip_percent",
    "coronal_cobb_deg",
    "sva_mm",
    "pelvic_incidence_deg",
    "lumbar_lordosis_deg",
    "pelvic_tilt_deg",
    "lateral_listhesis_mm",
    "curve_flexible",
    "intradural_pathology",
    "tlics_score",
    "sins_score",
    "epidural_abscess",
    "cauda_equina_syndrome",
    "progressive_neuro_deficit",
    "myelopathy",
    "surgeon_mis_cases",
    "navigation_available",
    "mis_equipment_available",
]


def documented() -> dict[str, tuple[str, list[str]]]:
    rows = {}
    for name, type_, rest in ROW.findall(DOC):
        if name != "field":  # table header
            rows[name] = (type_, [cell.strip() for cell in rest.split("|")])
    return rows


def _number(text: str) -> float:
    return float(text.replace(MINUS, "-"))


def test_every_field_is_documented_and_every_documented_field_exists() -> None:
    assert set(documented()) == set(FIELDS_BY_NAME)


def test_the_public_field_names_are_all_still_there() -> None:
    assert set(SHARED_NAMES) <= set(FIELDS_BY_NAME)


@pytest.mark.parametrize("spec", FIELDS, ids=lambda s: s.name)
def test_types_ranges_and_values_agree(spec: object) -> None:
    type_, cells = documented()[spec.name]  # type: ignore[attr-defined]
    assert type_ == spec.type.value  # type: ignore[attr-defined]
    joined = " ".join(cells)
    if spec.type is FieldType.enum and spec.name != "lowest_level":  # type: ignore[attr-defined]
        listed = [v.strip() for v in cells[0].split(",")]
        assert tuple(listed) == spec.values  # type: ignore[attr-defined]
    if spec.minimum is not None and spec.group is not FieldGroup.derived:  # type: ignore[attr-defined]
        found = RANGE.search(cells[1] if len(cells) > 1 and cells[1] else joined)
        assert found, f"no range documented for {spec.name}"  # type: ignore[attr-defined]
        assert (_number(found.group(1)), _number(found.group(2))) == (spec.minimum, spec.maximum)  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", FIELDS, ids=lambda s: s.name)
def test_label_and_question_agree_with_the_document(spec: object) -> None:
    """The last two cells of a field's row are its label and question, as engine/dictionary.py."""
    _, cells = documented()[spec.name]  # type: ignore[attr-defined]
    assert cells[-1] == ""  # the row ends with a pipe
    assert (cells[-3], cells[-2]) == (spec.label, spec.question)  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", [s for s in FIELDS if s.words], ids=lambda s: s.name)
def test_value_words_are_documented_and_name_real_values(spec: object) -> None:
    """A value's words ('mis_tlif = MIS TLIF') stand in its row's notes, for values it has."""
    _, cells = documented()[spec.name]  # type: ignore[attr-defined]
    said = "said as: " + "; ".join(f"{v} = {w}" for v, w in spec.words)  # type: ignore[attr-defined]
    assert said in " ".join(cells)
    for value, words in spec.words:  # type: ignore[attr-defined]
        assert value in spec.values, value  # type: ignore[attr-defined]
        assert "_" not in words
        assert spec.value_words(value) == words  # type: ignore[attr-defined]


def test_every_field_has_a_clinical_label() -> None:
    """A label reads as clinical words: never the field name, no underscore, capitalised; a
    question ends with a question mark or is a plain description (no field names either)."""
    labels = {}
    for spec in FIELDS:
        assert spec.label, spec.name
        assert "_" not in spec.label, spec.name
        assert spec.label != spec.name, spec.name
        assert spec.label[0].isupper() or spec.label[0].isdigit(), spec.label
        assert "_" not in spec.question, spec.name
        labels.setdefault(spec.label, []).append(spec.name)
    # two inputs never share a label (a derived total may share its input's: "TLICS score")
    shared = {
        label: names
        for label, names in labels.items()
        if sum(FIELDS_BY_NAME[n].group is not FieldGroup.derived for n in names) > 1
    }
    assert shared == {}


def test_reports_take_labels_from_the_dictionary() -> None:
    from engine.report.words import field_label, field_question

    assert field_label("cauda_equina_syndrome") == "Cauda equina syndrome"
    assert field_label("bmi") == "Body mass index (BMI)"
    assert field_label("slip_percent") == "Slip (%)"
    assert (
        field_question("progressive_neuro_deficit")
        == FIELDS_BY_NAME["progressive_neuro_deficit"].question
    )
    assert field_label("not_a_field") == "not_a_field"  # a rule base's own field, as it is
    from engine.report.words import value_words

    assert value_words("mis_tlif", "mis_technique") == "MIS TLIF"
    assert value_words("tubular_discectomy", "mis_technique") == "tubular discectomy"
    assert value_words("mis_tlif") == "mis tlif"  # no field named: spaces for underscores
    assert value_words(True) == "yes"


def test_lowest_level_lists_every_segment_from_c1_c2_to_l5_s1() -> None:
    values = FIELDS_BY_NAME["lowest_level"].values
    assert values[0] == "C1-C2"
    assert values[-1] == "L5-S1"
    assert len(values) == 24
    assert "C7-T1" in values
    assert "T12-L1" in values


def test_case_model_has_every_input_field_and_no_derived_one() -> None:
    inputs = {s.name for s in FIELDS if s.group is not FieldGroup.derived}
    assert set(Case.model_fields) == inputs
