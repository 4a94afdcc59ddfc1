"""One generator per diagnosis: its subtypes, and the findings recorded for it.

A diagnosis generator has three optional steps, each drawn for every row of the chunk and written
only to the rows of the diagnosis:
- `subtypes` runs right after the anatomy and before the demographics, because age, sex and bone
  depend on them (an osteoporotic fracture, an isthmic slip). It adds named row groups to
  `chunk.groups`, which the procedure rules of mix.yaml can name in `when`.
- `findings` runs after the demographics: the fields only this diagnosis records (herniation
  location, TLICS, SINS...). It may add groups too (`high_grade`, `burst`) and set probabilities
  of shared draws (`chunk.set_probability`).
- `late` runs after every other step, from a random stream of its own: fields recorded since the
  cohorts were pinned (SLIC), added without moving any value a seed gave before. It reads the
  facts drawn so far but must not change them or set probabilities.
Steps run in the order of the diagnoses in mix.yaml. `GENERATORS` names, for each diagnosis, the
keys of `shares`, `mixes` and `ranges` its code reads, so that mix.yaml is checked against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.synth.chunk import Chunk, Codes, Floats, code
from engine.synth.mix import (
    MIX_FILE,
    REGIONS,
    ClinicalMix,
    Diagnosis,
    MixError,
    load_mix,
)

Step = Callable[[Chunk, Diagnosis, ClinicalMix], None]


# --- disc herniation -----------------------------------------------------------------------------


def disc_herniation_findings(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Location, calcification, migration and canal compromise (central ones compress most)."""
    g, rows, region = c.g, c.dx["disc_herniation"], c.region
    location = g.pick("herniation_location", dx.mixes["herniation_location"])
    g.enum("herniation_location", location, rows & g.chance(0.85))
    calcified_p = np.where(
        region["thoracic"],
        dx.shares["calcified_thoracic"],
        np.where(
            region["cervical"], dx.shares["calcified_cervical"], dx.shares["calcified_elsewhere"]
        ),
    )
    g.boolean("herniation_calcified", g.chance(calcified_p), rows & g.chance(0.7))
    grade = g.pick("herniation_migration_grade", dx.mixes["herniation_migration_grade"])
    migrated = grade != code("herniation_migration_grade", "none")
    g.boolean("herniation_migrated", migrated, rows & g.chance(0.75))
    g.enum("herniation_migration_grade", grade, rows & g.chance(0.55))
    central = location == code("herniation_location", "central")
    paracentral = location == code("herniation_location", "paracentral")
    compromise = np.where(
        central, g.normal(55, 18), np.where(paracentral, g.normal(35, 12), g.normal(18, 8))
    )
    compromise = np.clip(np.rint(compromise + 10 * region["thoracic"]), 3, 95)
    g.number("herniation_canal_compromise_pct", compromise, rows & g.chance(0.6))


# --- spondylolisthesis ---------------------------------------------------------------------------


