"""Deterministic synthetic cohorts of raw case rows, for tests, the demo and benchmarks.

Rows are made column by column in numpy batches of CHUNK_ROWS so that a million rows take seconds,
and every draw comes from a PCG64 stream seeded by (seed, chunk) through SeedSequence, never from
hash order, so the same arguments give the same rows on any machine with the same numpy.
Category draws use our own inverse-CDF on uniform floats rather than Generator.choice, and
continuous values are rounded (whole units, or one decimal), so they do not hinge on the last bit
of a platform's libm. Missing values and corruptions come from their own streams: changing
`missing` or `corrupt` blanks or spoils cells of the same underlying cohort instead of drawing a
new one, which is what lets tests measure the missing share and know the corrupt rows.

Parquet keeps every column at its dictionary type (int64, double, bool, string), so a wrong-type
corruption ('thirty' in age_years) cannot be stored there; in Parquet (and with
generate_rows(typed=True)) such a row holds an out-of-range number for the same field instead,
see Corruption.typed_values. Every other corruption is identical in all three formats.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.errors import UsageError

CHUNK_ROWS = 50_000
FORMATS = ("csv", "jsonl", "parquet")
ID_PREFIX = "SYN-"

Floats = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.int16]
Flags = npt.NDArray[np.int8]

_OPTIONAL = tuple(name for name in INPUT_FIELDS if name != "case_id")
_TYPES = {name: FIELDS_BY_NAME[name].type for name in INPUT_FIELDS}
_CORRUPT_STREAM = 0xC0
_MISSING_STREAM = 1
_BASE_STREAM = 0

# --- the clinical mix ----------------------------------------------------------------------------

DIAGNOSIS_MIX: dict[str, float] = {
    "disc_herniation": 0.30,
    "spinal_stenosis": 0.27,
    "spondylolisthesis": 0.12,
    "degenerative_disc_disease": 0.08,
    "adult_deformity": 0.06,
    "fracture": 0.06,
    "tumor": 0.04,
    "infection": 0.03,
    "other": 0.04,
}

_REGION_MIX: dict[str, dict[str, float]] = {  # cervical, thoracic, lumbar
    "disc_herniation": {"cervical": 0.13, "thoracic": 0.02, "lumbar": 0.85},
    "spinal_stenosis": {"cervical": 0.23, "thoracic": 0.02, "lumbar": 0.75},
    "spondylolisthesis": {"cervical": 0.02, "lumbar": 0.98},
    "degenerative_disc_disease": {"cervical": 0.2, "lumbar": 0.8},
    "adult_deformity": {"thoracic": 0.15, "lumbar": 0.85},
    "fracture": {"cervical": 0.08, "thoracic": 0.47, "lumbar": 0.45},
    "tumor": {"cervical": 0.15, "thoracic": 0.6, "lumbar": 0.25},
    "infection": {"cervical": 0.1, "thoracic": 0.3, "lumbar": 0.6},
    "other": {"cervical": 0.25, "thoracic": 0.15, "lumbar": 0.6},
}

_LEVELS_BY_REGION: dict[str, dict[str, float]] = {
    "cervical": {"C3-C4": 8, "C4-C5": 14, "C5-C6": 40, "C6-C7": 33, "C7-T1": 5},
    "thoracic": {
        "T1-T2": 1,
        "T2-T3": 1,
        "T3-T4": 2,
        "T4-T5": 2,
        "T5-T6": 3,
        "T6-T7": 4,
        "T7-T8": 5,
        "T8-T9": 7,
        "T9-T10": 8,
        "T10-T11": 10,
        "T11-T12": 12,
        "T12-L1": 10,
    },
    "lumbar": {"L1-L2": 2, "L2-L3": 5, "L3-L4": 15, "L4-L5": 45, "L5-S1": 33},
}

_LEVELS_BY_DIAGNOSIS: dict[tuple[str, str], dict[str, float]] = {
    ("disc_herniation", "lumbar"): {"L1-L2": 1, "L2-L3": 2, "L3-L4": 7, "L4-L5": 45, "L5-S1": 45},
    ("spinal_stenosis", "lumbar"): {"L1-L2": 2, "L2-L3": 8, "L3-L4": 22, "L4-L5": 55, "L5-S1": 13},
    ("spondylolisthesis", "lumbar"): {"L3-L4": 7, "L4-L5": 60, "L5-S1": 33},
    ("adult_deformity", "lumbar"): {"L2-L3": 5, "L3-L4": 15, "L4-L5": 30, "L5-S1": 50},
    ("adult_deformity", "thoracic"): {"T10-T11": 30, "T11-T12": 30, "T12-L1": 40},
    ("fracture", "cervical"): {"C4-C5": 20, "C5-C6": 35, "C6-C7": 30, "C7-T1": 15},
    ("fracture", "thoracic"): {
        "T5-T6": 2,
        "T6-T7": 3,
        "T7-T8": 4,
        "T8-T9": 5,
        "T9-T10": 6,
        "T10-T11": 10,
        "T11-T12": 30,
        "T12-L1": 40,
    },
    ("fracture", "lumbar"): {"L1-L2": 50, "L2-L3": 25, "L3-L4": 15, "L4-L5": 10},
    ("infection", "lumbar"): {"L1-L2": 10, "L2-L3": 20, "L3-L4": 25, "L4-L5": 30, "L5-S1": 15},
}

_AGE: dict[str, tuple[float, float, float, float]] = {  # mean, sd, lowest, highest
    "disc_herniation": (44, 12, 16, 85),
    "spinal_stenosis": (67, 10, 35, 90),
    "degenerative_disc_disease": (47, 11, 20, 80),
    "adult_deformity": (64, 11, 25, 90),
    "tumor": (61, 12, 18, 90),
    "infection": (63, 13, 18, 90),
    "other": (55, 16, 16, 90),
}

_PRIOR_SURGERY = {
    "disc_herniation": 0.10,
    "spinal_stenosis": 0.12,
    "spondylolisthesis": 0.08,
    "degenerative_disc_disease": 0.10,
    "adult_deformity": 0.15,
    "fracture": 0.0,
    "tumor": 0.05,
    "infection": 0.10,
    "other": 0.10,
}

_PROGRESSIVE_DEFICIT = {
    "disc_herniation": 0.03,
    "spinal_stenosis": 0.025,
    "spondylolisthesis": 0.015,
    "degenerative_disc_disease": 0.005,
    "adult_deformity": 0.02,
    "fracture": 0.02,
    "tumor": 0.12,
    "infection": 0.10,
    "other": 0.03,
}

_CAUDA_EQUINA_LUMBAR = {
    "disc_herniation": 0.035,
    "spinal_stenosis": 0.01,
    "spondylolisthesis": 0.005,
    "degenerative_disc_disease": 0.003,
    "adult_deformity": 0.003,
    "fracture": 0.0,  # from tlics_neuro instead
    "tumor": 0.02,
    "infection": 0.03,
    "other": 0.005,
}

_MYELOPATHY_CORD = {  # cervical, thoracic
    "disc_herniation": (0.25, 0.4),
    "spinal_stenosis": (0.5, 0.5),
    "spondylolisthesis": (0.15, 0.1),
    "degenerative_disc_disease": (0.15, 0.1),
    "adult_deformity": (0.1, 0.05),
    "fracture": (0.0, 0.0),  # from tlics_neuro instead
    "tumor": (0.3, 0.3),
    "infection": (0.25, 0.2),
    "other": (0.15, 0.1),
}

_TLICS_POINTS: dict[str, dict[str, int]] = {
    "tlics_morphology": {"compression": 1, "burst": 2, "translation_rotation": 3, "distraction": 4},
    "tlics_plc": {"intact": 0, "indeterminate": 2, "injured": 3},
    "tlics_neuro": {
        "intact": 0,
        "root": 2,
        "complete_cord": 2,
        "incomplete_cord": 3,
        "cauda_equina": 3,
    },
}

_SINS_POINTS: dict[str, dict[str, int]] = {
    "sins_location": {"junctional": 3, "mobile": 2, "semirigid": 1, "rigid": 0},
    "sins_pain": {"mechanical": 3, "occasional_nonmechanical": 1, "none": 0},
    "sins_bone_lesion": {"lytic": 2, "mixed": 1, "blastic": 0},
    "sins_alignment": {"subluxation": 4, "deformity": 2, "normal": 0},
    "sins_collapse": {"gt50": 3, "lt50": 2, "none_gt50_involved": 1, "none": 0},
    "sins_posterolateral": {"bilateral": 3, "unilateral": 1, "none": 0},
}

_SINS_MIX: dict[str, dict[str, float]] = {
    "sins_pain": {"mechanical": 0.45, "occasional_nonmechanical": 0.35, "none": 0.2},
    "sins_bone_lesion": {"lytic": 0.55, "mixed": 0.3, "blastic": 0.15},
    "sins_alignment": {"subluxation": 0.1, "deformity": 0.25, "normal": 0.65},
    "sins_collapse": {"gt50": 0.2, "lt50": 0.3, "none_gt50_involved": 0.2, "none": 0.3},
    "sins_posterolateral": {"bilateral": 0.2, "unilateral": 0.35, "none": 0.45},
}


def _sins_location(segment: str) -> str:
    """SINS location of the vertebra above a segment (O-C2, C7-T2, T11-L1, L5 are junctional)."""
    vertebra = segment.split("-")[0]
    if vertebra in ("C1", "C2", "C7", "T1", "T2", "T11", "T12", "L1", "L5"):
        return "junctional"
    if vertebra[0] == "T":
        return "semirigid"
    return "mobile"


# --- corruptions ---------------------------------------------------------------------------------

_OUT_OF_RANGE: dict[str, tuple[float, float]] = {
    "age_years": (-3, 230),
    "bmi": (2.7, 900.0),
    "asa_class": (0, 6),
    "levels": (0, 25),
    "surgeon_mis_cases": (-1, 250000),
    "dexa_t_score": (-25.0, 9.5),
}
_WRONG_TYPE: dict[str, tuple[str, str]] = {
    "age_years": ("thirty", "forty-two"),
    "bmi": ("27,5", "obese"),
    "asa_class": ("II", "III"),
    "levels": ("two", "L4-L5"),
    "surgeon_mis_cases": ("50+", "many"),
    "dexa_t_score": ("-2,6", "low"),
}
_BAD_ENUM: dict[str, tuple[str, ...]] = {
    "sex": ("Male", "Female", "M", "F", "woman"),
    "diagnosis": (
        "Disc_herniation",
        "herniated disc",
        "stenosis",
        "Spondylolisthesis",
        "scoliosis",
    ),
    "region": ("Lumbar", "Cervical", "sacral", "lumbosacral", "thoracolumbar"),
    "lowest_level": ("L4/L5", "l5-s1", "L5-L6", "S1-S2", "C5C6"),
    "planned_procedure": ("Discectomy", "laminectomy", "TLIF", "Fusion", "kyphoplasty"),
    "mis_technique": ("XLIF", "Mis_tlif", "endoscopic", "tubular", "OLIF"),
}
_COMBINATIONS: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = (
    ("pregnant", (("sex", "male"), ("pregnant", True))),
    ("mis_technique", (("planned_procedure", "discectomy"), ("mis_technique", "llif"))),
    (
        "tlics_score",
        (
            ("tlics_morphology", "burst"),
            ("tlics_plc", "injured"),
            ("tlics_neuro", "intact"),
            ("tlics_score", 3),  # the components add up to 5
        ),
    ),
)
_CORRUPTION_KINDS = {
    "out_of_range": 0.35,
    "wrong_type": 0.25,
    "bad_enum": 0.25,
    "combination": 0.15,
}


@dataclass(frozen=True)
class Corruption:
    """One deliberately invalid value, or impossible pair of values, planted in one row."""

    row: int
    kind: str
    field: str
    values: tuple[tuple[str, object], ...]
    typed_values: tuple[tuple[str, object], ...]


def corruption_plan(n: int, seed: int, corrupt: float = 0.01) -> dict[int, Corruption]:
    """The corruptions of a cohort by 1-based row number, computed without generating it."""
    _check(n, seed, 0.0, corrupt)
    count = round(n * corrupt)
    if count == 0:
        return {}
    rng = _rng(seed, _CORRUPT_STREAM, n)
    rows = np.sort(rng.choice(n, size=count, replace=False)) + 1
    kinds = list(_CORRUPTION_KINDS)
    kind_draw = _categorical(rng, list(_CORRUPTION_KINDS.values()), count)
    pick = rng.random((count, 2))
    plan: dict[int, Corruption] = {}
    for row, kind_index, (first, second) in zip(
        rows.tolist(), kind_draw.tolist(), pick.tolist(), strict=True
    ):
        kind = kinds[kind_index]
        if kind == "combination":
            name, pairs = _COMBINATIONS[int(first * len(_COMBINATIONS))]
            plan[row] = Corruption(row, kind, name, pairs, pairs)
            continue
        table: Mapping[str, Sequence[object]]
        table = _BAD_ENUM if kind == "bad_enum" else _OUT_OF_RANGE
        names = list(table)
        name = names[int(first * len(names))]
        side = int(second * len(table[name]))
        typed = ((name, table[name][side]),)
        shown = ((name, _WRONG_TYPE[name][side]),) if kind == "wrong_type" else typed
        plan[row] = Corruption(row, kind, name, shown, typed)
    return plan


def corrupt_row_numbers(n: int, seed: int, corrupt: float = 0.01) -> set[int]:
    """The 1-based numbers of the rows that hold a corrupt value, computed without generating."""
    return set(corruption_plan(n, seed, corrupt))


# --- generation ----------------------------------------------------------------------------------


def _check(n: int, seed: int, missing: float, corrupt: float) -> None:
    if n < 0:
        raise ValueError(f"n must be 0 or more, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    for name, share in (("missing", missing), ("corrupt", corrupt)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be a share from 0 to 1, got {share}")


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def _categorical(
    rng: np.random.Generator, weights: Sequence[float], size: int
) -> npt.NDArray[np.intp]:
    """Indices drawn with the given relative weights (inverse CDF of uniform floats)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(size), side="right")


