"""No question about an anatomy the case is not in (issue 21).

Every sparse clinic case (age, sex, diagnosis, lowest level, levels, planned procedure), over every
level x diagnosis x procedure x span, is screened on both evaluators; no red-flag, major or caution
rule left not evaluable may ask for a field of an anatomy the case is not in. The anatomy of each
field is defined here, independently of the rules' own scoping:

- cord signs (myelopathy) only where the treated span may hold the cord or conus: cervical,
  thoracic, T12-L1, L1-L2, or a lumbar span reaching L1-L2 (conus range mid-T12 to upper L3,
  Saifuddin 1998);
- cauda equina syndrome only at lumbar levels, the thoracolumbar junction and the epiconus
  (T11-T12 down: a lesion 1-2 vertebrae above the cord's end, Asada 2021; issue 28);
- disc calcification (the giant thoracic disc) only at thoracic levels and both junctions, C7-T1
  to T12-L1 (issue 28: a giant calcified C7-T1 disc is asked rather than passed);
- SVA, pelvic incidence, lumbar lordosis and pelvic tilt never in the cervical spine, and outside
  adult deformity only for fusions;
- TLICS components never for a cervical level (C1-C2 to C6-C7) and only for fractures; SLIC
  components only for fractures at a cervical level or the cervicothoracic junction.
"""

from __future__ import annotations

import pytest

from engine.dictionary import FIELDS_BY_NAME, SEGMENTS
from engine.evaluate.base import Evaluator
from engine.models import Scalar
from engine.screen import screen_values
from tests.conftest import RULESET

DIAGNOSES = FIELDS_BY_NAME["diagnosis"].values
PROCEDURES = FIELDS_BY_NAME["planned_procedure"].values
INDEX = {segment: i for i, segment in enumerate(SEGMENTS)}
C7_T1, T11_T12, T12_L1, L1_L2 = (
    INDEX["C7-T1"],
    INDEX["T11-T12"],
    INDEX["T12-L1"],
    INDEX["L1-L2"],
)
TLICS = {"tlics_morphology", "tlics_plc", "tlics_neuro", "tlics_score"}
SLIC = {"slic_morphology", "slic_dlc", "slic_neuro", "slic_cord_compression", "slic_score"}
LUMBOPELVIC = {"sva_mm", "pelvic_incidence_deg", "lumbar_lordosis_deg", "pelvic_tilt_deg"}
ASKING = ("red_flag", "major", "caution")


def foreign_fields(level: str, levels: int, diagnosis: str, procedure: str) -> set[str]:
    """The fields of anatomies a case at this level is not in (see the module docstring)."""
    low = INDEX[level]
    top = low - (levels - 1)  # the span runs upward from the lowest level
    foreign: set[str] = set()
    if min(low, top) > L1_L2 and top > L1_L2:
        foreign.add("myelopathy")
    if low < T11_T12:
        foreign.add("cauda_equina_syndrome")
    if not C7_T1 <= low <= T12_L1:
        foreign.add("herniation_calcified")
    cervical = low < C7_T1
    if cervical or (diagnosis != "adult_deformity" and procedure != "fusion"):
        foreign |= LUMBOPELVIC
    if cervical or diagnosis != "fracture":
        foreign |= TLICS
    if low > C7_T1 or diagnosis != "fracture":
        foreign |= SLIC
    return foreign


def anatomy_case(level: str, levels: int, diagnosis: str, procedure: str) -> dict[str, Scalar]:
    """The sparse clinic case of one enumerated combination (also screened on every engine by
    tests/test_engines_differential.py)."""
    return {
        "age_years": 50,
        "sex": "female",
        "diagnosis": diagnosis,
        "lowest_level": level,
        "levels": levels,
        "planned_procedure": procedure,
    }


CASES = [
    (level, levels, diagnosis, procedure)
    for level in SEGMENTS
    for levels in (1, 3)
    if INDEX[level] - (levels - 1) >= 0
    for diagnosis in DIAGNOSES
    for procedure in PROCEDURES
]


def test_the_enumeration_covers_every_level_diagnosis_and_procedure() -> None:
    assert {c[0] for c in CASES} == set(SEGMENTS)
    assert {c[2] for c in CASES} == set(DIAGNOSES)
    assert {c[3] for c in CASES} == set(PROCEDURES)
    assert len(CASES) > 3000


@pytest.mark.parametrize("backend", ["durable", "reference"])
def test_no_question_about_an_anatomy_the_case_is_not_in(
    backend: str, evaluators: dict[str, Evaluator]
) -> None:
    wrong: list[str] = []
    for level, levels, diagnosis, procedure in CASES:
        values = anatomy_case(level, levels, diagnosis, procedure)
        result = screen_values("A-1", values, RULESET, evaluators[backend]).result
        foreign = foreign_fields(level, levels, diagnosis, procedure)
        for item in result.not_evaluable:
            asked = foreign & set(item.missing)
            if item.severity.value in ASKING and asked:
                wrong.append(
                    f"{level} x{levels} {diagnosis} {procedure}: {item.rule_id} asks {asked}"
                )
    assert not wrong, f"{len(wrong)} questions outside the case's anatomy, e.g.\n" + "\n".join(
        wrong[:15]
    )


def test_the_anatomy_definition_is_not_vacuous() -> None:
    """The forbidden sets do bite: a lumbar herniation may not be asked about cord signs or
    calcification, a cervical fracture about TLICS or lumbopelvic alignment."""
    lumbar = foreign_fields("L4-L5", 1, "disc_herniation", "discectomy")
    assert {"myelopathy", "herniation_calcified"} <= lumbar
    cervical = foreign_fields("C5-C6", 1, "fracture", "fusion")
    assert cervical >= TLICS
    assert cervical >= LUMBOPELVIC
    assert "cauda_equina_syndrome" in cervical
    assert not SLIC & cervical
    assert "myelopathy" not in foreign_fields("L3-L4", 3, "tumor", "decompression")
