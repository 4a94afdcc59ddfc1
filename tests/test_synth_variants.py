"""The differential cohort (engine/synth/variants.py): three variants in turn, one numbering."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pyarrow.parquet as pq

from engine.synth import ID_PREFIX
from engine.synth.chunk import OPTIONAL
from engine.synth.variants import VARIANTS, Part, corrupt_rows, variant_parts, write_variants

ROWS, SEED = 3_000, 5


def test_the_parts_cover_every_row_once_in_turn() -> None:
    for n in (0, 1, 7, ROWS, 1_000_001):
        parts = variant_parts(n, SEED)
        assert [p.variant for p in parts] == list(VARIANTS)
        assert sum(p.rows for p in parts) == n
        assert parts[0].first_row == 1
        for before, after in itertools.pairwise(parts):
            assert after.first_row == before.last_row + 1
        assert len({p.seed for p in parts}) == len(parts)


def test_each_variant_is_what_it_says(tmp_path: Path) -> None:
    """One numbering (unique ids, in order); the missing part leaves far more unknown than
    the cohort part; the corrupt part holds far more planted corruptions, in its own rows."""
    path = tmp_path / "cohort.csv"
    write_variants(path, ROWS, SEED)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == [f"{ID_PREFIX}{n:07d}" for n in range(1, ROWS + 1)]
    cohort, missing, corrupt = variant_parts(ROWS, SEED)

    def known_per_row(part: Part) -> float:
        chosen = rows[part.first_row - 1 : part.last_row]
        return sum(1 for row in chosen for name in OPTIONAL if row[name]) / len(chosen)

    # half of the known values blanked, against 5 %: about 0.53 times as many known
    assert known_per_row(missing) < 0.65 * known_per_row(cohort)
    planted = corrupt_rows(ROWS, SEED)
    in_corrupt = {n for n in planted if corrupt.first_row <= n <= corrupt.last_row}
    assert len(in_corrupt) == round(corrupt.rows * corrupt.variant.corrupt)
    assert not {n for n in planted if missing.first_row <= n <= missing.last_row}
    assert len(planted - in_corrupt) == round(cohort.rows * cohort.variant.corrupt)


def test_csv_and_parquet_hold_the_same_cases(tmp_path: Path) -> None:
    write_variants(tmp_path / "c.csv", ROWS, SEED)
    write_variants(tmp_path / "c.parquet", ROWS, SEED)
    with open(tmp_path / "c.csv", encoding="utf-8", newline="") as handle:
        ids = [row["case_id"] for row in csv.DictReader(handle)]
    assert pq.read_table(tmp_path / "c.parquet").column("case_id").to_pylist() == ids
