"""History and red flags, what augmentation candidates are screened for, and the surgeon's site."""

from __future__ import annotations

import numpy as np

from engine.synth.chunk import Chunk
from engine.synth.mix import ClinicalMix


def draw_red_flags(c: Chunk, mix: ClinicalMix) -> None:
    """Prior surgery and neurological red flags by diagnosis (cord signs above the cauda)."""
    g, region = c.g, c.region
    prior_p, cauda_p, deficit_p, myelopathy_p = (np.zeros(c.size) for _ in range(4))
    for name, dx in mix.diagnoses.items():
        rows = c.dx[name]
        prior_p[rows] = dx.prior_surgery
        cauda_p[rows & region["lumbar"]] = dx.cauda_equina_if_lumbar
        deficit_p[rows] = dx.progressive_deficit
        myelopathy_p[rows & region["cervical"]] = dx.myelopathy.cervical
        myelopathy_p[rows & region["thoracic"]] = dx.myelopathy.thoracic
    cauda_p = c.adjusted("cauda_equina", cauda_p)
    deficit_p = c.adjusted("progressive_deficit", deficit_p)
    myelopathy_p = c.adjusted("myelopathy", myelopathy_p)
    g.boolean("prior_surgery_same_level", g.chance(prior_p), g.chance(0.9))
    g.boolean("cauda_equina_syndrome", g.chance(cauda_p), g.chance(0.9))
    g.boolean("progressive_neuro_deficit", g.chance(deficit_p), g.chance(0.9))
    g.boolean("myelopathy", g.chance(myelopathy_p), g.chance(0.9))


def draw_augmentation_screening(c: Chunk) -> None:
    """Bleeding, cement allergy and infection: asked of augmentation candidates more often."""
    g, infection = c.g, c.dx["infection"]
    augmentation = c.procedure["vertebral_augmentation"]
    g.boolean(
        "coagulopathy_uncorrected", g.chance(0.01), g.chance(np.where(augmentation, 0.6, 0.3))
    )
    g.boolean("cement_allergy", g.chance(0.005), augmentation & g.chance(0.5))
    g.boolean(
        "active_systemic_infection",
        g.chance(np.where(infection, 0.45, 0.02)),
        (infection & g.chance(0.7)) | (augmentation & g.chance(0.5)),
    )
    g.boolean(
        "sepsis",
        g.chance(np.where(infection, 0.12, 0.003)),
        (infection & g.chance(0.6)) | (augmentation & g.chance(0.5)),
    )


def draw_site(c: Chunk) -> None:
    """The surgeon and site, known for only some rows (log-normal experience around 60 cases)."""
    g = c.g
    site = g.chance(0.35)
    experience = np.clip(np.rint(np.exp(np.log(60) + 1.1 * g.rng.standard_normal(c.size))), 0, 3000)
    g.number("surgeon_mis_cases", experience, site & g.chance(0.9))
    g.boolean("navigation_available", g.chance(0.45), site & g.chance(0.95))
    g.boolean("mis_equipment_available", g.chance(0.85), (site & g.chance(0.95)) | g.chance(0.05))
