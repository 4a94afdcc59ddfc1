"""The case data dictionary as data: every case field with its type, unit, range and the words a
clinician reads for it (its label, and where the label alone is terse, a short question).

docs/data-dictionary.md is the human copy; tests/test_dictionary.py holds the two in lock-step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """One field of the data dictionary.

    `label` is the field as a clinician says it ("Cauda equina syndrome", "Slip (%)"): every
    report, the form and the card show it instead of the name. `question` ("Is a motor deficit
    getting worse?") says what is asked where the label alone is terse; empty when it adds
    nothing."""

    name: str
    type: FieldType
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] = ()
    group: FieldGroup = FieldGroup.case
    label: str = field(kw_only=True)
    question: str = field(default="", kw_only=True)
    # (value, words) for an enum value that reads wrongly with its underscores replaced
    words: tuple[tuple[str, str], ...] = field(default=(), kw_only=True)

    def value_words(self, value: str) -> str:
        """An enum value as a clinician reads it: 'mis_tlif' -> 'MIS TLIF', else the value
        with its underscores as spaces ('tubular_discectomy' -> 'tubular discectomy')."""
        return dict(self.words).get(value, value.replace("_", " "))

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
    FieldSpec("case_id", FieldType.string, label="Case id"),
    # Identity and context
    FieldSpec("age_years", _I, "years", 0, 120, label="Age (years)"),
    FieldSpec("sex", _E, values=("female", "male", "other", "unknown"), label="Sex"),
    FieldSpec("pregnant", _B, label="Pregnant", question="Is the patient pregnant?"),
    FieldSpec("bmi", _N, "kg/m²", 10, 90, label="Body mass index (BMI)"),
    FieldSpec("asa_class", _I, "ASA physical status", 1, 5, label="ASA physical status"),
    FieldSpec("diabetes", _B, label="Diabetes", question="Does the patient have diabetes?"),
    FieldSpec("smoker", _B, label="Current smoker", question="Does the patient smoke now?"),
    FieldSpec(
        "immunosuppressed",
        _B,
        label="Immunosuppressed",
        question="Is the patient immunosuppressed (drugs or disease)?",
    ),
    FieldSpec(
        "osteoporosis", _B, label="Osteoporosis", question="Has osteoporosis been diagnosed?"
    ),
    FieldSpec(
        "dexa_t_score",
        _N,
        "SD",
        -7,
        4,
        label="DEXA T-score",
        question="The lowest T-score of spine or hip",
    ),
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
        label="Diagnosis",
        question="The main indication for surgery",
        words=(("tumor", "tumour"),),
    ),
    FieldSpec("region", _E, values=("cervical", "thoracic", "lumbar"), label="Spinal region"),
    FieldSpec(
        "levels", _I, "motion segments to be treated", 1, 20, label="Motion segments to treat"
    ),
    FieldSpec(
        "lowest_level",
        _E,
        values=SEGMENTS,
        label="Lowest level to treat",
        question="The caudal-most segment to be treated",
    ),
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
        label="Planned procedure",
        question="The surgery being weighed",
        words=(("tumor_resection", "tumour resection"), ("other", "another procedure")),
    ),
    FieldSpec(
        "prior_surgery_same_level",
        _B,
        label="Previous surgery at this level",
        question="Has this level been operated on before?",
    ),
    FieldSpec(
        "herniation_location",
        _E,
        values=("central", "paracentral", "foraminal", "extraforaminal"),
        label="Disc herniation position",
    ),
    FieldSpec(
        "herniation_calcified",
        _B,
        label="Calcified disc herniation",
        question="Is the herniated disc calcified?",
    ),
    FieldSpec(
        "herniation_migrated",
        _B,
        label="Migrated or sequestered fragment",
        question="Has a disc fragment migrated or sequestered?",
    ),
    FieldSpec(
        "slip_percent",
        _N,
        "% of caudal endplate",
        0,
        150,
        label="Slip (%)",
        question="Slip as a percentage of the caudal endplate",
    ),
    FieldSpec(
        "coronal_cobb_deg",
        _N,
        "degrees",
        0,
        150,
        label="Coronal Cobb angle (°)",
        question="The largest coronal curve",
    ),
    FieldSpec(
        "sva_mm",
        _N,
        "mm",
        -150,
        400,
        label="Sagittal vertical axis (SVA, mm)",
        question="C7 plumb line to the posterior corner of S1",
    ),
    FieldSpec("pelvic_incidence_deg", _N, "degrees", 0, 120, label="Pelvic incidence (PI, °)"),
    FieldSpec(
        "lumbar_lordosis_deg",
        _N,
        "degrees",
        -60,
        120,
        label="Lumbar lordosis (LL, °)",
        question="Measured L1 to S1",
    ),
    FieldSpec("pelvic_tilt_deg", _N, "degrees", -30, 80, label="Pelvic tilt (PT, °)"),
    FieldSpec(
        "lateral_listhesis_mm",
        _N,
        "mm",
        0,
        50,
        label="Lateral listhesis (mm)",
        question="The largest lateral translation",
    ),
    FieldSpec(
        "curve_flexible",
        _B,
        label="Flexible curve",
        question="Does the curve correct substantially on bending films?",
    ),
    FieldSpec(
        "intradural_pathology", _B, label="Intradural lesion", question="Is the lesion intradural?"
    ),
    FieldSpec(
        "tlics_score",
        _I,
        "TLICS points",
        0,
        10,
        label="TLICS score",
        question="Thoracolumbar injury classification and severity score",
    ),
    FieldSpec(
        "sins_score",
        _I,
        "SINS points",
        0,
        18,
        label="SINS score",
        question="Spinal instability neoplastic score",
    ),
    FieldSpec(
        "epidural_abscess",
        _B,
        label="Spinal epidural abscess",
        question="Is there a spinal epidural abscess?",
    ),
    # Red flags
    FieldSpec(
        "cauda_equina_syndrome",
        _B,
        label="Cauda equina syndrome",
        question="New saddle anaesthesia, or bladder or bowel disturbance?",
    ),
    FieldSpec(
        "progressive_neuro_deficit",
        _B,
        label="Progressive neurological deficit",
        question="Is a motor deficit getting worse?",
    ),
    FieldSpec(
        "myelopathy", _B, label="Myelopathy", question="Are there signs of spinal cord compression?"
    ),
    # Surgeon and setting
    FieldSpec(
        "surgeon_mis_cases",
        _I,
        "prior MIS cases of the planned type",
        0,
        100000,
        group=FieldGroup.setting,
        label="Surgeon's MIS cases of this type",
        question="Minimally invasive cases of the planned type the surgeon has done",
    ),
    FieldSpec(
        "navigation_available",
        _B,
        group=FieldGroup.setting,
        label="3D navigation or robotics available",
        question="Is intra-operative 3D navigation or robotics available?",
    ),
    FieldSpec(
        "mis_equipment_available",
        _B,
        group=FieldGroup.setting,
        label="MIS equipment available",
        question="Are tubular retractors, an endoscope and a microscope available?",
    ),
    # Technique and procedure details
    FieldSpec(
        "mis_technique",
        _E,
        values=MIS_TECHNIQUES,
        label="MIS technique",
        question="The minimally invasive technique being weighed",
        words=(
            ("mis_tlif", "MIS TLIF"),
            ("llif", "LLIF"),
            ("mis_tumor", "MIS tumour surgery"),
            ("mis_deformity", "MIS deformity surgery"),
            ("other", "another technique"),
        ),
    ),
    FieldSpec(
        "thoracic_kyphosis_deg",
        _N,
        "degrees, T4-T12",
        -30,
        120,
        label="Thoracic kyphosis (T4-T12, °)",
    ),
    FieldSpec(
        "herniation_canal_compromise_pct",
        _N,
        "% of canal",
        0,
        100,
        label="Canal compromise by the herniation (%)",
    ),
    FieldSpec(
        "herniation_migration_grade",
        _E,
        values=("none", "low", "high"),
        label="Fragment migration grade",
    ),
    FieldSpec("gestational_age_weeks", _I, "weeks", 0, 42, label="Gestational age (weeks)"),
    # Fracture and tumour score components
    FieldSpec(
        "tlics_morphology",
        _E,
        values=("compression", "burst", "translation_rotation", "distraction"),
        label="TLICS injury morphology",
    ),
    FieldSpec(
        "tlics_plc",
        _E,
        values=("intact", "indeterminate", "injured"),
        label="Posterior ligamentous complex (TLICS)",
    ),
    FieldSpec(
        "tlics_neuro",
        _E,
        values=("intact", "root", "complete_cord", "incomplete_cord", "cauda_equina"),
        label="Neurological status (TLICS)",
    ),
    FieldSpec(
        "sins_location",
        _E,
        values=("junctional", "mobile", "semirigid", "rigid"),
        label="Lesion location (SINS)",
    ),
    FieldSpec(
        "sins_pain",
        _E,
        values=("mechanical", "occasional_nonmechanical", "none"),
        label="Pain (SINS)",
        words=(("occasional_nonmechanical", "occasional, not mechanical"),),
    ),
    FieldSpec(
        "sins_bone_lesion", _E, values=("lytic", "mixed", "blastic"), label="Bone lesion (SINS)"
    ),
    FieldSpec(
        "sins_alignment",
        _E,
        values=("subluxation", "deformity", "normal"),
        label="Radiographic alignment (SINS)",
    ),
    FieldSpec(
        "sins_collapse",
        _E,
        values=("gt50", "lt50", "none_gt50_involved", "none"),
        label="Vertebral body collapse (SINS)",
        words=(
            ("gt50", "more than 50 % collapse"),
            ("lt50", "less than 50 % collapse"),
            ("none_gt50_involved", "no collapse, more than 50 % of the body involved"),
            ("none", "none of these"),
        ),
    ),
    FieldSpec(
        "sins_posterolateral",
        _E,
        values=("bilateral", "unilateral", "none"),
        label="Posterolateral involvement (SINS)",
    ),
    # Infection, bleeding and cement
    FieldSpec(
        "spondylodiscitis",
        _B,
        label="Spondylodiscitis",
        question="Is there infection of the disc or vertebral body at this level?",
    ),
    FieldSpec(
        "posterior_wall_disrupted",
        _B,
        label="Posterior wall disrupted",
        question="Is the vertebral body's posterior wall disrupted?",
    ),
    FieldSpec(
        "coagulopathy_uncorrected",
        _B,
        label="Uncorrected coagulopathy",
        question="Is there a bleeding disorder not yet corrected?",
    ),
    FieldSpec(
        "active_systemic_infection",
        _B,
        label="Active systemic infection",
        question="Is there an active infection elsewhere in the body?",
    ),
    FieldSpec(
        "cement_allergy",
        _B,
        label="Allergy to bone cement or contrast",
        question="Is the patient allergic to bone cement or contrast?",
    ),
    FieldSpec("sepsis", _B, label="Sepsis", question="Is the patient septic?"),
    FieldSpec(
        "intradural_ventral",
        _B,
        label="Ventral or cord-adherent intradural lesion",
        question="Is the intradural lesion ventral or adherent to the cord?",
    ),
    # Subaxial cervical injury (SLIC) components, for cervical fractures
    FieldSpec(
        "slic_morphology",
        _E,
        values=("none", "compression", "burst", "distraction", "rotation_translation"),
        label="Injury morphology (SLIC)",
    ),
    FieldSpec(
        "slic_dlc",
        _E,
        values=("intact", "indeterminate", "disrupted"),
        label="Disco-ligamentous complex (SLIC)",
    ),
    FieldSpec(
        "slic_neuro",
        _E,
        values=("intact", "root", "complete_cord", "incomplete_cord"),
        label="Neurological status (SLIC)",
    ),
    FieldSpec(
        "slic_cord_compression",
        _B,
        label="Continuous cord compression with a deficit (SLIC)",
        question="Is there continuous cord compression with a neurological deficit?",
    ),
    FieldSpec(
        "slic_score",
        _I,
        "SLIC points",
        0,
        10,
        label="SLIC score",
        question="Subaxial cervical spine injury classification score",
    ),
    # Derived attributes: computed by rules/derived/, never supplied
    FieldSpec(
        "pi_ll_mismatch_deg", _N, "degrees", group=FieldGroup.derived, label="PI-LL mismatch (°)"
    ),
    FieldSpec(
        "meyerding_grade", _I, "grade", 0, 5, group=FieldGroup.derived, label="Meyerding grade"
    ),
    FieldSpec(
        "schwab_pi_ll",
        _E,
        values=SCHWAB_GRADES,
        group=FieldGroup.derived,
        label="SRS-Schwab PI-LL modifier",
    ),
    FieldSpec(
        "schwab_sva",
        _E,
        values=SCHWAB_GRADES,
        group=FieldGroup.derived,
        label="SRS-Schwab SVA modifier",
    ),
    FieldSpec(
        "schwab_pt",
        _E,
        values=SCHWAB_GRADES,
        group=FieldGroup.derived,
        label="SRS-Schwab pelvic tilt modifier",
    ),
    FieldSpec(
        "tlics_score_derived",
        _I,
        "TLICS points",
        0,
        10,
        group=FieldGroup.derived,
        label="TLICS score",
    ),
    FieldSpec(
        "tlics_band",
        _E,
        values=("nonoperative", "indeterminate", "operative"),
        group=FieldGroup.derived,
        label="TLICS band",
    ),
    FieldSpec(
        "sins_score_derived", _I, "SINS points", 0, 18, group=FieldGroup.derived, label="SINS score"
    ),
    FieldSpec(
        "sins_band",
        _E,
        values=("stable", "potentially_unstable", "unstable"),
        group=FieldGroup.derived,
        label="SINS band",
    ),
    FieldSpec("misdef_class", _I, "class", 1, 3, group=FieldGroup.derived, label="MISDEF class"),
    FieldSpec(
        "bmi_class",
        _E,
        values=("underweight", "normal", "overweight", "obese_1", "obese_2", "obese_3"),
        group=FieldGroup.derived,
        label="WHO BMI class",
        words=(
            ("obese_1", "obese class I"),
            ("obese_2", "obese class II"),
            ("obese_3", "obese class III"),
        ),
    ),
    FieldSpec("osteoporotic", _B, group=FieldGroup.derived, label="Osteoporotic"),
    FieldSpec(
        "includes_l4_l5", _B, group=FieldGroup.derived, label="L4-L5 among the treated levels"
    ),
    FieldSpec(
        "cord_at_level", _B, group=FieldGroup.derived, label="Spinal cord at the treated levels"
    ),
    FieldSpec("lumbar_at_level", _B, group=FieldGroup.derived, label="Lumbar treated level"),
    FieldSpec(
        "slic_score_derived", _I, "SLIC points", 0, 10, group=FieldGroup.derived, label="SLIC score"
    ),
    FieldSpec(
        "slic_band",
        _E,
        values=("nonoperative", "indeterminate", "operative"),
        group=FieldGroup.derived,
        label="SLIC band",
    ),
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {spec.name: spec for spec in FIELDS}
INPUT_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.group is not FieldGroup.derived)
DERIVED_FIELDS: frozenset[str] = frozenset(s.name for s in FIELDS if s.group is FieldGroup.derived)
SETTING_FIELDS: tuple[str, ...] = tuple(s.name for s in FIELDS if s.group is FieldGroup.setting)
