"""A messy registry export and its clean twin, for the mapping file's worked example.

The clean twin is the synthetic generator's own output (lumbar cases, no corruption); the export
writes the same cases as a lumbar spine registry would: its own column names, integer record
ids, ICD-10-CM codes or abbreviations for the diagnosis, comorbidity codes in one cell, level
spellings such as `L4/5`, `Y`/`N`, roman ASA grades, weight in pounds and height in inches
instead of the BMI, the SVA in centimetres, decimal commas, and columns no screen reads. Every
fact of a twin row is in its export row and nothing more: screened with the shipped mapping
(cases/registry/mapping.yaml), the two give the same verdict row for row
(tests/test_mapping.py). Regenerate with `python -m engine.synth.registry cases/registry`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engine.dictionary import INPUT_FIELDS
from engine.synth import generate_rows
from engine.synth.chunk import rng_for

SEED = 2026
DRAWN = 3000  # rows generated; the lumbar ones (about 2,100) make the example
STYLE_STREAM = 0x5E  # the export's own choices (spellings, codes) come from their own stream
LB, INCH = 0.45359237, 0.0254


def _yn(value: Any, rng: np.random.Generator) -> str:
    return "" if value is None else ("Y" if value else "N")


def _yes(value: Any, rng: np.random.Generator) -> str:
    return "" if value is None else ("Yes" if value else "No")


def _comma(value: Any, rng: np.random.Generator) -> str:
    return "" if value is None else str(value).replace(".", ",")


def _plain(value: Any, rng: np.random.Generator) -> str:
    return "" if value is None else str(value)


def _words(value: Any, rng: np.random.Generator) -> str:
    """An enum value as a person writes it: `translation_rotation` as `Translation rotation`."""
    return "" if value is None else str(value).replace("_", " ").capitalize()


def _pick(choices: dict[str, tuple[str, ...]]) -> Callable[[Any, np.random.Generator], str]:
    def spell(value: Any, rng: np.random.Generator) -> str:
        if value is None:
            return ""
        options = choices[str(value)]
        return options[int(rng.integers(len(options)))]

    return spell


_SEX = _pick(
    {"male": ("M", "Male"), "female": ("F", "Female"), "other": ("Other",), "unknown": ("Unknown",)}
)
_ASA = _pick({"1": ("I",), "2": ("II",), "3": ("III",), "4": ("IV",), "5": ("V",)})
_LEVEL = _pick(
    {
        "L1-L2": ("L1/2", "L1-L2", "L1-2"),
        "L2-L3": ("L2/3", "L2-L3", "L2-3"),
        "L3-L4": ("L3/4", "L3-L4", "L3-4", "l3-l4"),
        "L4-L5": ("L4/5", "L4-L5", "L4-5", "L45", "l4-l5"),
        "L5-S1": ("L5/S1", "L5-S1", "L5S1", "l5-s1"),
    }
)
_PROCEDURE = _pick(
    {
        "discectomy": ("Microdiscectomy", "Discectomy"),
        "decompression": ("Laminectomy", "Decompression", "Laminotomy"),
        "fusion": ("Fusion", "PLIF", "Spinal fusion"),
        "vertebral_augmentation": ("Kyphoplasty", "Vertebroplasty"),
        "corpectomy": ("Corpectomy",),
        "tumor_resection": ("Tumour resection",),
        "debridement": ("Debridement",),
        "other": ("Other",),
    }
)
_TECHNIQUE = _pick(
    {
        "tubular_decompression": ("Tubular decompression",),
        "tubular_discectomy": ("Tubular discectomy",),
        "endoscopic_discectomy": ("Endoscopic discectomy",),
        "endoscopic_decompression": ("Endoscopic decompression",),
        "mis_tlif": ("MIS-TLIF", "MIS TLIF"),
        "llif": ("LLIF", "XLIF"),
        "percutaneous_fixation": ("Percutaneous fixation",),
        "vertebral_augmentation": ("Vertebral augmentation",),
        "mis_tumor": ("MIS tumor",),
        "mis_deformity": ("MIS deformity",),
        "other": ("Other",),
    }
)
# a diagnosis as text, for the rows whose primary diagnosis is not coded
_DIAGNOSIS_TEXT = {
    "disc_herniation": ("HNP", "Disc herniation", "LDH"),
    "spinal_stenosis": ("LSS", "Spinal stenosis"),
    "spondylolisthesis": ("Spondy", "Spondylolisthesis"),
    "degenerative_disc_disease": ("DDD",),
    "adult_deformity": ("Adult spinal deformity",),
    "fracture": ("Fx", "Vertebral fracture"),
    "tumor": ("Mets", "Tumour"),
    "infection": ("Discitis",),
    "other": ("Other",),
}
CODED_SHARE = 0.75  # primary diagnoses written as ICD-10-CM codes; the rest as text
COMORBIDITY_CODE_SHARE = 0.5  # a comorbidity also coded under Secondary Dx


def _diagnosis_code(row: dict[str, Any], rng: np.random.Generator) -> str | None:
    """An ICD-10-CM code for a lumbar case's diagnosis that says no more than the twin row
    (checked against the release by tests/test_mapping.py), or None for `other`."""
    at_s1 = row["lowest_level"] == "L5-S1"
    dx = row["diagnosis"]
    options: tuple[str, ...]
    if dx == "disc_herniation":
        options = ("M51.17",) if at_s1 else ("M51.16", "M51.26")
    elif dx == "spinal_stenosis":
        options = ("M48.061", "M48.062")
    elif dx == "spondylolisthesis":
        options = ("M43.17",) if at_s1 else ("M43.16",)
    elif dx == "degenerative_disc_disease":
        options = ("M51.37",) if at_s1 else ("M51.369",)
    elif dx == "adult_deformity":
        options = ("M41.26", "M40.36", "M41.86")
    elif dx == "fracture":  # the osteoporotic fracture code also says osteoporosis
        options = ("M80.08XA",) if row["osteoporosis"] is True else ("S32.001A", "S32.009A")
    elif dx == "tumor":
        options = ("C79.51", "C41.2")
    elif dx == "infection":  # codes that also say spondylodiscitis or abscess only when so
        if row["epidural_abscess"] is True:
            options = ("G06.1",)
        elif row["spondylodiscitis"] is True:
            options = ("M46.46",)
        else:
            options = ("M46.26",)
    else:
        return None
    return options[int(rng.integers(len(options)))]


_COMORBIDITY_CODES = (
    ("diabetes", "E11.9"),
    ("osteoporosis", "M81.0"),
    ("immunosuppressed", "D84.9"),
    ("cauda_equina_syndrome", "G83.4"),
)


def _diagnoses(row: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    """(Primary Dx, Secondary Dx) of a row."""
    primary = ""
    if row["diagnosis"] is not None:
        code = _diagnosis_code(row, rng) if rng.random() < CODED_SHARE else None
        if code is None:
            options = _DIAGNOSIS_TEXT[row["diagnosis"]]
            code = options[int(rng.integers(len(options)))]
        primary = code
    secondary = [
        code
        for name, code in _COMORBIDITY_CODES
        if row[name] is True and rng.random() < COMORBIDITY_CODE_SHARE
    ]
    return primary, "; ".join(secondary)


def _weight_height(bmi: float | None, rng: np.random.Generator) -> tuple[str, str]:
    """Weight (lb, one decimal) and height (whole inches) whose BMI, to one decimal, is `bmi`."""
    if bmi is None:
        return "", ""
    inches = int(rng.integers(60, 77))
    metres = inches * INCH
    pounds = round(bmi * metres**2 / LB, 1)
    for step in (0.0, 0.1, -0.1, 0.2, -0.2, 0.3, -0.3):
        candidate = round(pounds + step, 1)
        if round(candidate * LB / metres**2, 1) == bmi:
            return str(candidate), str(inches)
    raise AssertionError(f"no weight in pounds gives BMI {bmi} at {inches} in")


def _sva_cm(value: Any, rng: np.random.Generator) -> str:
    return "" if value is None else str(round(value / 10, 2)).replace(".", ",")


# export column -> (twin field, how it is written); Primary/Secondary Dx and weight and height
# are written apart, region is the mapping's constant (a lumbar registry)
COLUMNS: tuple[tuple[str, str, Callable[[Any, np.random.Generator], str]], ...] = (
    ("Age at surgery", "age_years", _plain),
    ("Gender", "sex", _SEX),
    ("Pregnant", "pregnant", _yn),
    ("Gestation (weeks)", "gestational_age_weeks", _plain),
    ("ASA grade", "asa_class", _ASA),
    ("Diabetes", "diabetes", _yn),
    ("Smoker", "smoker", _yes),
    ("Immunosuppressed", "immunosuppressed", _yn),
    ("Osteoporosis", "osteoporosis", _yn),
    ("DEXA T-score", "dexa_t_score", _comma),
    ("No. of levels", "levels", _plain),
    ("Index level", "lowest_level", _LEVEL),
    ("Procedure", "planned_procedure", _PROCEDURE),
    ("MIS technique", "mis_technique", _TECHNIQUE),
    ("Prior surgery (same level)", "prior_surgery_same_level", _yn),
    ("Herniation location", "herniation_location", _words),
    ("Calcified disc", "herniation_calcified", _yn),
    ("Migrated fragment", "herniation_migrated", _yn),
    ("Migration grade", "herniation_migration_grade", _words),
    ("Canal compromise (%)", "herniation_canal_compromise_pct", _comma),
    ("Slip (%)", "slip_percent", _comma),
    ("Cobb angle (deg)", "coronal_cobb_deg", _comma),
    ("SVA (cm)", "sva_mm", _sva_cm),
    ("PI (deg)", "pelvic_incidence_deg", _comma),
    ("LL (deg)", "lumbar_lordosis_deg", _comma),
    ("PT (deg)", "pelvic_tilt_deg", _comma),
    ("TK (deg)", "thoracic_kyphosis_deg", _comma),
    ("Lateral listhesis (mm)", "lateral_listhesis_mm", _comma),
    ("Curve flexible", "curve_flexible", _yn),
    ("Intradural pathology", "intradural_pathology", _yn),
    ("Ventral intradural", "intradural_ventral", _yn),
    ("TLICS", "tlics_score", _plain),
    ("TLICS morphology", "tlics_morphology", _words),
    ("TLICS PLC", "tlics_plc", _words),
    ("TLICS neuro", "tlics_neuro", _words),
    ("SINS", "sins_score", _plain),
    ("SINS location", "sins_location", _words),
    ("SINS pain", "sins_pain", _words),
    ("SINS bone lesion", "sins_bone_lesion", _words),
    ("SINS alignment", "sins_alignment", _words),
    ("SINS collapse", "sins_collapse", _plain),
    ("SINS posterolateral", "sins_posterolateral", _words),
    ("Epidural abscess", "epidural_abscess", _yn),
    ("Cauda equina syndrome", "cauda_equina_syndrome", _yn),
    ("Progressive deficit", "progressive_neuro_deficit", _yn),
    ("Myelopathy", "myelopathy", _yn),
    ("Spondylodiscitis", "spondylodiscitis", _yn),
    ("Posterior wall breach", "posterior_wall_disrupted", _yn),
    ("Coagulopathy", "coagulopathy_uncorrected", _yn),
    ("Systemic infection", "active_systemic_infection", _yn),
    ("Cement allergy", "cement_allergy", _yn),
    ("Sepsis", "sepsis", _yn),
    ("Surgeon MIS cases", "surgeon_mis_cases", _plain),
    ("Navigation", "navigation_available", _yn),
    ("MIS kit available", "mis_equipment_available", _yn),
)
HEADER = (
    "Record ID",
    *(name for name, _, _ in COLUMNS[:4]),
    "Weight (lb)",
    "Height (in)",
    *(name for name, _, _ in COLUMNS[4:10]),
    "Primary Dx",
    "Secondary Dx",
    *(name for name, _, _ in COLUMNS[10:]),
    "Surgeon grade",
    "LOS (days)",
)
# fields the export does not carry: the region is the mapping's constant; a lumbar registry
# records no cervical (SLIC) score, and the twin rows hold none either
NOT_EXPORTED = frozenset({"region"} | {f for f in INPUT_FIELDS if f.startswith("slic_")})


def twin_rows() -> Iterator[dict[str, Any]]:
    """The clean twin: the generator's lumbar rows (seed SEED), every field as it gives them."""
    for row in generate_rows(DRAWN, SEED, corrupt=0.0):
        if row["region"] == "lumbar":
            if any(row[f] is not None for f in NOT_EXPORTED - {"region"}):
                raise AssertionError("a lumbar twin row holds a field the export leaves out")
            yield row


