"""One chunk of synthetic rows, generator by generator, in the order of the draws.

The order of the steps below, and of the draws inside each, fixes the rows a seed gives: moving a
step, or a draw inside one, changes every cohort (tests/test_synth.py pins a few by sha256).
"""

from __future__ import annotations

import numpy as np

from engine.synth.anatomy import draw_diagnosis, draw_lowest_level, draw_region
from engine.synth.chunk import OPTIONAL, Chunk, Columns, Draw, rng_for
from engine.synth.demographics import draw_demographics
from engine.synth.diagnoses import GENERATORS
from engine.synth.history import draw_augmentation_screening, draw_red_flags, draw_site
from engine.synth.mix import ClinicalMix
from engine.synth.treatment import draw_levels, draw_procedure, draw_technique

BASE_STREAM = 0
MISSING_STREAM = 1
LATE_STREAM = 2  # fields added after the cohorts were pinned (diagnoses.Generator.late)


def generate_chunk(
    mix: ClinicalMix, seed: int, index: int, size: int, first_row: int, missing: float
) -> Columns:
    """The rows of chunk `index`: the diagnosis first, then everything consistent with it."""
    cols = Columns.empty(size, first_row=first_row)
    c = Chunk(Draw(rng_for(seed, index, BASE_STREAM), cols), np.ones(size, dtype=np.bool_))
    draw_diagnosis(c, mix)
    draw_region(c, mix)
    draw_lowest_level(c, mix)
    for name, dx in mix.diagnoses.items():  # subtypes shape age, sex and the findings recorded
        subtypes = GENERATORS[name].subtypes
        if subtypes is not None:
            subtypes(c, dx, mix)
    draw_demographics(c, mix)
    for name, dx in mix.diagnoses.items():
        findings = GENERATORS[name].findings
        if findings is not None:
            findings(c, dx, mix)
    draw_procedure(c, mix)
    draw_levels(c, mix)
    draw_technique(c, mix)
    draw_red_flags(c, mix)
    draw_augmentation_screening(c)
    draw_site(c)
    c.g = Draw(rng_for(seed, index, LATE_STREAM), cols)
    for name, dx in mix.diagnoses.items():
        late = GENERATORS[name].late
        if late is not None:
            late(c, dx, mix)
    blank(cols, rng_for(seed, index, MISSING_STREAM), missing)
    return cols


def blank(cols: Columns, rng: np.random.Generator, missing: float) -> None:
    """Blank each known optional value with probability `missing`, one draw per field and row.

    The draws come from their own stream, so a different `missing` blanks cells of the same
    underlying cohort rather than drawing a new one.
    """
    if missing <= 0.0:
        return
    for name in OPTIONAL:
        blanked = rng.random(cols.size) < missing
        if name in cols.num:
            cols.num[name][blanked] = np.nan
        elif name in cols.flag:
            cols.flag[name][blanked] = -1
        else:
            cols.code[name][blanked] = -1
