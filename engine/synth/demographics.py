"""Who the patient is: sex, age, pregnancy, body size, fitness, comorbidities and bone quality.

Ages and the female share come from mix.yaml; the formulas that tie one value to another
(diabetes with age and BMI, ASA class with age, osteoporosis with sex and age) are here.
"""

from __future__ import annotations

import numpy as np

from engine.synth.chunk import Chunk, Floats, code
from engine.synth.mix import ClinicalMix


def draw_sex(c: Chunk, mix: ClinicalMix) -> None:
    """One uniform draw per row, cut at the female share (by diagnosis), male, other, unknown."""
    female_share = np.full(c.size, mix.sex.female_share)
    for name, dx in mix.diagnoses.items():
        if dx.female_share is not None:
            female_share[c.dx[name]] = dx.female_share
    female_share = c.adjusted("female", female_share)
    u = c.g.rng.random(c.size)
    sex = np.where(
        u < female_share,
        code("sex", "female"),
        np.where(
            u < mix.sex.male_below,
            code("sex", "male"),
            np.where(u < mix.sex.other_below, code("sex", "other"), code("sex", "unknown")),
        ),
    ).astype(np.int16)
    c.g.enum("sex", sex, c.every)
    c.female = sex == code("sex", "female")


def draw_age(c: Chunk, mix: ClinicalMix) -> None:
    """Age by diagnosis: single ranges first, then the ones split by subtype (the draw order)."""
    age = np.full(c.size, np.nan)
    for name, dx in mix.diagnoses.items():
        if dx.age is not None:
            age[c.dx[name]] = c.g.within(dx.age)[c.dx[name]]
    for name, dx in mix.diagnoses.items():
        if dx.age_by_subtype is not None:
            (subtype, inside), (_, rest) = dx.age_by_subtype.items()
            drawn = [c.g.within(inside), c.g.within(rest)]
            age[c.dx[name]] = np.where(c.groups[subtype], *drawn)[c.dx[name]]
    c.age = np.rint(age)  # 90 stands for 90 or older (HIPAA Safe Harbor)
    c.g.number("age_years", c.age, c.every)


def draw_pregnancy(c: Chunk) -> None:
    """Pregnant only if female and 18-45; asked of most of them and of some women up to 55."""
    g, age = c.g, c.age
    childbearing = c.female & (age >= 18) & (age <= 45)
    pregnant = childbearing & g.chance(0.02)
    g.boolean("pregnant", pregnant, (childbearing & g.chance(0.6)) | pregnant)
    g.boolean("pregnant", pregnant, c.female & (age > 45) & (age <= 55) & g.chance(0.3))
    weeks = np.rint(5 + 31 * g.rng.random(c.size))
    g.number("gestational_age_weeks", weeks, pregnant & g.chance(0.9))


def draw_body_and_fitness(c: Chunk) -> Floats:
    """BMI (log-normal, lower with tumour or infection) and ASA class (rises with age); the BMI."""
    g, dx, age = c.g, c.dx, c.age
    bmi_median = np.where(dx["tumor"] | dx["infection"], 25.5, 27.8)
    bmi = np.clip(
        np.round(np.exp(np.log(bmi_median) + 0.19 * g.rng.standard_normal(c.size)), 1), 17, 50
    ).astype(np.float64)
    g.number("bmi", bmi, g.chance(0.95))

    asa_u = g.rng.random(c.size)
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
    return bmi


def draw_comorbidities(c: Chunk, bmi: Floats) -> None:
    """Diabetes (age, BMI, infection), smoking (age), immunosuppression (tumour, infection)."""
    g, dx, age = c.g, c.dx, c.age
    diabetes_p = np.clip(0.05 + 0.004 * (age - 40) + 0.012 * (bmi - 27), 0.02, 0.5)
    diabetes_p = diabetes_p + 0.15 * dx["infection"]
    g.boolean("diabetes", g.chance(diabetes_p), g.chance(0.85))
    smoker_p = np.where(age < 50, 0.24, np.where(age < 65, 0.18, 0.10))
    g.boolean("smoker", g.chance(smoker_p), g.chance(0.85))
    immuno_p = np.where(dx["infection"], 0.2, np.where(dx["tumor"], 0.15, 0.04))
    g.boolean("immunosuppressed", g.chance(immuno_p), g.chance(0.6))


def draw_bone(c: Chunk) -> None:
    """Osteoporosis by sex and age (and diagnosis), with a DEXA T-score that agrees with it."""
    g, age, female = c.g, c.age, c.female
    osteo_p = np.where(
        female & (age >= 65),
        0.3,
        np.where(female & (age >= 50), 0.12, np.where(~female & (age >= 70), 0.1, 0.02)),
    )
    osteoporosis = g.chance(c.adjusted("osteoporosis", osteo_p))
    g.boolean("osteoporosis", osteoporosis, g.chance(np.where(c.dx["fracture"], 0.9, 0.65)))
    t_score = np.where(
        osteoporosis,
        np.clip(np.round(g.normal(-3.1, 0.5), 1), -5.5, -2.5),
        np.clip(np.round(g.normal(-0.9, 0.9), 1), -2.4, 3.0),
    )
    dexa_p = np.where(osteoporosis | c.groups["osteoporotic"], 0.5, 0.12)
    g.number("dexa_t_score", t_score, g.chance(dexa_p))


def draw_demographics(c: Chunk, mix: ClinicalMix) -> None:
    """Everything about the patient, in the order of the draws."""
    draw_sex(c, mix)
    draw_age(c, mix)
    draw_pregnancy(c)
    bmi = draw_body_and_fitness(c)
    draw_comorbidities(c, bmi)
    draw_bone(c)
