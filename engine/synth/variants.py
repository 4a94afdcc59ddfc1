"""The differential cohort: the synthetic cohort, a missing-values variant and a corrupt variant,
one after the other in one file, for holding every engine to the others (issue 29).

Each part is a cohort of its own seed (`seed + its position`), numbered on from the part before,
so every case_id is unique and the file reads as one cohort. The missing variant leaves half of
every optional value unknown (open rules, possible verdicts, next questions: the three-valued
paths); the corrupt variant plants a corruption in a quarter of its rows (the shared readers'
errors, which must be the same whatever engine screens the rest).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.synth import cohort_chunks, cohort_format, write_chunks
from engine.synth.chunk import Columns
from engine.synth.corrupt import corrupt_row_numbers


@dataclass(frozen=True)
class Variant:
    """One part of the differential cohort: its share of the rows, unknown share, corrupt share."""

    name: str
    share: float
    missing: float
    corrupt: float


VARIANTS = (
    Variant("cohort", 0.6, 0.05, 0.01),  # as `miss-screen synth` writes it by default
    Variant("missing", 0.2, 0.5, 0.0),
    Variant("corrupt", 0.2, 0.05, 0.25),
)


@dataclass(frozen=True)
class Part:
    """Where one variant sits in a differential cohort of n rows: rows first_row .. last_row."""

    variant: Variant
    seed: int
    rows: int
    first_row: int

    @property
    def last_row(self) -> int:
        return self.first_row + self.rows - 1


def variant_parts(n: int, seed: int) -> tuple[Part, ...]:
    """The parts of a differential cohort of n rows; the last takes what rounding leaves."""
    parts: list[Part] = []
    first = 1
    for position, variant in enumerate(VARIANTS):
        last = position == len(VARIANTS) - 1
        rows = n - (first - 1) if last else round(n * variant.share)
        parts.append(Part(variant, seed + position, rows, first))
        first += rows
    return tuple(parts)


def variant_chunks(n: int, seed: int) -> Iterator[Columns]:
    """Every part's chunks in turn, as they are made."""
    for part in variant_parts(n, seed):
        v = part.variant
        yield from cohort_chunks(part.rows, part.seed, v.missing, v.corrupt, part.first_row)


def corrupt_rows(n: int, seed: int) -> set[int]:
    """The 1-based row numbers (= case_id numbers) holding a planted corruption."""
    found: set[int] = set()
    for part in variant_parts(n, seed):
        rows = corrupt_row_numbers(part.rows, part.seed, part.variant.corrupt)
        found.update(part.first_row - 1 + row for row in rows)
    return found


def write_variants(path: Path, n: int, seed: int, *, format: str | None = None) -> int:
    """Write the differential cohort of n rows (CSV, JSONL or Parquet); return n."""
    path = Path(path)
    write_chunks(path, variant_chunks(n, seed), cohort_format(path, format))
    return n