def _code(name: str, value: str) -> int:
    return FIELDS_BY_NAME[name].values.index(value)


@dataclass
class _Cols:
    """One chunk's columns: numbers (NaN unknown), flags and enum codes (-1 unknown)."""

    size: int
    num: dict[str, Floats] = field(default_factory=dict)
    flag: dict[str, Flags] = field(default_factory=dict)
    code: dict[str, Codes] = field(default_factory=dict)
    overrides: list[tuple[int, Corruption]] = field(default_factory=list)
    first_row: int = 1

    @classmethod
    def empty(cls, size: int, first_row: int) -> _Cols:
        cols = cls(size, first_row=first_row)
        for name in _OPTIONAL:
            kind = _TYPES[name]
            if kind is FieldType.boolean:
                cols.flag[name] = np.full(size, -1, dtype=np.int8)
            elif kind is FieldType.enum:
                cols.code[name] = np.full(size, -1, dtype=np.int16)
            else:
                cols.num[name] = np.full(size, np.nan)
        return cols


class _Draw:
    """Vectorised draws for one chunk, writing into its columns where a mask says so."""

    def __init__(self, rng: np.random.Generator, cols: _Cols) -> None:
        self.rng = rng
        self.cols = cols
        self.size = cols.size

    def chance(self, p: float | Floats) -> Mask:
        return self.rng.random(self.size) < p

    def normal(self, mean: float | Floats, sd: float) -> Floats:
        return mean + sd * self.rng.standard_normal(self.size)

    def pick(self, name: str, weights: Mapping[str, float]) -> Codes:
        """Enum codes of `name` for every row, drawn with the given weights."""
        index = _categorical(self.rng, list(weights.values()), self.size)
        codes = np.array([_code(name, v) for v in weights], dtype=np.int16)
        return codes[index]

    def pick_into(self, target: Codes, rows: Mask, name: str, weights: Mapping[str, float]) -> None:
        """Draw enum codes of `name` for the selected rows only, into `target`."""
        index = _categorical(self.rng, list(weights.values()), int(rows.sum()))
        codes = np.array([_code(name, v) for v in weights], dtype=np.int16)
        target[rows] = codes[index]

    def number(self, name: str, values: Floats, where: Mask) -> None:
        self.cols.num[name][where] = values[where]

    def boolean(self, name: str, values: Mask, where: Mask) -> None:
        self.cols.flag[name][where] = values[where].astype(np.int8)

    def enum(self, name: str, codes: Codes, where: Mask) -> None:
        self.cols.code[name][where] = codes[where]