def spondylolisthesis_subtypes(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Isthmic: a slip at L5-S1 (no draw)."""
    l5_s1 = c.lowest == code("lowest_level", "L5-S1")
    c.groups["isthmic"] = c.dx["spondylolisthesis"] & l5_s1


def spondylolisthesis_findings(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Slip percent: mostly low grade; high grade (51-110 %) mainly isthmic L5-S1."""
    g, rows, isthmic = c.g, c.dx["spondylolisthesis"], c.groups["isthmic"]
    high_grade = isthmic & g.chance(dx.shares["high_grade_isthmic"]) | rows & ~isthmic & g.chance(
        dx.shares["high_grade_degenerative"]
    )
    ranges = dx.ranges
    percent = np.where(
        isthmic,
        g.within(ranges["slip_isthmic"]),
        np.where(
            c.region["cervical"],
            g.within(ranges["slip_cervical"]),
            g.within(ranges["slip_degenerative"]),
        ),
    )
    percent = np.where(high_grade, 51 + 59 * g.rng.random(c.size), percent)
    g.number("slip_percent", np.rint(percent), rows & g.chance(0.85))
    c.groups["high_grade"] = high_grade


# --- adult deformity -----------------------------------------------------------------------------


def adult_deformity_findings(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Sagittal parameters follow one severity, coronal ones the Cobb angle."""
    g, rows, size = c.g, c.dx["adult_deformity"], c.size
    films = rows & g.chance(0.85)
    severity = g.rng.standard_normal(size)
    incidence = np.clip(np.rint(g.normal(55, 10)), 30, 90)
    mismatch = np.clip(14 + 12 * severity + g.normal(0, 5), -5, 60)
    lordosis = np.clip(np.rint(incidence - mismatch), -20, 90)
    tilt = np.clip(np.rint(0.25 * incidence + 0.4 * (incidence - lordosis) + g.normal(0, 4)), 0, 60)
    sva = np.clip(np.rint(10 + 3.2 * (incidence - lordosis) + g.normal(0, 25)), -60, 350)
    cobb = np.clip(np.rint(28 + 5 * severity + g.normal(0, 13)), 5, 95)
    listhesis = np.clip(np.rint(0.15 * cobb - 1 + g.normal(0, 2.5)), 0, 25)
    flexible_p = np.clip(0.85 - 0.012 * (cobb - 15) - 0.005 * (c.age - 60), 0.1, 0.9)
    kyphosis = np.clip(np.rint(g.normal(38, 12)), 0, 90)
    sagittal = films | rows & g.chance(0.5)
    g.number("pelvic_incidence_deg", incidence, sagittal & g.chance(0.95))
    g.number("lumbar_lordosis_deg", lordosis, sagittal & g.chance(0.95))
    g.number("pelvic_tilt_deg", tilt, sagittal & g.chance(0.9))
    g.number("sva_mm", sva, films & g.chance(0.9))
    g.number("coronal_cobb_deg", cobb, rows & g.chance(0.95))
    g.number("lateral_listhesis_mm", listhesis, rows & g.chance(0.65))
    g.boolean("curve_flexible", g.chance(flexible_p), rows & g.chance(0.55))
    g.number("thoracic_kyphosis_deg", kyphosis, films & g.chance(0.45))


# --- fracture ------------------------------------------------------------------------------------


def fracture_subtypes(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Thoracolumbar fractures are osteoporotic (older, mostly women) or from trauma."""
    rows = c.dx["fracture"]
    thoracolumbar = rows & ~c.region["cervical"]
    osteoporotic = thoracolumbar & c.g.chance(dx.shares["osteoporotic_if_not_cervical"])
    c.groups["thoracolumbar"] = thoracolumbar
    c.groups["osteoporotic"] = osteoporotic
    c.groups["trauma"] = thoracolumbar & ~osteoporotic
    c.set_probability("female", osteoporotic, dx.shares["female_if_osteoporotic"])
    c.set_probability("osteoporosis", osteoporotic, dx.shares["osteoporosis_if_osteoporotic"])


def _tlics_components(c: Chunk, dx: Diagnosis) -> tuple[Codes, Codes, Codes]:
    """Morphology by cause, then PLC and neurology by morphology (cauda equina only below L1-L2)."""
    g, mixes = c.g, dx.mixes
    morphology = np.where(
        c.groups["osteoporotic"],
        g.pick("tlics_morphology", mixes["morphology_osteoporotic"]),
        g.pick("tlics_morphology", mixes["morphology_trauma"]),
    ).astype(np.int16)
    compression = morphology == code("tlics_morphology", "compression")
    burst = morphology == code("tlics_morphology", "burst")
    by_morphology: list[Codes] = []
    for name, prefix in (("tlics_plc", "plc"), ("tlics_neuro", "neuro")):
        drawn = [
            g.pick(name, mixes[f"{prefix}_{kind}"]) for kind in ("compression", "burst", "other")
        ]
        by_morphology.append(
            np.where(compression, drawn[0], np.where(burst, drawn[1], drawn[2])).astype(np.int16)
        )
    plc, neuro = by_morphology
    cauda_level = c.region["lumbar"] & (c.lowest != code("lowest_level", "L1-L2"))
    neuro = np.where(
        (neuro == code("tlics_neuro", "cauda_equina")) & ~cauda_level,
        code("tlics_neuro", "incomplete_cord"),
        neuro,
    ).astype(np.int16)
    c.groups["compression"] = compression
    c.groups["burst"] = burst
    return morphology, plc, neuro


def fracture_findings(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """TLICS components, with the total (their exact sum) sometimes supplied; the posterior wall."""
    g, thoracolumbar = c.g, c.groups["thoracolumbar"]
    morphology, plc, neuro = _tlics_components(c, dx)
    tlics = np.zeros(c.size)
    for name, codes in (
        ("tlics_morphology", morphology),
        ("tlics_plc", plc),
        ("tlics_neuro", neuro),
    ):
        g.enum(name, codes, thoracolumbar & g.chance(0.9))
        tlics += _points(mix, name)[codes]
    g.number("tlics_score", tlics, thoracolumbar & g.chance(0.45))
    _posterior_wall(c, dx, mix)
    injured_cord = np.isin(
        neuro, [code("tlics_neuro", "incomplete_cord"), code("tlics_neuro", "complete_cord")]
    )
    cord_injury = thoracolumbar & injured_cord
    cauda = thoracolumbar & (neuro == code("tlics_neuro", "cauda_equina"))
    shares = dx.shares
    c.set_probability("cauda_equina", cauda, shares["cauda_equina_if_neuro_cauda_equina"])
    c.set_probability(
        "progressive_deficit", cord_injury, shares["progressive_deficit_if_cord_injury"]
    )
    c.set_probability(
        "myelopathy", cord_injury & ~c.region["lumbar"], shares["myelopathy_if_cord_injury"]
    )


def _posterior_wall(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Posterior wall disrupted: recorded for fractures and for metastases (tumour subtypes)."""
    shares, metastasis = dx.shares, c.groups["metastasis"]
    wall_p = np.where(
        c.groups["burst"],
        shares["wall_disrupted_burst"],
        np.where(
            c.groups["compression"],
            shares["wall_disrupted_compression"],
            shares["wall_disrupted_other"],
        ),
    )
    wall_p = np.where(
        metastasis, mix.diagnoses["tumor"].shares["wall_disrupted_metastasis"], wall_p
    )
    c.g.boolean(
        "posterior_wall_disrupted",
        c.g.chance(wall_p),
        (c.dx["fracture"] | metastasis) & c.g.chance(0.55),
    )


def fracture_slic(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """SLIC of cervical fractures: morphology, then the disco-ligamentous complex and neurology by
    morphology; cord compression counts only with a deficit (CON-010); the total sometimes."""
    g, mixes, cervical = c.g, dx.mixes, c.dx["fracture"] & c.region["cervical"]
    morphology = g.pick("slic_morphology", mixes["slic_morphology"])
    compression = morphology == code("slic_morphology", "compression")
    burst = morphology == code("slic_morphology", "burst")
    by_morphology: list[Codes] = []
    for name, prefix in (("slic_dlc", "slic_dlc"), ("slic_neuro", "slic_neuro")):
        drawn = [
            g.pick(name, mixes[f"{prefix}_{kind}"]) for kind in ("compression", "burst", "other")
        ]
        by_morphology.append(
            np.where(compression, drawn[0], np.where(burst, drawn[1], drawn[2])).astype(np.int16)
        )
    dlc, neuro = by_morphology
    deficit = neuro != code("slic_neuro", "intact")
    cord_compression = deficit & g.chance(dx.shares["slic_cord_compression_if_deficit"])
    total = np.zeros(c.size)
    for name, codes in (("slic_morphology", morphology), ("slic_dlc", dlc), ("slic_neuro", neuro)):
        g.enum(name, codes, cervical & g.chance(0.9))
        total += _points(mix, name)[codes]
    g.boolean("slic_cord_compression", cord_compression, cervical & g.chance(0.8))
    total += _points(mix, "slic_cord_compression")[cord_compression.astype(np.intp)]
    g.number("slic_score", total, cervical & g.chance(0.45))


def _points(mix: ClinicalMix, name: str) -> Floats:
    """Points of each value of a scored field, indexed by its code (a boolean: False, True)."""
    if FIELDS_BY_NAME[name].type is FieldType.boolean:
        return np.array([mix.scores[name]["false"], mix.scores[name]["true"]])
    return np.array([mix.scores[name][v] for v in FIELDS_BY_NAME[name].values])


# --- tumour --------------------------------------------------------------------------------------

SINS_DRAWN = (
    "sins_pain",
    "sins_bone_lesion",
    "sins_alignment",
    "sins_collapse",
    "sins_posterolateral",
)


def tumor_subtypes(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Intradural lesions, else metastases."""
    rows = c.dx["tumor"]
    intradural = rows & c.g.chance(dx.shares["intradural"])
    c.groups["intradural"] = intradural
    c.groups["metastasis"] = rows & ~intradural


def sins_location(segment: str) -> str:
    """SINS location of the vertebra above a segment (O-C2, C7-T2, T11-L1, L5 are junctional)."""
    vertebra = segment.split("-")[0]
    if vertebra in ("C1", "C2", "C7", "T1", "T2", "T11", "T12", "L1", "L5"):
        return "junctional"
    if vertebra[0] == "T":
        return "semirigid"
    return "mobile"


def tumor_findings(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """SINS for metastases (location from the level), intradural lesions otherwise."""
    g, metastasis, intradural = c.g, c.groups["metastasis"], c.groups["intradural"]
    segment_location = np.array(
        [code("sins_location", sins_location(s)) for s in FIELDS_BY_NAME["lowest_level"].values],
        dtype=np.int16,
    )
    sins = np.zeros(c.size)
    for name in ("sins_location", *SINS_DRAWN):
        codes = (
            segment_location[c.lowest] if name == "sins_location" else g.pick(name, dx.mixes[name])
        )
        g.enum(name, codes, metastasis & g.chance(0.85))
        sins += _points(mix, name)[codes]
    g.number("sins_score", sins, metastasis & g.chance(0.4))
    g.boolean("intradural_pathology", intradural, intradural | g.chance(0.3))
    g.boolean("intradural_ventral", g.chance(0.3), intradural & g.chance(0.7))


# --- infection -----------------------------------------------------------------------------------


def infection_subtypes(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    """Spondylodiscitis, epidural abscess or both, from one uniform draw."""
    rows, u = c.dx["infection"], c.g.rng.random(c.size)
    discitis = rows & (u < dx.shares["spondylodiscitis"])
    abscess = rows & (u >= 1 - dx.shares["epidural_abscess"])
    c.groups["discitis"] = discitis
    c.groups["abscess"] = abscess
    c.groups["abscess_only"] = abscess & ~discitis


def infection_findings(c: Chunk, dx: Diagnosis, mix: ClinicalMix) -> None:
    rows = c.dx["infection"]
    c.g.boolean("spondylodiscitis", c.groups["discitis"], rows & c.g.chance(0.9))
    c.g.boolean("epidural_abscess", c.groups["abscess"], rows & c.g.chance(0.9))


# --- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generator:
    """The code of one diagnosis, and the keys of its mix.yaml entry that the code reads."""

    subtypes: Step | None = None
    findings: Step | None = None
    # fields recorded since the cohorts were pinned: drawn after every other step, from a stream
    # of their own (engine.synth.cohort), so the rows a seed gave before keep every value
    late: Step | None = None
    groups: tuple[str, ...] = ()  # row groups it adds, for procedure rules (`when`)
    shares: tuple[str, ...] = ()
    mixes: Mapping[str, str] = field(default_factory=dict)  # mix name -> the enum field it draws
    ranges: tuple[str, ...] = ()


_TLICS_MIXES = {
    **dict.fromkeys(("morphology_osteoporotic", "morphology_trauma"), "tlics_morphology"),
    **{f"plc_{kind}": "tlics_plc" for kind in ("compression", "burst", "other")},
    **{f"neuro_{kind}": "tlics_neuro" for kind in ("compression", "burst", "other")},
}
_SLIC_MIXES = {
    "slic_morphology": "slic_morphology",
    **{
        f"{name}_{kind}": name
        for name in ("slic_dlc", "slic_neuro")
        for kind in ("compression", "burst", "other")
    },
}

GENERATORS: dict[str, Generator] = {
    "disc_herniation": Generator(
        findings=disc_herniation_findings,
        shares=("calcified_thoracic", "calcified_cervical", "calcified_elsewhere"),
        mixes={name: name for name in ("herniation_location", "herniation_migration_grade")},
    ),
    "spinal_stenosis": Generator(),
    "spondylolisthesis": Generator(
        subtypes=spondylolisthesis_subtypes,
        findings=spondylolisthesis_findings,
        groups=("isthmic", "high_grade"),
        shares=("high_grade_isthmic", "high_grade_degenerative"),
        ranges=("slip_isthmic", "slip_cervical", "slip_degenerative"),
    ),
    "degenerative_disc_disease": Generator(),
    "adult_deformity": Generator(findings=adult_deformity_findings),
    "fracture": Generator(
        subtypes=fracture_subtypes,
        findings=fracture_findings,
        groups=("thoracolumbar", "osteoporotic", "trauma", "compression", "burst"),
        shares=(
            "osteoporotic_if_not_cervical",
            "female_if_osteoporotic",
            "osteoporosis_if_osteoporotic",
            "cauda_equina_if_neuro_cauda_equina",
            "progressive_deficit_if_cord_injury",
            "myelopathy_if_cord_injury",
            "wall_disrupted_burst",
            "wall_disrupted_compression",
            "wall_disrupted_other",
            "slic_cord_compression_if_deficit",
        ),
        mixes={**_TLICS_MIXES, **_SLIC_MIXES},
        late=fracture_slic,
    ),
    "tumor": Generator(
        subtypes=tumor_subtypes,
        findings=tumor_findings,
        groups=("intradural", "metastasis"),
        shares=("intradural", "wall_disrupted_metastasis"),
        mixes={name: name for name in SINS_DRAWN},
    ),
    "infection": Generator(
        subtypes=infection_subtypes,
        findings=infection_findings,
        groups=("discitis", "abscess", "abscess_only"),
        shares=("spondylodiscitis", "epidural_abscess"),
    ),
    "other": Generator(),
}


@cache
def checked_mix() -> ClinicalMix:
    """The bundled mix.yaml, checked against GENERATORS (MixError names the first bad key)."""
    mix = load_mix()
    check_against_generators(mix, str(MIX_FILE))
    return mix


def check_against_generators(mix: ClinicalMix, source: str) -> None:
    """Every diagnosis has a generator, and gives exactly the keys its code reads."""
    if list(mix.diagnoses) != list(GENERATORS):
        raise MixError(
            f"{source}: diagnoses: {', '.join(mix.diagnoses)} differ from the generators of "
            f"engine/synth/diagnoses.py ({', '.join(GENERATORS)}); they must match, in order"
        )
    for name, dx in mix.diagnoses.items():
        code_for = GENERATORS[name]
        where = f"{source}: diagnoses.{name}"
        for key, given, read in (
            ("shares", dx.shares, code_for.shares),
            ("mixes", dx.mixes, code_for.mixes),
            ("ranges", dx.ranges, code_for.ranges),
        ):
            if set(given) != set(read):
                wrong = sorted(set(given) ^ set(read))[0]
                state = "is not read by its generator" if wrong in given else "is missing"
                raise MixError(f"{where}.{key}.{wrong}: {state}")
        for key, field_name in code_for.mixes.items():
            unknown = [v for v in dx.mixes[key] if v not in FIELDS_BY_NAME[field_name].values]
            if unknown:
                raise MixError(f"{where}.mixes.{key}: '{unknown[0]}' is not a {field_name} value")
        groups = set(code_for.groups) | set(REGIONS)
        for i, rule in enumerate(dx.procedures):
            unknown = [group for group in rule.when if group not in groups]
            if unknown:
                raise MixError(
                    f"{where}.procedures.{i}.when: '{unknown[0]}' is not a region or a group of "
                    f"{name} ({', '.join(sorted(groups))})"
                )
        if dx.age_by_subtype is not None and next(iter(dx.age_by_subtype)) not in code_for.groups:
            raise MixError(f"{where}.age_by_subtype: the first key must be a group of {name}")
