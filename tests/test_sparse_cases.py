"""Only what applies is asked: sparse clinic-style cases stay decidable (issue: rule base, item 8).

Each case has what a clinic records for everyone (age, sex, BMI, diagnosis, region, levels, lowest
level, planned procedure, the red-flag booleans, whether the level was operated on before), a site
profile, and only the fields its diagnosis genuinely needs (a fusion: the pelvic incidence and
lumbar lordosis, since a caution on their mismatch can change the verdict). None may end
insufficient_data, and no conditional consideration may name a technique that the planned
procedure rules out.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.dictionary import MIS_TECHNIQUES
from engine.evaluate.base import Evaluator
from engine.models import Verdict
from engine.screen import screen_values
from tests.conftest import RULESET

SITE = {"mis_equipment_available": True, "navigation_available": True, "surgeon_mis_cases": 100}
EVERYONE = {
    "cauda_equina_syndrome": False,
    "progressive_neuro_deficit": False,
    "myelopathy": False,
    # revision surgery is a caution (ACC-015) that can change the verdict: asked of everyone
    "prior_surgery_same_level": False,
}
FUSION = {"pelvic_incidence_deg": 50, "lumbar_lordosis_deg": 45}  # ACC-004, a caution
TECHNIQUES_FOR = {
    c_when.rhs.value: allowed  # type: ignore[attr-defined]
    for constraint in RULESET.constraints
    if constraint.spec.name == "mis_technique"
    for c_when, allowed in constraint.narrowings
}
DIAGNOSES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "disc_herniation": (
        {
            "region": "lumbar",
            "lowest_level": "L5-S1",
            "herniation_location": "paracentral",
            "herniation_calcified": False,
            "herniation_migrated": False,
            "herniation_canal_compromise_pct": 30,
        },
        ["discectomy"],
    ),
    "spinal_stenosis": ({"region": "lumbar", "lowest_level": "L4-L5"}, ["decompression", "fusion"]),
    "spondylolisthesis": (
        {"region": "lumbar", "lowest_level": "L4-L5", "slip_percent": 20},
        ["decompression", "fusion"],
    ),
    "degenerative_disc_disease": ({"region": "lumbar", "lowest_level": "L5-S1"}, ["fusion"]),
    "adult_deformity": (
        {
            "region": "lumbar",
            "lowest_level": "L5-S1",
            "levels": 4,
            "sva_mm": 30,
            "pelvic_incidence_deg": 50,
            "lumbar_lordosis_deg": 45,
            "pelvic_tilt_deg": 15,
            "coronal_cobb_deg": 15,
            "lateral_listhesis_mm": 2,
            "curve_flexible": True,
        },
        ["fusion"],
    ),
    "fracture": (
        {
            "region": "thoracic",
            "lowest_level": "T12-L1",
            "tlics_morphology": "burst",
            "tlics_plc": "injured",
            "tlics_neuro": "intact",
            # an augmentation asks infection of the level whatever the diagnosis (ACC-018 1.1.0)
            "spondylodiscitis": False,
        },
        ["fusion", "vertebral_augmentation"],
    ),
    "tumor": (
        {
            "region": "thoracic",
            "lowest_level": "T7-T8",
            "sins_location": "semirigid",
            "sins_pain": "mechanical",
            "sins_bone_lesion": "lytic",
            "sins_alignment": "normal",
            "sins_collapse": "lt50",
            "sins_posterolateral": "unilateral",
            "intradural_pathology": False,
        },
        ["tumor_resection", "corpectomy", "fusion"],
    ),
    "infection": (
        {
            "region": "lumbar",
            "lowest_level": "L3-L4",
            "epidural_abscess": False,
            "spondylodiscitis": True,
        },
        ["debridement"],
    ),
    "other": ({"region": "lumbar", "lowest_level": "L4-L5"}, ["decompression", "other"]),
}
SPARSE = [
    pytest.param(diagnosis, procedure, sex, id=f"{diagnosis}-{procedure}-{sex}")
    for diagnosis, (_, procedures) in DIAGNOSES.items()
    for procedure in procedures
    for sex in ("female", "male")
]


def sparse_case(diagnosis: str, procedure: str, sex: str) -> dict[str, Any]:
    extra, _ = DIAGNOSES[diagnosis]
    case = {
        "age_years": 62 if sex == "female" else 45,
        "sex": sex,
        "bmi": 27.5,
        "diagnosis": diagnosis,
        "levels": 1,
        "planned_procedure": procedure,
        **EVERYONE,
    }
    if procedure == "fusion":
        case.update(FUSION)
    case.update(extra)
    if diagnosis == "fracture" and procedure == "vertebral_augmentation":
        case.update(
            {
                "tlics_morphology": "compression",
                "tlics_plc": "intact",
                "posterior_wall_disrupted": False,
                "sepsis": False,
                "active_systemic_infection": False,
                "coagulopathy_uncorrected": False,
                "cement_allergy": False,
            }
        )
    return case


@pytest.mark.parametrize("backend", ["durable", "reference"])
@pytest.mark.parametrize(("diagnosis", "procedure", "sex"), SPARSE)
def test_sparse_case_is_decidable_and_asks_only_what_applies(
    diagnosis: str, procedure: str, sex: str, backend: str, evaluators: dict[str, Evaluator]
) -> None:
    values = sparse_case(diagnosis, procedure, sex)
    result = screen_values("SPARSE", values, RULESET, evaluators[backend], site=SITE).result
    blocking = [(n.rule_id, n.missing) for n in result.not_evaluable if n.can_change_verdict]
    assert result.verdict is not Verdict.insufficient_data, blocking
    allowed = TECHNIQUES_FOR.get(procedure)
    if allowed is not None:
        for item in result.conditional:
            named = {t for t in MIS_TECHNIQUES if f'"{t}"' in item.scope}
            assert named <= allowed, (item.rule_id, item.scope)
    for outcome in result.not_evaluable:
        assert "pregnant" not in outcome.missing or (sex == "female" and values["age_years"] <= 55)