def _generate(seed: int, index: int, size: int, missing: float) -> _Cols:
    """The rows of chunk `index`: draw the diagnosis first, then everything consistent with it."""
    cols = _Cols.empty(size, first_row=index * CHUNK_ROWS + 1)
    g = _Draw(_rng(seed, index, _BASE_STREAM), cols)
    every = np.ones(size, dtype=np.bool_)

    diagnosis = g.pick("diagnosis", DIAGNOSIS_MIX)
    g.enum("diagnosis", diagnosis, every)
    dx = {name: diagnosis == _code("diagnosis", name) for name in DIAGNOSIS_MIX}

    region = np.full(size, -1, dtype=np.int16)
    for name, rows in dx.items():
        g.pick_into(region, rows, "region", _REGION_MIX[name])
    g.enum("region", region, g.chance(0.98))
    cervical, thoracic, lumbar = (
        region == _code("region", r) for r in ("cervical", "thoracic", "lumbar")
    )
    by_region = {"cervical": cervical, "thoracic": thoracic, "lumbar": lumbar}

    lowest = np.full(size, -1, dtype=np.int16)
    for name, rows in dx.items():
        for rname, in_region in by_region.items():
            weights = _LEVELS_BY_DIAGNOSIS.get((name, rname), _LEVELS_BY_REGION[rname])
            g.pick_into(lowest, rows & in_region, "lowest_level", weights)
    g.enum("lowest_level", lowest, g.chance(0.97))
    l5_s1 = lowest == _code("lowest_level", "L5-S1")

    # subtypes that shape age, sex and the findings recorded
    osteoporotic_fracture = dx["fracture"] & ~cervical & g.chance(0.45)
    intradural_tumor = dx["tumor"] & g.chance(0.25)
    metastasis = dx["tumor"] & ~intradural_tumor
    infection_kind = g.rng.random(size)
    discitis = dx["infection"] & (infection_kind < 0.8)
    abscess = dx["infection"] & (infection_kind >= 0.5)
    isthmic = dx["spondylolisthesis"] & l5_s1
    thoracolumbar_fracture = dx["fracture"] & ~cervical

    female_share = np.full(size, 0.48)
    female_share[dx["adult_deformity"]] = 0.68
    female_share[osteoporotic_fracture] = 0.7
    u = g.rng.random(size)
    sex = np.where(
        u < female_share,
        _code("sex", "female"),
        np.where(
            u < 0.975,
            _code("sex", "male"),
            np.where(u < 0.98, _code("sex", "other"), _code("sex", "unknown")),
        ),
    ).astype(np.int16)
    g.enum("sex", sex, every)
    female = sex == _code("sex", "female")

    age = np.full(size, np.nan)
    for name, (mean, sd, low, high) in _AGE.items():
        age[dx[name]] = np.clip(g.normal(mean, sd), low, high)[dx[name]]
    age[dx["spondylolisthesis"]] = np.where(
        isthmic, np.clip(g.normal(36, 13), 14, 80), np.clip(g.normal(64, 9), 35, 90)
    )[dx["spondylolisthesis"]]
    age[dx["fracture"]] = np.where(
        osteoporotic_fracture, np.clip(g.normal(75, 8), 55, 90), np.clip(g.normal(42, 16), 16, 90)
    )[dx["fracture"]]
    age = np.rint(age)  # 90 stands for 90 or older (HIPAA Safe Harbor)
    g.number("age_years", age, every)

    childbearing = female & (age >= 18) & (age <= 45)
    pregnant = childbearing & g.chance(0.02)
    g.boolean("pregnant", pregnant, (childbearing & g.chance(0.6)) | pregnant)
    g.boolean("pregnant", pregnant, female & (age > 45) & (age <= 55) & g.chance(0.3))
    weeks = np.rint(5 + 31 * g.rng.random(size))
    g.number("gestational_age_weeks", weeks, pregnant & g.chance(0.9))

    bmi_median = np.where(dx["tumor"] | dx["infection"], 25.5, 27.8)
    bmi = np.clip(
        np.round(np.exp(np.log(bmi_median) + 0.19 * g.rng.standard_normal(size)), 1), 17, 50
    ).astype(np.float64)
    g.number("bmi", bmi, g.chance(0.95))

    asa_u = g.rng.random(size)
    asa = np.where(
        age < 40,
        1 + (asa_u > 0.45) + (asa_u > 0.9) + (asa_u > 0.99),
        np.where(
            age <= 65,
            1 + (asa_u > 0.2) + (asa_u > 0.75) + (asa_u > 0.98),
            1 + (asa_u > 0.05) + (asa_u > 0.5) + (asa_u > 0.95),
        ),
    ).astype(np.float64)
    sicker = (dx["tumor"] | dx["infection"]) & g.chance(0.3)
    asa = np.minimum(asa + sicker, 4)
    g.number("asa_class", asa, g.chance(0.75))

    diabetes_p = np.clip(0.05 + 0.004 * (age - 40) + 0.012 * (bmi - 27), 0.02, 0.5)
    diabetes_p = diabetes_p + 0.15 * dx["infection"]
    g.boolean("diabetes", g.chance(diabetes_p), g.chance(0.85))
    smoker_p = np.where(age < 50, 0.24, np.where(age < 65, 0.18, 0.10))
    g.boolean("smoker", g.chance(smoker_p), g.chance(0.85))
    immuno_p = np.where(dx["infection"], 0.2, np.where(dx["tumor"], 0.15, 0.04))
    g.boolean("immunosuppressed", g.chance(immuno_p), g.chance(0.6))

    osteo_p = np.where(
        female & (age >= 65),
        0.3,
        np.where(female & (age >= 50), 0.12, np.where(~female & (age >= 70), 0.1, 0.02)),
    )
    osteo_p[osteoporotic_fracture] = 0.7
    osteoporosis = g.chance(osteo_p)
    g.boolean("osteoporosis", osteoporosis, g.chance(np.where(dx["fracture"], 0.9, 0.65)))
    t_score = np.where(
        osteoporosis,
        np.clip(np.round(g.normal(-3.1, 0.5), 1), -5.5, -2.5),
        np.clip(np.round(g.normal(-0.9, 0.9), 1), -2.4, 3.0),
    )
    dexa_p = np.where(osteoporosis | osteoporotic_fracture, 0.5, 0.12)
    g.number("dexa_t_score", t_score, g.chance(dexa_p))

    # disc herniation
    herniation = dx["disc_herniation"]
    location = g.pick(
        "herniation_location",
        {"central": 0.15, "paracentral": 0.6, "foraminal": 0.18, "extraforaminal": 0.07},
    )
    g.enum("herniation_location", location, herniation & g.chance(0.85))
    calcified_p = np.where(thoracic, 0.45, np.where(cervical, 0.06, 0.04))
    g.boolean("herniation_calcified", g.chance(calcified_p), herniation & g.chance(0.7))
    grade = g.pick("herniation_migration_grade", {"none": 0.75, "low": 0.15, "high": 0.10})
    migrated = grade != _code("herniation_migration_grade", "none")
    g.boolean("herniation_migrated", migrated, herniation & g.chance(0.75))
    g.enum("herniation_migration_grade", grade, herniation & g.chance(0.55))
    central = location == _code("herniation_location", "central")
    paracentral = location == _code("herniation_location", "paracentral")
    compromise = np.where(
        central, g.normal(55, 18), np.where(paracentral, g.normal(35, 12), g.normal(18, 8))
    )
    compromise = np.clip(np.rint(compromise + 10 * thoracic), 3, 95)
    g.number("herniation_canal_compromise_pct", compromise, herniation & g.chance(0.6))

    # spondylolisthesis: mostly low grade, high grade mainly isthmic L5-S1
    high_grade = isthmic & g.chance(0.2) | dx["spondylolisthesis"] & ~isthmic & g.chance(0.01)
    slip = np.where(
        isthmic,
        np.clip(g.normal(27, 11), 5, 50),
        np.where(cervical, np.clip(g.normal(12, 5), 2, 30), np.clip(g.normal(17, 7), 3, 45)),
    )
    slip = np.where(high_grade, 51 + 59 * g.rng.random(size), slip)
    g.number("slip_percent", np.rint(slip), dx["spondylolisthesis"] & g.chance(0.85))

    # adult deformity: sagittal parameters follow one severity, coronal ones the Cobb angle
    deformity = dx["adult_deformity"]
    films = deformity & g.chance(0.85)
    severity = g.rng.standard_normal(size)
    incidence = np.clip(np.rint(g.normal(55, 10)), 30, 90)
    mismatch = np.clip(14 + 12 * severity + g.normal(0, 5), -5, 60)
    lordosis = np.clip(np.rint(incidence - mismatch), -20, 90)
    tilt = np.clip(np.rint(0.25 * incidence + 0.4 * (incidence - lordosis) + g.normal(0, 4)), 0, 60)
    sva = np.clip(np.rint(10 + 3.2 * (incidence - lordosis) + g.normal(0, 25)), -60, 350)
    cobb = np.clip(np.rint(28 + 5 * severity + g.normal(0, 13)), 5, 95)
    listhesis = np.clip(np.rint(0.15 * cobb - 1 + g.normal(0, 2.5)), 0, 25)
    flexible_p = np.clip(0.85 - 0.012 * (cobb - 15) - 0.005 * (age - 60), 0.1, 0.9)
    kyphosis = np.clip(np.rint(g.normal(38, 12)), 0, 90)
    sagittal = films | deformity & g.chance(0.5)
    g.number("pelvic_incidence_deg", incidence, sagittal & g.chance(0.95))
    g.number("lumbar_lordosis_deg", lordosis, sagittal & g.chance(0.95))
    g.number("pelvic_tilt_deg", tilt, sagittal & g.chance(0.9))
    g.number("sva_mm", sva, films & g.chance(0.9))
    g.number("coronal_cobb_deg", cobb, deformity & g.chance(0.95))
    g.number("lateral_listhesis_mm", listhesis, deformity & g.chance(0.65))
    g.boolean("curve_flexible", g.chance(flexible_p), deformity & g.chance(0.55))
    g.number("thoracic_kyphosis_deg", kyphosis, films & g.chance(0.45))

    # fracture: TLICS components, with the total (their exact sum) sometimes supplied
    trauma = thoracolumbar_fracture & ~osteoporotic_fracture
    morphology = np.where(
        osteoporotic_fracture,
        g.pick(
            "tlics_morphology",
            {"compression": 0.75, "burst": 0.23, "translation_rotation": 0.02},
        ),
        g.pick(
            "tlics_morphology",
            {"compression": 0.3, "burst": 0.45, "translation_rotation": 0.15, "distraction": 0.1},
        ),
    ).astype(np.int16)
    compression = morphology == _code("tlics_morphology", "compression")
    burst = morphology == _code("tlics_morphology", "burst")
    plc = np.where(
        compression,
        g.pick("tlics_plc", {"intact": 0.85, "indeterminate": 0.1, "injured": 0.05}),
        np.where(
            burst,
            g.pick("tlics_plc", {"intact": 0.5, "indeterminate": 0.25, "injured": 0.25}),
            g.pick("tlics_plc", {"indeterminate": 0.1, "injured": 0.9}),
        ),
    ).astype(np.int16)
    neuro = np.where(
        compression,
        g.pick("tlics_neuro", {"intact": 0.93, "root": 0.05, "incomplete_cord": 0.02}),
        np.where(
            burst,
            g.pick(
                "tlics_neuro",
                {
                    "intact": 0.7,
                    "root": 0.1,
                    "incomplete_cord": 0.12,
                    "complete_cord": 0.04,
                    "cauda_equina": 0.04,
                },
            ),
            g.pick(
                "tlics_neuro",
                {
                    "intact": 0.35,
                    "root": 0.1,
                    "incomplete_cord": 0.25,
                    "complete_cord": 0.2,
                    "cauda_equina": 0.1,
                },
            ),
        ),
    ).astype(np.int16)
    cauda_level = lumbar & (lowest != _code("lowest_level", "L1-L2"))
    neuro = np.where(
        (neuro == _code("tlics_neuro", "cauda_equina")) & ~cauda_level,
        _code("tlics_neuro", "incomplete_cord"),
        neuro,
    ).astype(np.int16)
    tlics = np.zeros(size)
    for name, codes in (
        ("tlics_morphology", morphology),
        ("tlics_plc", plc),
        ("tlics_neuro", neuro),
    ):
        g.enum(name, codes, thoracolumbar_fracture & g.chance(0.9))
        points = np.array([_TLICS_POINTS[name][v] for v in FIELDS_BY_NAME[name].values])
        tlics += points[codes]
    g.number("tlics_score", tlics, thoracolumbar_fracture & g.chance(0.45))
    wall_p = np.where(burst, 0.85, np.where(compression, 0.03, 0.45))
    wall_p = np.where(metastasis, 0.35, wall_p)
    g.boolean(
        "posterior_wall_disrupted", g.chance(wall_p), (dx["fracture"] | metastasis) & g.chance(0.55)
    )
    cord_injury = thoracolumbar_fracture & np.isin(
        neuro, [_code("tlics_neuro", "incomplete_cord"), _code("tlics_neuro", "complete_cord")]
    )
    fracture_cauda = thoracolumbar_fracture & (neuro == _code("tlics_neuro", "cauda_equina"))

    # tumour: SINS for metastases (location from the level), intradural lesions otherwise
    segment_location = np.array(
        [_code("sins_location", _sins_location(s)) for s in FIELDS_BY_NAME["lowest_level"].values],
        dtype=np.int16,
    )
    sins_location = segment_location[lowest]
    sins = np.zeros(size)
    sins_names = ("sins_location", *_SINS_MIX)
    for name in sins_names:
        codes = sins_location if name == "sins_location" else g.pick(name, _SINS_MIX[name])
        g.enum(name, codes, metastasis & g.chance(0.85))
        points = np.array([_SINS_POINTS[name][v] for v in FIELDS_BY_NAME[name].values])
        sins += points[codes]
    g.number("sins_score", sins, metastasis & g.chance(0.4))
    g.boolean("intradural_pathology", intradural_tumor, intradural_tumor | g.chance(0.3))
    g.boolean("intradural_ventral", g.chance(0.3), intradural_tumor & g.chance(0.7))

    # infection
    g.boolean("spondylodiscitis", discitis, dx["infection"] & g.chance(0.9))
    g.boolean("epidural_abscess", abscess, dx["infection"] & g.chance(0.9))

    # planned procedure, then the levels it spans
    procedure = np.full(size, -1, dtype=np.int16)

    def plan(rows: Mask, weights: Mapping[str, float]) -> None:
        todo = rows & (procedure < 0)
        g.pick_into(procedure, todo, "planned_procedure", weights)

    plan(herniation & lumbar, {"discectomy": 0.93, "decompression": 0.04, "fusion": 0.03})
    plan(herniation & cervical, {"fusion": 0.55, "discectomy": 0.35, "decompression": 0.1})
    plan(herniation, {"discectomy": 0.6, "fusion": 0.3, "decompression": 0.1})
    plan(dx["spinal_stenosis"] & cervical, {"decompression": 0.45, "fusion": 0.55})
    plan(dx["spinal_stenosis"], {"decompression": 0.82, "fusion": 0.18})
    plan(high_grade, {"fusion": 1.0})
    plan(dx["spondylolisthesis"], {"fusion": 0.82, "decompression": 0.18})
    plan(dx["degenerative_disc_disease"], {"fusion": 0.75, "discectomy": 0.1, "other": 0.15})
    plan(deformity, {"fusion": 0.9, "decompression": 0.1})
    plan(dx["fracture"] & cervical, {"fusion": 0.85, "corpectomy": 0.15})
    plan(compression & osteoporotic_fracture, {"vertebral_augmentation": 0.85, "fusion": 0.15})
    plan(compression & trauma, {"fusion": 0.6, "vertebral_augmentation": 0.4})
    plan(
        burst & osteoporotic_fracture,
        {"fusion": 0.75, "corpectomy": 0.08, "vertebral_augmentation": 0.17},
    )
    plan(burst & trauma, {"fusion": 0.88, "corpectomy": 0.12})
    plan(dx["fracture"], {"fusion": 0.9, "corpectomy": 0.1})
    plan(intradural_tumor, {"tumor_resection": 1.0})
    plan(
        metastasis,
        {
            "tumor_resection": 0.25,
            "fusion": 0.35,
            "vertebral_augmentation": 0.2,
            "corpectomy": 0.1,
            "decompression": 0.1,
        },
    )
    plan(abscess & ~discitis, {"decompression": 0.6, "debridement": 0.4})
    plan(abscess, {"debridement": 0.5, "fusion": 0.35, "decompression": 0.15})
    plan(dx["infection"], {"debridement": 0.55, "fusion": 0.45})
    plan(every, {"decompression": 0.35, "fusion": 0.3, "other": 0.35})
    g.enum("planned_procedure", procedure, g.chance(0.97))
    is_proc = {
        name: procedure == _code("planned_procedure", name)
        for name in FIELDS_BY_NAME["planned_procedure"].values
    }

    level_weights: dict[str, dict[int, float]] = {
        "disc_herniation": {1: 92, 2: 8},
        "spinal_stenosis": {1: 45, 2: 30, 3: 17, 4: 8},
        "spondylolisthesis": {1: 85, 2: 15},
        "degenerative_disc_disease": {1: 70, 2: 25, 3: 5},
        "adult_deformity": {
            2: 5,
            3: 15,
            4: 20,
            5: 18,
            6: 12,
            7: 10,
            8: 8,
            9: 5,
            10: 4,
            12: 2,
            14: 1,
        },
        "fracture": {2: 60, 4: 40},
        "tumor": {1: 30, 2: 35, 3: 20, 4: 15},
        "infection": {1: 60, 2: 35, 3: 5},
        "other": {1: 50, 2: 30, 3: 20},
    }
    levels = np.zeros(size)
    for name, spans in level_weights.items():
        counts = np.array(list(spans), dtype=np.float64)
        levels[dx[name]] = counts[_categorical(g.rng, list(spans.values()), size)][dx[name]]
    levels += dx["spinal_stenosis"] & cervical & g.chance(0.5)
    levels[is_proc["vertebral_augmentation"]] = 1
    levels = np.clip(levels, 1, np.where(lowest >= 0, lowest + 1, 20))
    g.number("levels", levels, g.chance(0.97))

    # technique: allowed for the procedure (rules/constraints.yaml CON-002), else not yet chosen
    technique = np.full(size, -1, dtype=np.int16)

    def choose(rows: Mask, weights: Mapping[str, float]) -> None:
        todo = rows & (technique < 0)
        g.pick_into(technique, todo, "mis_technique", weights)

    fusion = is_proc["fusion"]
    choose(
        is_proc["discectomy"] & lumbar,
        {"tubular_discectomy": 0.45, "endoscopic_discectomy": 0.5, "other": 0.05},
    )
    choose(
        is_proc["discectomy"],
        {"tubular_discectomy": 0.4, "endoscopic_discectomy": 0.45, "other": 0.15},
    )
    choose(
        is_proc["decompression"],
        {"tubular_decompression": 0.6, "endoscopic_decompression": 0.35, "other": 0.05},
    )
    choose(fusion & cervical, {"other": 1.0})
    choose(fusion & (dx["fracture"] | dx["tumor"]), {"percutaneous_fixation": 0.9, "other": 0.1})
    choose(fusion & dx["infection"], {"percutaneous_fixation": 0.6, "mis_tlif": 0.3, "other": 0.1})
    choose(fusion & deformity, {"mis_deformity": 0.4, "llif": 0.3, "mis_tlif": 0.2, "other": 0.1})
    choose(fusion & thoracic, {"percutaneous_fixation": 0.5, "other": 0.5})
    choose(
        fusion & l5_s1,
        {
            "mis_tlif": 0.79,
            "llif": 0.03,
            "percutaneous_fixation": 0.06,
            "mis_deformity": 0.02,
            "other": 0.1,
        },
    )
    choose(
        fusion,
        {
            "mis_tlif": 0.62,
            "llif": 0.2,
            "percutaneous_fixation": 0.06,
            "mis_deformity": 0.02,
            "other": 0.1,
        },
    )
    choose(is_proc["vertebral_augmentation"], {"vertebral_augmentation": 1.0})
    choose(is_proc["corpectomy"] & cervical, {"other": 1.0})
    choose(
        is_proc["corpectomy"] & dx["tumor"],
        {"mis_tumor": 0.55, "percutaneous_fixation": 0.3, "other": 0.15},
    )
    choose(is_proc["corpectomy"], {"percutaneous_fixation": 0.7, "other": 0.3})
    choose(
        is_proc["tumor_resection"], {"mis_tumor": 0.7, "percutaneous_fixation": 0.2, "other": 0.1}
    )
    choose(
        is_proc["debridement"],
        {
            "tubular_decompression": 0.25,
            "endoscopic_decompression": 0.35,
            "percutaneous_fixation": 0.3,
            "other": 0.1,
        },
    )
    choose(
        every,
        {
            "other": 0.5,
            "tubular_decompression": 0.2,
            "endoscopic_decompression": 0.15,
            "mis_tlif": 0.15,
        },
    )
    # no MIS TLIF in the cervical spine (CON-004): fixed after the draws, which stay as they were
    technique[cervical & (technique == _code("mis_technique", "mis_tlif"))] = _code(
        "mis_technique", "other"
    )
    g.enum(
        "mis_technique", technique, g.chance(np.where(is_proc["vertebral_augmentation"], 0.9, 0.75))
    )

    # history, red flags and what augmentation candidates are screened for
    prior_p = np.zeros(size)
    cauda_p = np.zeros(size)
    deficit_p = np.zeros(size)
    myelopathy_p = np.zeros(size)
    for name, rows in dx.items():
        prior_p[rows] = _PRIOR_SURGERY[name]
        cauda_p[rows & lumbar] = _CAUDA_EQUINA_LUMBAR[name]
        deficit_p[rows] = _PROGRESSIVE_DEFICIT[name]
        myelopathy_p[rows & cervical] = _MYELOPATHY_CORD[name][0]
        myelopathy_p[rows & thoracic] = _MYELOPATHY_CORD[name][1]
    cauda_p[fracture_cauda] = 0.7
    deficit_p[cord_injury] = 0.25
    myelopathy_p[cord_injury & ~lumbar] = 0.5
    g.boolean("prior_surgery_same_level", g.chance(prior_p), g.chance(0.9))
    g.boolean("cauda_equina_syndrome", g.chance(cauda_p), g.chance(0.9))
    g.boolean("progressive_neuro_deficit", g.chance(deficit_p), g.chance(0.9))
    g.boolean("myelopathy", g.chance(myelopathy_p), g.chance(0.9))

    augmentation = is_proc["vertebral_augmentation"]
    g.boolean(
        "coagulopathy_uncorrected", g.chance(0.01), g.chance(np.where(augmentation, 0.6, 0.3))
    )
    g.boolean("cement_allergy", g.chance(0.005), augmentation & g.chance(0.5))
    g.boolean(
        "active_systemic_infection",
        g.chance(np.where(dx["infection"], 0.45, 0.02)),
        (dx["infection"] & g.chance(0.7)) | (augmentation & g.chance(0.5)),
    )
    g.boolean(
        "sepsis",
        g.chance(np.where(dx["infection"], 0.12, 0.003)),
        (dx["infection"] & g.chance(0.6)) | (augmentation & g.chance(0.5)),
    )

    # the surgeon and site, known for only some rows
    site = g.chance(0.35)
    experience = np.clip(np.rint(np.exp(np.log(60) + 1.1 * g.rng.standard_normal(size))), 0, 3000)
    g.number("surgeon_mis_cases", experience, site & g.chance(0.9))
    g.boolean("navigation_available", g.chance(0.45), site & g.chance(0.95))
    g.boolean("mis_equipment_available", g.chance(0.85), (site & g.chance(0.95)) | g.chance(0.05))

    _blank(cols, _rng(seed, index, _MISSING_STREAM), missing)
    return cols


