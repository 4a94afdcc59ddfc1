"""What is planned: the procedure (per diagnosis), the levels it spans, and the MIS technique."""

from __future__ import annotations

import numpy as np

from engine.dictionary import FIELDS_BY_NAME
from engine.synth.chunk import Chunk, Mask, categorical, code
from engine.synth.mix import ClinicalMix, TechniqueRule


def draw_procedure(c: Chunk, mix: ClinicalMix) -> None:
    """Each diagnosis' procedure rules in order; a row takes the first rule it falls under."""
    procedure = np.full(c.size, -1, dtype=np.int16)
    for name, dx in mix.diagnoses.items():
        for rule in dx.procedures:
            rows = c.dx[name].copy()
            for group in rule.when:
                rows &= c.region[group] if group in c.region else c.groups[group]
            c.g.pick_into(procedure, rows & (procedure < 0), "planned_procedure", rule.mix)
    c.g.enum("planned_procedure", procedure, c.g.chance(0.97))
    c.procedure = {
        name: procedure == code("planned_procedure", name)
        for name in FIELDS_BY_NAME["planned_procedure"].values
    }


def draw_levels(c: Chunk, mix: ClinicalMix) -> None:
    """Levels spanned, by diagnosis; one for augmentation, never more than the spine has left."""
    levels = np.zeros(c.size)
    for name, dx in mix.diagnoses.items():
        counts = np.array(list(dx.levels), dtype=np.float64)
        levels[c.dx[name]] = counts[categorical(c.g.rng, list(dx.levels.values()), c.size)][
            c.dx[name]
        ]
    for name, dx in mix.diagnoses.items():
        if dx.extra_level_if_cervical is not None:
            levels += c.dx[name] & c.region["cervical"] & c.g.chance(dx.extra_level_if_cervical)
    levels[c.procedure["vertebral_augmentation"]] = 1
    levels = np.clip(levels, 1, np.where(c.lowest >= 0, c.lowest + 1, 20))
    c.g.number("levels", levels, c.g.chance(0.97))


def _technique_rows(c: Chunk, rule: TechniqueRule) -> Mask:
    rows = c.every if rule.procedure is None else c.procedure[rule.procedure]
    if rule.region is not None:
        rows = rows & c.region[rule.region]
    if rule.diagnosis:
        rows = rows & np.logical_or.reduce([c.dx[name] for name in rule.diagnosis])
    if rule.lowest_level is not None:
        rows = rows & (c.lowest == code("lowest_level", rule.lowest_level))
    return rows


def draw_technique(c: Chunk, mix: ClinicalMix) -> None:
    """A technique allowed for the procedure (rules/constraints.yaml CON-002), first rule wins."""
    technique = np.full(c.size, -1, dtype=np.int16)
    for rule in mix.techniques:
        todo = _technique_rows(c, rule) & (technique < 0)
        c.g.pick_into(technique, todo, "mis_technique", rule.mix)
    # no MIS TLIF in the cervical spine (CON-004): fixed after the draws, which stay as they were
    technique[c.region["cervical"] & (technique == code("mis_technique", "mis_tlif"))] = code(
        "mis_technique", "other"
    )
    augmentation = c.procedure["vertebral_augmentation"]
    c.g.enum("mis_technique", technique, c.g.chance(np.where(augmentation, 0.9, 0.75)))
