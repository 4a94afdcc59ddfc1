"""The case data dictionary as data: every case field with its type, unit and range.

docs/data-dictionary.md is the human copy; tests/test_dictionary.py holds the two in lock-step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FieldType(StrEnum):
    """Value types a case field can have."""

    string = "string"
    integer = "integer"
    number = "number"
    boolean = "boolean"
    enum = "enum"


class FieldGroup(StrEnum):
    """Where a field comes from: the patient record, the site, or the engine."""

    case = "case"
    setting = "setting"
    derived = "derived"


@dataclass(frozen=True)
class FieldSpec:
    """One field of the data dictionary."""

    name: str
    type: FieldType
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] = ()
    group: FieldGroup = FieldGroup.case

    @property
    def is_numeric(self) -> bool:
        return self.type in (FieldType.integer, FieldType.number)

    @property
    def domain(self) -> tuple[str | bool, ...]:
        """The finite set of values an enum or boolean field can take (empty for others)."""
        if self.type is FieldType.boolean:
            return (True, False)
        return self.values

    def expected(self) -> str:
        """Plain-words description of the values this field accepts, for error messages."""
        if self.type is FieldType.enum:
            return "one of " + ", ".join(self.values)
        if self.type is FieldType.boolean:
            return "true or false (also yes/no, 1/0)"
        if self.type is FieldType.string:
            return "1-64 characters from A-Z a-z 0-9 . _ -"
        kind = "a whole number" if self.type is FieldType.integer else "a number"
        unit = f" ({self.unit})" if self.unit else ""
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} from {_num(self.minimum)} to {_num(self.maximum)}{unit}"
        return f"{kind}{unit}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_I, _N, _B, _E = FieldType.integer, FieldType.number, FieldType.boolean, FieldType.enum

SEGMENTS: tuple[str, ...] = tuple(
    [f"C{i}-C{i + 1}" for i in range(1, 7)]
    + ["C7-T1"]
    + [f"T{i}-T{i + 1}" for i in range(1, 12)]
    + ["T12-L1"]
    + [f"L{i}-L{i + 1}" for i in range(1, 5)]
    + ["L5-S1"]
)

SCHWAB_GRADES = ("0", "+", "++")

MIS_TECHNIQUES = (
    "tubular_decompression",
    "tubular_discectomy",
    "endoscopic_discectomy",
    "endoscopic_decompression",
    "mis_tlif",
    "llif",
    "percutaneous_fixation",
    "vertebral_augmentation",
    "mis_tumor",
    "mis_deformity",
    "other",
)

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("case_id", FieldType.string),
    # Identity and context
    FieldSpec("age_years", _I, "years", 0, 120),
    FieldSpec("sex", _E, values=("female", "male", "other", "unknown")),
    FieldSpec("pregnant", _B),
    FieldSpec("bmi", _N, "kg/m²", 10, 90),
    FieldSpec("asa_class", _I, "ASA physical status", 1, 5),
    FieldSpec("diabetes", _B),
    FieldSpec("smoker", _B),
    FieldSpec("immunosuppressed", _B),
    FieldSpec("osteoporosis", _B),
    FieldSpec("dexa_t_score", _N, "SD", -7, 4),
    # Pathology and anatomy
    FieldSpec(
        "diagnosis",
        _E,
        values=(
            "disc_herniation",
            "spinal_stenosis",
            "spondylolisthesis",
            "degenerative_disc_disease",
            "adult_deformity",
            "fracture",
            "tumor",
            "infection",
            "other",
        ),
    ),
    FieldSpec("region", _E, values=("cervical", "thoracic", "lumbar")),
    FieldSpec("levels", _I, "motion segments to be treated", 1, 20),
    FieldSpec("lowest_level", _E, values=SEGMENTS),
    FieldSpec(
        "planned_procedure",
        _E,
        values=(
            "decompression",
            "discectomy",
            "fusion",
            "vertebral_augmentation",
            "corpectomy",
            "tumor_resection",
            "debridement",
            "other",
        ),
    ),
    FieldSpec("prior_surgery_same_level", _B),
    FieldSpec(
        "herniation_location", _E, values=("central", "paracentral", "foraminal", "extraforaminal")
    ),
    FieldSpec("herniation_calcified", _B),
    FieldSpec("herniation_migrated", _B),
    FieldSpec("slip_percent", _N, "% of caudal endplate", 0, 150),
    FieldSpec("coronal_cobb_deg", _N, "degrees", 0, 150),
    FieldSpec("sva_mm", _N, "mm", -150, 400),
    FieldSpec("pelvic_incidence_deg", _N, "degrees", 0, 120),
    FieldSpec("lumbar_lordosis_deg", _N, "degrees", -60, 120),
    FieldSpec("pelvic_tilt_deg", _N, "degrees", -30, 80),
    FieldSpec("lateral_listhesis_mm", _N, "mm", 0, 50),
    FieldSpec("curve_flexible", _B),
    FieldSpec("intradural_pathology", _B),
    FieldSpec("tlics_score", _I, "TLICS points", 0, 10),
    FieldSpec("sins_score", _I, "SINS points", 0, 18),
    FieldSpec("epidural_abscess", _B),
    # Red flags
    FieldSpec("cauda_equina_syndrome", _B),
    FieldSpec("progressive_neuro_deficit", _B),
    FieldSpec("myelopathy", _B),
    # Surgeon and setting
    FieldSpec(
        "surgeon_mis_cases",
        _I,
        "prior MIS cases of the planned type",
        0,
        100000,
        group=FieldGroup.setting,
    ),
    FieldSpec("navigation_available", _B, group=FieldGroup.setting),
    FieldSpec("mis_equipment_available", _B, group=FieldGroup.setting),
    # Technique and procedure details
    FieldSpec("mis_technique", _E, values=MIS_TECHNIQUES),
    FieldSpec("thoracic_kyphosis_deg", _N, "degrees, T4-T12", -30, 120),
    FieldSpec("herniation_canal_compromise_pct", _N, "% of canal", 0, 100),
    FieldSpec("herniation_migration_grade", _E, values=("none", "low", "high")),
    FieldSpec("gestational_age_weeks", _I, "weeks", 0, 42),
    # Fracture and tumour score components
    FieldSpec(
        "tlics_morphology",
        _E,
        values=("compression", "burst", "translation_rotation", "distraction"),
    ),
    FieldSpec("tlics_plc", _E, values=("intact", "indeterminate", "injured")),
    FieldSpec(
        "tlics_neuro",
        _E,
        values=("intact", "root", "complete_cord", "incomplete_cord", "cauda_equina"),
    ),
    FieldSpec("sins_location", _E, values=("junctional", "mobile", "semirigid", "rigid")),
    FieldSpec("sins_pain", _E, values=("mechanical", "occasional_nonmechanical", "none")),
    FieldSpec("sins_bone_lesion", _E, values=("lytic", "mixed", "blastic")),
    FieldSpec("sins_alignment", _E, values=("subluxation", "deformity", "normal")),
    FieldSpec("sins_collapse", _E, values=("gt50", "lt50", "none_gt50_involved", "none")),
    FieldSpec("sins_posterolateral", _E, values=("bilateral", "unilateral", "none")),
    # Infection, bleeding and cement
    FieldSpec("spondylodiscitis", _B),
    FieldSpec("posterior_wall_disrupted", _B),
    FieldSpec("coagulopathy_uncorrected", _B),
    FieldSpec("active_systemic_infection", _B),
    FieldSpec("cement_allergy", _B),
    FieldSpec("sepsis", _B),
    FieldSpec("intradural_ventral", _B),
    # Subaxial cervical injury (SLIC) components, for cervical fractures
    FieldSpec(
        "slic_morphology",
        _E,
        values=("none", "compression", "burst", "distraction", "rotation_translation"),
    ),
    FieldSpec("slic_dlc", _E, values=("intact", "indeterminate", "disrupted")),
    FieldSpec("slic_neuro", _E, values=("intact", "root", "complete_cord", "incomplete_cord")),
    FieldSpec("slic_cord_compression", _B),
    FieldSpec("slic_score", _I, "SLIC points", 0, 10),
    # Derived attributes: computed by rules/derived/, never supplied
    FieldSpec("pi_ll_mismatch_deg", _N, "degrees", group=FieldGroup.derived),
    FieldSpec("meyerding_grade", _I, "grade", 0, 5, group=FieldGroup.derived),
    FieldSpec("schwab_pi_ll", _E, values=SCHWAB_GRADES, group=FieldGroup.derived),
    FieldSpec("schwab_sva", _E, values=SCHWAB_GRADES, group=FieldGroup.derived),
    FieldSpec("schwab_pt", _E, values=SCHWAB_GRADES, group=FieldGroup.derived),
    FieldSpec("tlics_score_derived", _I, "TLICS points", 0, 10, group=FieldGroup.derived),
    FieldSpec(
        "tlics_band",
        _E,
        values=("nonoperative", "indeterminate", "operative"),
        group=FieldGroup.derived,
    ),
    FieldSpec("sins_score_derived", _I, "SINS points", 0, 18, group=FieldGroup.derived),
    FieldSpec(
        "sins_band",
        _E,
        values=("stable", "potentially_unstable", "unstable"),
        group=FieldGroup.derived,
    ),
    FieldSpec("misdef_class", _I, "class", 1, 3, group=FieldGroup.derived),
    FieldSpec(
        "bmi_class",
        _E,
        values=("underweight", "normal", "overweight", "obese_1", "obese_2", "obese_3"),
        group=FieldGroup.derived,
    ),
    FieldSpec("osteoporotic", _B, group=FieldGroup.derived),
    FieldSpec("includes_l4_l5", _B, group=FieldGroup.derived),
    FieldSpec("cord_at_level", _B, group=FieldGroup.derived),
    FieldSpec("lumbar_at_level", _B, group=FieldGroup.derived),
    FieldSpec("slic_score_derived", _I, "SLIC points", 0, 10, group=FieldGroup.derived),
    FieldSpec(
        "slic_band",
        _E,
        values=("nonoperative", "indeterminate", "operative"),
        group=FieldGroup.derived,
    ),
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {spec.name: spec for spec in FIELDS}
INPUT_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.group is not FieldGroup.derived)
DERIVED_FIELDS: frozenset[str] = frozenset(s.name for s in FIELDS if s.group is FieldGroup.derived)
SETTING_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.group is FieldGroup.setting)