def _blank(cols: _Cols, rng: np.random.Generator, missing: float) -> None:
    """Blank each known optional value with probability `missing`, one draw per field and row."""
    if missing <= 0.0:
        return
    for name in _OPTIONAL:
        blank = rng.random(cols.size) < missing
        if name in cols.num:
            cols.num[name][blank] = np.nan
        elif name in cols.flag:
            cols.flag[name][blank] = -1
        else:
            cols.code[name][blank] = -1


def _chunks(n: int, seed: int, missing: float, corrupt: float) -> Iterator[_Cols]:
    _check(n, seed, missing, corrupt)
    plan = sorted(corruption_plan(n, seed, corrupt).items())
    position = 0
    for index, start in enumerate(range(0, n, CHUNK_ROWS)):
        size = min(CHUNK_ROWS, n - start)
        cols = _generate(seed, index, size, missing)
        while position < len(plan) and plan[position][0] <= start + size:
            row, corruption = plan[position]
            cols.overrides.append((row - start - 1, corruption))
            position += 1
        yield cols


# --- columns for output --------------------------------------------------------------------------

_BOOL_OBJECTS = np.array([None, False, True], dtype=object)
_ENUM_OBJECTS = {
    name: np.array([*FIELDS_BY_NAME[name].values, None], dtype=object)
    for name in _OPTIONAL
    if _TYPES[name] is FieldType.enum
}


