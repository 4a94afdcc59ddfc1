"""Which diagnosis, in which region, at which lowest level: the first draws of every row."""

from __future__ import annotations

import numpy as np

from engine.synth.chunk import Chunk, code
from engine.synth.mix import REGIONS, ClinicalMix


def draw_diagnosis(c: Chunk, mix: ClinicalMix) -> None:
    """Every row's diagnosis, from the shares of mix.yaml (always recorded)."""
    diagnosis = c.g.pick("diagnosis", {name: dx.share for name, dx in mix.diagnoses.items()})
    c.g.enum("diagnosis", diagnosis, c.every)
    c.dx = {name: diagnosis == code("diagnosis", name) for name in mix.diagnoses}


def draw_region(c: Chunk, mix: ClinicalMix) -> None:
    """The region, from each diagnosis' own region mix."""
    region = np.full(c.size, -1, dtype=np.int16)
    for name, dx in mix.diagnoses.items():
        c.g.pick_into(region, c.dx[name], "region", dx.regions)
    c.g.enum("region", region, c.g.chance(0.98))
    c.region = {name: region == code("region", name) for name in REGIONS}


def draw_lowest_level(c: Chunk, mix: ClinicalMix) -> None:
    """The lowest level operated on: the diagnosis' table for its region, else the region's."""
    lowest = np.full(c.size, -1, dtype=np.int16)
    for name, dx in mix.diagnoses.items():
        for region, in_region in c.region.items():
            weights = dx.lowest_level.get(region, mix.levels_by_region[region])
            c.g.pick_into(lowest, c.dx[name] & in_region, "lowest_level", weights)
    c.g.enum("lowest_level", lowest, c.g.chance(0.97))
    c.lowest = lowest