def export_row(number: int, row: dict[str, Any], rng: np.random.Generator) -> list[str]:
    """One twin row as the registry writes it (`number`: its record id)."""
    cells = {"Record ID": str(number)}
    for name, field, write in COLUMNS:
        cells[name] = write(row[field], rng)
    cells["Weight (lb)"], cells["Height (in)"] = _weight_height(row["bmi"], rng)
    cells["Primary Dx"], cells["Secondary Dx"] = _diagnoses(row, rng)
    cells["Surgeon grade"] = ("Consultant", "Fellow", "Registrar")[int(rng.integers(3))]
    cells["LOS (days)"] = str(int(rng.integers(0, 8)))
    return [cells[name] for name in HEADER]


def write_example(folder: Path) -> Path:
    """Write the export (export.csv) into `folder`; the twin is twin_rows()."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = rng_for(SEED, STYLE_STREAM)
    export = folder / "export.csv"
    with export.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for number, row in enumerate(twin_rows(), 1):
            writer.writerow(export_row(number, row, rng))
    return export


def write_twin(path: Path) -> Path:
    """The clean twin as a cohort CSV in the data dictionary's names (what `synth` writes)."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(INPUT_FIELDS)
        for row in twin_rows():
            writer.writerow(["" if row[f] is None else _twin_text(row[f]) for f in INPUT_FIELDS])
    return path


def _twin_text(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


if __name__ == "__main__":
    print(f"wrote {write_example(Path(sys.argv[1] if len(sys.argv) > 1 else 'cases/registry'))}")