def _object_columns(cols: _Cols, typed: bool) -> list[list[object]]:
    """Python values per field in INPUT_FIELDS order (None unknown), corruptions applied."""
    first = cols.first_row
    columns: list[list[object]] = [
        [f"{ID_PREFIX}{row:07d}" for row in range(first, first + cols.size)]
    ]
    for name in _OPTIONAL:
        kind = _TYPES[name]
        values: npt.NDArray[Any]
        if kind is FieldType.boolean:
            values = _BOOL_OBJECTS[cols.flag[name] + 1]
        elif kind is FieldType.enum:
            values = _ENUM_OBJECTS[name][cols.code[name]]
        else:
            numbers = cols.num[name]
            unknown = np.isnan(numbers)
            if kind is FieldType.integer:
                values = np.where(unknown, 0, numbers).astype(np.int64).astype(object)
            else:
                values = numbers.astype(object)
            values[unknown] = None
        columns.append(values.tolist())
    position = {name: i for i, name in enumerate(INPUT_FIELDS)}
    for offset, corruption in cols.overrides:
        for name, value in corruption.typed_values if typed else corruption.values:
            columns[position[name]][offset] = value
    return columns


def generate_rows(
    n: int, seed: int, *, missing: float = 0.05, corrupt: float = 0.01, typed: bool = False
) -> Iterator[dict[str, object]]:
    """Yield n raw case rows: every input field of the data dictionary, None where unknown.

    `typed=True` gives the rows as Parquet holds them (wrong-type corruptions become
    out-of-range numbers), so that a reader of the Parquet file can compare like with like.
    """
    for cols in _chunks(n, seed, missing, corrupt):
        for values in zip(*_object_columns(cols, typed), strict=True):
            yield dict(zip(INPUT_FIELDS, values, strict=True))


