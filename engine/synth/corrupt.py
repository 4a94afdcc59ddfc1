"""Planned corruptions: invalid values, or impossible pairs of values, in chosen rows.

The plan comes from its own stream (seed, 0xC0, n), so it is known without generating the
cohort and does not change the rows around it. Parquet keeps every column at its dictionary type,
so a wrong-type corruption ('thirty' in age_years) is stored there as an out-of-range number for
the same field instead (`typed_values`); every other corruption is the same in all formats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.synth.chunk import categorical, rng_for

CORRUPT_STREAM = 0xC0

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
    "bmi": ("27.5 kg", "obese"),  # not a decimal comma (27,5), which the normaliser reads
    "asa_class": ("II", "III"),
    "levels": ("two", "L4-L5"),
    "surgeon_mis_cases": ("50+", "many"),
    "dexa_t_score": ("-2.6 SD", "low"),
}
# values no reader may place: other spellings of a value (Male, HNP, L4/L5, TLIF) are read as
# it by engine.io.normalise, so they would not be corruptions
_BAD_ENUM: dict[str, tuple[str, ...]] = {
    "sex": ("1", "2", "9", "mal", "fem"),  # numeric codes differ by registry: never guessed
    "diagnosis": ("sciatica", "back pain", "claudication", "asd", "scoliosis"),
    "region": ("sacral", "thoracolumbar", "coccygeal", "pelvis", "spine"),
    "lowest_level": ("L5-L6", "S1-S2", "L5", "C0-C1", "T12"),
    "planned_procedure": ("surgery", "injection", "physiotherapy", "rhizotomy", "nerve block"),
    "mis_technique": ("endoscopic", "tubular", "OLIF", "minimally invasive", "robotic"),
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
    check_arguments(n, seed, 0.0, corrupt)
    count = round(n * corrupt)
    if count == 0:
        return {}
    rng = rng_for(seed, CORRUPT_STREAM, n)
    rows = np.sort(rng.choice(n, size=count, replace=False)) + 1
    kinds = list(_CORRUPTION_KINDS)
    kind_draw = categorical(rng, list(_CORRUPTION_KINDS.values()), count)
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


def check_arguments(n: int, seed: int, missing: float, corrupt: float) -> None:
    """ValueError naming the first argument out of range."""
    if n < 0:
        raise ValueError(f"n must be 0 or more, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    for name, share in (("missing", missing), ("corrupt", corrupt)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be a share from 0 to 1, got {share}")
