"""One chunk of rows under construction: its random stream, its columns, and what is known so far.

Every draw is vectorised over the whole chunk (`Draw`), then written only where a mask says so,
so the stream is consumed in the same order whatever the diagnoses of the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.synth.mix import NormalRange

if TYPE_CHECKING:
    from engine.synth.corrupt import Corruption

Floats = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.int16]
Flags = npt.NDArray[np.int8]

OPTIONAL = tuple(name for name in INPUT_FIELDS if name != "case_id")
TYPES = {name: FIELDS_BY_NAME[name].type for name in INPUT_FIELDS}


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """The PCG64 stream of (seed, *stream), the same on every machine with the same numpy."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def categorical(
    rng: np.random.Generator, weights: Sequence[float], size: int
) -> npt.NDArray[np.intp]:
    """Indices drawn with the given relative weights (inverse CDF of uniform floats)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(size), side="right")


def code(name: str, value: str) -> int:
    """The code of an enum value: its position in the data dictionary."""
    return FIELDS_BY_NAME[name].values.index(value)


@dataclass
class Columns:
    """One chunk's columns: numbers (NaN unknown), flags and enum codes (-1 unknown)."""

    size: int
    num: dict[str, Floats] = field(default_factory=dict)
    flag: dict[str, Flags] = field(default_factory=dict)
    code: dict[str, Codes] = field(default_factory=dict)
    overrides: list[tuple[int, Corruption]] = field(default_factory=list)
    first_row: int = 1

    @classmethod
    def empty(cls, size: int, first_row: int) -> Columns:
        cols = cls(size, first_row=first_row)
        for name in OPTIONAL:
            kind = TYPES[name]
            if kind is FieldType.boolean:
                cols.flag[name] = np.full(size, -1, dtype=np.int8)
            elif kind is FieldType.enum:
                cols.code[name] = np.full(size, -1, dtype=np.int16)
            else:
                cols.num[name] = np.full(size, np.nan)
        return cols


class Draw:
    """Vectorised draws for one chunk, writing into its columns where a mask says so."""

    def __init__(self, rng: np.random.Generator, cols: Columns) -> None:
        self.rng = rng
        self.cols = cols
        self.size = cols.size

    def chance(self, p: float | Floats) -> Mask:
        return self.rng.random(self.size) < p

    def normal(self, mean: float | Floats, sd: float) -> Floats:
        return mean + sd * self.rng.standard_normal(self.size)

    def within(self, r: NormalRange) -> Floats:
        """A normal draw clipped to the range."""
        return np.clip(self.normal(r.mean, r.sd), r.lowest, r.highest)

    def pick(self, name: str, weights: Mapping[str, float]) -> Codes:
        """Enum codes of `name` for every row, drawn with the given weights."""
        index = categorical(self.rng, list(weights.values()), self.size)
        codes = np.array([code(name, v) for v in weights], dtype=np.int16)
        return codes[index]

    def pick_into(self, target: Codes, rows: Mask, name: str, weights: Mapping[str, float]) -> None:
        """Draw enum codes of `name` for the selected rows only, into `target`."""
        index = categorical(self.rng, list(weights.values()), int(rows.sum()))
        codes = np.array([code(name, v) for v in weights], dtype=np.int16)
        target[rows] = codes[index]

    def number(self, name: str, values: Floats, where: Mask) -> None:
        self.cols.num[name][where] = values[where]

    def boolean(self, name: str, values: Mask, where: Mask) -> None:
        self.cols.flag[name][where] = values[where].astype(np.int8)

    def enum(self, name: str, codes: Codes, where: Mask) -> None:
        self.cols.code[name][where] = codes[where]


def _no_rows() -> Mask:
    return np.zeros(0, dtype=np.bool_)


@dataclass
class Chunk:
    """What the generators of one chunk share: the draw, and the facts drawn so far.

    `groups` holds named subsets of rows made by the diagnosis generators (`osteoporotic`,
    `metastasis`...), which the procedure rules of mix.yaml name in `when`. `adjust` holds
    probabilities a diagnosis sets for a shared draw (`female`, `osteoporosis`, red flags):
    (rows, probability) pairs applied over the general probability.
    """

    g: Draw
    every: Mask
    dx: dict[str, Mask] = field(default_factory=dict)
    region: dict[str, Mask] = field(default_factory=dict)
    lowest: Codes = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    groups: dict[str, Mask] = field(default_factory=dict)
    adjust: dict[str, list[tuple[Mask, float]]] = field(default_factory=dict)
    age: Floats = field(default_factory=lambda: np.zeros(0))
    female: Mask = field(default_factory=_no_rows)
    procedure: dict[str, Mask] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.g.size

    def adjusted(self, name: str, p: Floats) -> Floats:
        """`p` with the probabilities the diagnoses set for `name` written over it."""
        for rows, value in self.adjust.get(name, ()):
            p[rows] = value
        return p

    def set_probability(self, name: str, rows: Mask, value: float) -> None:
        self.adjust.setdefault(name, []).append((rows, value))