# --- files ---------------------------------------------------------------------------------------


def _text(value: object) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _write_csv(handle: Any, chunks: Iterator[_Cols]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(INPUT_FIELDS)
    for cols in chunks:
        text = [list(map(_text, column)) for column in _object_columns(cols, typed=False)]
        writer.writerows(zip(*text, strict=True))


def _write_jsonl(handle: Any, chunks: Iterator[_Cols]) -> None:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    for cols in chunks:
        lines = [
            dumps({k: v for k, v in zip(INPUT_FIELDS, values, strict=True) if v is not None})
            for values in zip(*_object_columns(cols, typed=False), strict=True)
        ]
        handle.write("\n".join(lines) + "\n")


def _arrow_schema() -> Any:
    import pyarrow as pa

    types = {
        FieldType.integer: pa.int64(),
        FieldType.number: pa.float64(),
        FieldType.boolean: pa.bool_(),
        FieldType.enum: pa.string(),
        FieldType.string: pa.string(),
    }
    return pa.schema([pa.field(name, types[_TYPES[name]]) for name in INPUT_FIELDS])


def _arrow_table(cols: _Cols, schema: Any) -> Any:
    """One chunk as a typed Arrow table; string columns go through Python, the rest stay numpy."""
    import pyarrow as pa

    num = {name: values.copy() for name, values in cols.num.items()}
    flag = {name: values.copy() for name, values in cols.flag.items()}
    text: dict[str, list[object]] = {}
    for offset, corruption in cols.overrides:
        for name, value in corruption.typed_values:
            if name in num:
                num[name][offset] = float(value)  # type: ignore[arg-type]  # numbers by design
            elif name in flag:
                flag[name][offset] = 1 if value else 0
            else:
                text.setdefault(name, _ENUM_OBJECTS[name][cols.code[name]].tolist())
                text[name][offset] = value
    first = cols.first_row
    arrays: list[Any] = [
        pa.array([f"{ID_PREFIX}{row:07d}" for row in range(first, first + cols.size)], pa.string())
    ]
    for name in _OPTIONAL:
        kind = _TYPES[name]
        if kind is FieldType.boolean:
            arrays.append(pa.array(flag[name] == 1, pa.bool_(), mask=flag[name] < 0))
        elif kind is FieldType.enum:
            column = text.get(name)
            if column is None:
                column = _ENUM_OBJECTS[name][cols.code[name]].tolist()
            arrays.append(pa.array(column, pa.string()))
        else:
            unknown = np.isnan(num[name])
            if kind is FieldType.integer:
                whole = np.where(unknown, 0, num[name]).astype(np.int64)
                arrays.append(pa.array(whole, pa.int64(), mask=unknown))
            else:
                arrays.append(pa.array(num[name], pa.float64(), mask=unknown))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write_parquet(path: Path, chunks: Iterator[_Cols]) -> None:
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for cols in chunks:
            writer.write_table(_arrow_table(cols, schema))


class CohortFormatError(UsageError, ValueError):
    """An output name whose format cannot be told (a user error, and a ValueError as before)."""


def cohort_format(path: Path, format: str | None = None) -> str:
    """The output format: the one given, else from the extension (.csv, .jsonl, .parquet)."""
    chosen = format if format is not None else path.suffix.lower().lstrip(".")
    chosen = {"ndjson": "jsonl", "pq": "parquet"}.get(chosen, chosen)
    if chosen not in FORMATS:
        raise CohortFormatError(
            f"{path}: cannot tell the cohort format from the extension; "
            f"use one of {', '.join('.' + f for f in FORMATS)}"
        )
    return chosen


def write_cohort(
    path: Path,
    n: int,
    seed: int,
    *,
    missing: float = 0.05,
    corrupt: float = 0.01,
    format: str | None = None,
) -> int:
    """Write a synthetic cohort as CSV, JSONL or Parquet; return the number of rows written.

    Chunks are written as they are made, so memory stays flat however many rows; the file appears
    under its name only when complete (temp file in the same directory, then os.replace).
    """
    path = Path(path)
    chosen = cohort_format(path, format)
    chunks = _chunks(n, seed, missing, corrupt)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if chosen == "parquet":
            _write_parquet(temp, chunks)
        else:
            with open(temp, "w", encoding="utf-8", newline="") as handle:
                writer: Callable[[Any, Iterator[_Cols]], None]
                writer = _write_csv if chosen == "csv" else _write_jsonl
                writer(handle, chunks)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return n
