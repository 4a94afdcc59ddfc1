"""Column-wise validation of record batches gives exactly what validate_case gives, or defers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import CaseInputError
from engine.io.cases import validate_case
from engine.io.columnar import validate_batch
from engine.synth import write_cohort


def typed(values: dict[str, Any]) -> list[tuple[str, type, Any]]:
    """Values with their types: 45 and 45.0 are equal in Python but not the same input."""
    return [(k, type(v), v) for k, v in values.items()]


def row_by_row(row: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    try:
        return validate_case(row, "t")
    except CaseInputError:
        return None


def check(batch: pa.RecordBatch, ignored: frozenset[str] = frozenset()) -> list[bool]:
    """Every row the batch check accepts is accepted alike by validate_case, same values and
    types and order; return which rows the batch check accepted."""
    accepted = []
    for row, hit in zip(batch.to_pylist(), validate_batch(batch, ignored), strict=True):
        if hit is not None:
            kept = {k: v for k, v in row.items() if k not in ignored}
            want = row_by_row(kept)
            assert want is not None, row
            assert want[0] == hit[0]
            assert typed(want[1]) == typed(hit[1])
        accepted.append(hit is not None)
    return accepted


def test_a_corrupted_synthetic_cohort_agrees_row_for_row(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    write_cohort(path, 3000, seed=11, missing=0.1, corrupt=0.05)
    accepted = rejected = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1000):
        flags = check(batch)
        accepted += sum(flags)
        rejected += sum(1 for row in batch.to_pylist() if row_by_row(row) is None)
    assert accepted > 2500  # both paths are taken
    assert rejected > 50


EDGES: list[tuple[str, pa.Array, list[bool]]] = [
    # column, values, accepted by the batch check (the rest go to validate_case)
    ("age_years", pa.array([45, None, 121, -1], pa.int64()), [True, True, False, False]),
    ("age_years", pa.array([45.0, None], pa.float64()), [False, True]),  # int from float
    ("bmi", pa.array([31, 9, None], pa.int64()), [True, False, True]),  # float from int
    ("bmi", pa.array([31.5, math.nan, math.inf, None]), [True, False, False, True]),
    ("sex", pa.array(["male", "Male", "", None]), [True, False, True, True]),
    ("diabetes", pa.array([True, False, None]), [True, True, True]),
    ("diabetes", pa.array([1, 0, None], pa.int64()), [False, False, True]),  # parsed by pydantic
    ("diabetes", pa.array(["yes", None]), [False, True]),
    ("shoe_size", pa.array([42, None], pa.int64()), [False, True]),  # unknown: refused if given
    ("bmi_class", pa.array(["obese_1", None]), [False, True]),  # derived: refused if given
]


@pytest.mark.parametrize(("name", "column", "accepted"), EDGES)
def test_edge_values_are_accepted_only_when_plainly_valid(
    name: str, column: pa.Array, accepted: list[bool]
) -> None:
    ids = pa.array([f"E-{n}" for n in range(len(column))])
    batch = pa.RecordBatch.from_arrays([ids, column], names=["case_id", name])
    assert check(batch) == accepted


def test_case_ids_and_columns_that_need_validate_case() -> None:
    ids = pa.array(["ok-1", "not ok", "", None, "x" * 65])
    batch = pa.RecordBatch.from_arrays([ids], names=["case_id"])
    assert check(batch) == [True, False, False, False, False]
    numbers = pa.RecordBatch.from_arrays([pa.array([7, 8])], names=["case_id"])
    assert check(numbers) == [False, False]
    no_id = pa.RecordBatch.from_arrays([pa.array([45])], names=["age_years"])
    assert validate_batch(no_id) == [None]


def test_ignored_columns_are_left_out() -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["I-1"]), pa.array(["free text"]), pa.array([50])],
        names=["case_id", "site_note", "age_years"],
    )
    assert validate_batch(batch) == [None]  # an unknown column with a value
    assert check(batch, frozenset({"site_note"})) == [True]
    assert validate_batch(batch, frozenset({"site_note"})) == [("I-1", {"age_years": 50})]
