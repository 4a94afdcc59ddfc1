"""Deterministic synthetic cohorts of raw case rows, for tests, the demo and benchmarks.

Rows are made column by column in numpy batches of CHUNK_ROWS so that a million rows take seconds,
and every draw comes from a PCG64 stream seeded by (seed, chunk) through SeedSequence, never from
hash order, so the same arguments give the same rows on any machine with the same numpy.
Category draws use our own inverse-CDF on uniform floats rather than Generator.choice, and
continuous values are rounded (whole units, or one decimal), so they do not hinge on the last bit
of a platform's libm. Missing values and corruptions come from their own streams: changing
`missing` or `corrupt` blanks or spoils cells of the same underlying cohort instead of drawing a
new one, which is what lets tests measure the missing share and know the corrupt rows.

Where things are:
- mix.yaml       the clinical mix as data: diagnosis shares, regions, levels, ages, procedure and
                 technique rules, finding mixes, score points (checked on load by mix.py)
- cohort.py      one chunk, step by step in the order of the draws
- anatomy.py     diagnosis, region, lowest level;  demographics.py  sex, age, BMI, comorbidities
- diagnoses.py   one generator per diagnosis (subtypes, findings) and the GENERATORS registry
- treatment.py   procedure, levels spanned, MIS technique;  history.py  red flags, site
- corrupt.py     planned corruptions;  files.py  rows, CSV, JSONL and Parquet

To add a diagnosis (it must first be a `diagnosis` value of the data dictionary): add its entry to
`diagnoses` in mix.yaml (share, regions, age, levels, red-flag chances, procedure rules; see the
comment there), and add it to GENERATORS in diagnoses.py, with a `findings` function if it records
fields of its own and a `subtypes` function if age, sex or procedures depend on a subtype. A new
field of an existing diagnosis goes in its `late` step, which keeps every other value of every
cohort (tests/test_synth.py fails when the rules read a field the generator never fills). Adding
it anywhere but last changes the cohort every seed gives: update the pinned hashes in
tests/test_synth.py and regenerate cases/cohort/synthetic-500.csv (seed 2026, see README.md).

Parquet keeps every column at its dictionary type, so a wrong-type corruption ('thirty' in
age_years) cannot be stored there; in Parquet (and with generate_rows(typed=True)) such a row
holds an out-of-range number for the same field instead, see Corruption.typed_values. Every other
corruption is identical in all three formats.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.dictionary import INPUT_FIELDS
from engine.errors import UsageError
from engine.synth.chunk import Columns
from engine.synth.cohort import generate_chunk
from engine.synth.corrupt import (
    Corruption,
    check_arguments,
    corrupt_row_numbers,
    corruption_plan,
)
from engine.synth.diagnoses import checked_mix
from engine.synth.files import ID_PREFIX, object_columns, write_csv, write_jsonl, write_parquet
from engine.synth.mix import ClinicalMix, MixError, load_mix

__all__ = [
    "CHUNK_ROWS",
    "DIAGNOSIS_MIX",
    "FORMATS",
    "ID_PREFIX",
    "ClinicalMix",
    "CohortFormatError",
    "Corruption",
    "MixError",
    "cohort_format",
    "corrupt_row_numbers",
    "corruption_plan",
    "generate_rows",
    "load_mix",
    "write_cohort",
]

CHUNK_ROWS = 50_000
FORMATS = ("csv", "jsonl", "parquet")
DIAGNOSIS_MIX: dict[str, float] = {name: dx.share for name, dx in checked_mix().diagnoses.items()}


def cohort_chunks(
    n: int, seed: int, missing: float, corrupt: float, first_row: int = 1
) -> Iterator[Columns]:
    """The cohort's chunks of columns, as they are made; `first_row` numbers its first case_id
    (a part of a file made of several cohorts starts after the last: engine.synth.variants)."""
    check_arguments(n, seed, missing, corrupt)
    mix = checked_mix()
    plan = sorted(corruption_plan(n, seed, corrupt).items())
    position = 0
    for index, start in enumerate(range(0, n, CHUNK_ROWS)):
        size = min(CHUNK_ROWS, n - start)
        cols = generate_chunk(mix, seed, index, size, first_row + index * CHUNK_ROWS, missing)
        while position < len(plan) and plan[position][0] <= start + size:
            row, corruption = plan[position]
            cols.overrides.append((row - start - 1, corruption))
            position += 1
        yield cols


def generate_rows(
    n: int, seed: int, *, missing: float = 0.05, corrupt: float = 0.01, typed: bool = False
) -> Iterator[dict[str, object]]:
    """Yield n raw case rows: every input field of the data dictionary, None where unknown.

    `typed=True` gives the rows as Parquet holds them (wrong-type corruptions become
    out-of-range numbers), so that a reader of the Parquet file can compare like with like.
    """
    for cols in cohort_chunks(n, seed, missing, corrupt):
        for values in zip(*object_columns(cols, typed), strict=True):
            yield dict(zip(INPUT_FIELDS, values, strict=True))


class CohortFormatError(UsageError, ValueError):
    """An output name whose format cannot be told (a user error, and a ValueError as before)."""


def cohort_format(path: Path, format: str | None = None) -> str:
    """The output format: the one given, else from the extension (.csv, .jsonl, .parquet)."""
    chosen = format if format is not None else path.suffix.lower().lstrip(".")
    chosen = {"ndjson": "jsonl", "pq": "parquet"}.get(chosen, chosen)
    if chosen not in FORMATS:
        raise CohortFormatError(
            f"{path}: cannot tell the cohort format from the extension; "
            f"use one of {', '.join('.' + f for f in FORMATS)}"
        )
    return chosen


def write_cohort(
    path: Path,
    n: int,
    seed: int,
    *,
    missing: float = 0.05,
    corrupt: float = 0.01,
    format: str | None = None,
) -> int:
    """Write a synthetic cohort as CSV, JSONL or Parquet; return the number of rows written.

    Chunks are written as they are made, so memory stays flat however many rows (write_chunks).
    """
    path = Path(path)
    write_chunks(path, cohort_chunks(n, seed, missing, corrupt), cohort_format(path, format))
    return n


def write_chunks(path: Path, chunks: Iterator[Columns], chosen: str) -> None:
    """Write chunks to `path` in format `chosen` (csv, jsonl or parquet), as they are made; the
    file appears under its name only when complete (temp file beside it, then os.replace)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if chosen == "parquet":
            write_parquet(temp, chunks)
        else:
            with open(temp, "w", encoding="utf-8", newline="") as handle:
                writer: Callable[[Any, Iterator[Columns]], None]
                writer = write_csv if chosen == "csv" else write_jsonl
                writer(handle, chunks)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
