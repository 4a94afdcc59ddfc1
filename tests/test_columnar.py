"""Column-wise validation of record batches gives exactly what validate_case gives, or defers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import CaseInputError
from engine.io.cases import validate_case, validate_counted
from engine.io.columnar import validate_batch, validate_columns
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
    # a pandas integer column with gaps: 45.0 is 45, as pydantic reads it; 45.5 is refused
    ("age_years", pa.array([45.0, None, 45.5, 1e300, math.inf]), [True, True, False, False, False]),
    # text (a CSV chunk, a pandas object column): plain spellings only, the rest row by row
    (
        "age_years",
        pa.array(["45", "045", " 45", "-1", "x", "", None]),
        [True] + [False] * 4 + [True] * 2,
    ),
    ("bmi", pa.array(["31.5", "31,5", "1e1", "-0", None]), [True, False, False, False, True]),
    ("diabetes", pa.array(["true", "false", "True", None]), [True, True, False, True]),
    ("diabetes", pa.array(["true", "false", None]), [True, True, True]),  # read by compare
    ("diabetes", pa.array(["true", "", None], pa.large_string()), [True, True, True]),
    ("diabetes", pa.array([1.0, 0.0, None]), [False, False, True]),  # normalised: row by row
    ("lowest_level", pa.array(["L4-L5", "L4/5", "L3-L5"]), [True, False, False]),
    ("sex", pa.array(["male", "Male", None]).dictionary_encode(), [True, False, True]),
    ("bmi", pa.array([31, 9, None], pa.int64()), [True, False, True]),  # float from int
    ("bmi", pa.array([31.5, math.nan, math.inf, None]), [True, False, False, True]),
    ("sex", pa.array(["male", "Male", "", None]), [True, False, True, True]),
    ("diabetes", pa.array([True, False, None]), [True, True, True]),
    ("diabetes", pa.array([1, 0, None], pa.int64()), [False, False, True]),  # parsed by pydantic
    ("diabetes", pa.array(["yes", None]), [False, True]),
    ("shoe_size", pa.array([42, None], pa.int64()), [False, True]),  # unknown: refused if given
    # a column told plain by its least and greatest value (and sum), or not: at either bound,
    # just beyond, NaN alone, an infinity, values whose sum overflows
    ("age_years", pa.array([0, 120, None], pa.int32()), [True, True, True]),
    ("age_years", pa.array([0, 121], pa.int32()), [True, False]),
    ("dexa_t_score", pa.array([-7.0, 4.0, None]), [True, True, True]),
    ("dexa_t_score", pa.array([-7.0, -7.000001]), [True, False]),
    ("bmi", pa.array([math.nan, None]), [False, True]),
    ("bmi", pa.array([-math.inf, 31.0]), [False, True]),
    ("bmi", pa.array([1e308, 1e308]), [False, False]),
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


@pytest.mark.timeout(60)
def test_a_case_id_is_plain_only_where_models_case_takes_it() -> None:
    """Ids are cleared by CASE_ID_SUSPECT and their length alone: ids just inside and just
    outside models.Case's pattern (64 and 65 characters, a newline, a letter beyond ASCII)."""
    ids = pa.array(["A1" * 32, "A1" * 32 + "B", "A1\n", "\u00c41", "A1 ", "1", "-1", "a.1_b"])
    batch = pa.RecordBatch.from_arrays([ids], names=["case_id"])
    assert check(batch) == [True, False, False, False, False, True, True, True]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_text_of_plain_values_is_kept_as_given_as_text(kind: pa.DataType) -> None:
    """A text column every value of which is plain as given is kept as it is; empty text is
    still absent, and the values are `string` whatever the text type given."""
    sex = pa.array(["male", "female", None, "male"], kind)
    level = pa.array(["L4-L5", "", "L5-S1", None], kind)
    ids = pa.array([f"T-{n}" for n in range(4)])
    batch = pa.RecordBatch.from_arrays([ids, sex, level], names=["case_id", "sex", "lowest_level"])
    assert check(batch) == [True] * 4
    columns = validate_columns(batch, normalise=True)
    assert columns.plain.to_pylist() == [True] * 4
    assert columns.values["sex"].type == columns.values["lowest_level"].type == pa.string()
    assert columns.values["lowest_level"].to_pylist() == ["L4-L5", None, "L5-S1", None]
    assert [values for _, values in columns.row_values([0, 1, 2, 3])] == [
        {"sex": "male", "lowest_level": "L4-L5"}, {"sex": "female"},
        {"lowest_level": "L5-S1"}, {"sex": "male"},
    ]  # fmt: skip
    assert columns.changes == {}


def test_ignored_columns_are_left_out() -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["I-1"]), pa.array(["free text"]), pa.array([50])],
        names=["case_id", "site_note", "age_years"],
    )
    assert validate_batch(batch) == [None]  # an unknown column with a value
    assert check(batch, frozenset({"site_note"})) == [True]
    assert validate_batch(batch, frozenset({"site_note"})) == [("I-1", {"age_years": 50})]


NORMALISED: list[tuple[str, pa.Array]] = [
    ("sex", pa.array(["male", "Male", "M", "x", None, "M"])),
    ("diabetes", pa.array(["true", "Y", "no", "maybe", None])),
    ("diabetes", pa.array(["true", "false", None, "false"])),
    ("diabetes", pa.array([1.0, 0.0, 0.5, None])),
    ("bmi", pa.array(["31,5", "31.5", "1,234", None, "31,50"])),
    ("lowest_level", pa.array(["L4-L5", "L4/5", "L3-L5", "L5-S1"])),
    ("sex", pa.array(["Male", "female", None]).dictionary_encode()),
    ("age_years", pa.array([45.0, None, 46.0])),
]


@pytest.mark.parametrize(("name", "column"), NORMALISED)
def test_normalised_columns_give_what_validate_counted_gives(name: str, column: pa.Array) -> None:
    """Read once per distinct value, the normalised values, and the counts and first example
    a batch summary shows, are those of validate_counted row by row."""
    ids = pa.array([f"N-{n}" for n in range(len(column))])
    batch = pa.RecordBatch.from_arrays([ids, column], names=["case_id", name])
    columns = validate_columns(batch, normalise=True)
    plain = np.flatnonzero(columns.plain.to_numpy(zero_copy_only=False))
    assert len(plain) > 1
    counts: dict[str, tuple[int, int, str | None]] = {}
    rows = batch.to_pylist()
    for n, (case_id, values) in zip(
        plain.tolist(), columns.row_values(plain.tolist()), strict=True
    ):
        want_id, want, changes = validate_counted(rows[n], "t", row=n)
        assert (want_id, typed(want)) == (case_id, typed(values))
        for change in changes:
            seen, first, example = counts.get(change.field, (0, n, change.example))
            counts[change.field] = (seen + 1, first, example)
    assert columns.changed(plain) == counts
    for n in set(range(len(rows))) - set(plain.tolist()):  # left to validate_case: refused,
        if row_by_row(rows[n]) is not None:  # or read there (a span also fills `levels`)
            assert name == "lowest_level" or rows[n][name] == 0.5 or rows[n][name] == "1,234"


def test_one_segment_spelt_as_exports_spell_it_is_read_by_column_and_a_span_is_not() -> None:
    """`L4/5`, `L5/S1`, `c5/6` name one segment: read once per distinct value, as `Male` is, so
    a registry export is not screened row by row; a span (`L3-L5`) also states `levels` and
    stays with the row path, which checks it against `levels`."""
    given = ["L4/5", "L5/S1", "c5/6", "L4-L5", "L3-L5", "L9/10"]
    batch = pa.RecordBatch.from_arrays(
        [pa.array([f"S-{n}" for n in range(len(given))]), pa.array(given)],
        names=["case_id", "lowest_level"],
    )
    columns = validate_columns(batch, normalise=True)
    assert columns.plain.to_pylist() == [True, True, True, True, False, False]
    plain = [0, 1, 2, 3]
    assert [values["lowest_level"] for _, values in columns.row_values(plain)] == [
        "L4-L5", "L5-S1", "C5-C6", "L4-L5",
    ]  # fmt: skip
    assert columns.changed(np.array(plain))["lowest_level"][0] == 3  # counted as normalised


def test_only_short_plain_text_outlives_the_chunk_that_read_it() -> None:
    """A field's text values are kept for the next chunk in a store as long-lived as the
    process (a notebook, the service): a dictionary spelling and an in-range number are kept,
    a value that fails its field (free text that may identify someone) or a long one never is,
    and the store is bounded."""
    import engine.io.columnar as columnar

    columnar._READ.clear()
    free = ["Jane Roe, 12 Elm St", "Male", "x" * 40, "m"]
    numbers = ["31,5", "not measured 1970-01-01", "3" * 40, "28.0"]
    batch = pa.RecordBatch.from_arrays(
        [pa.array([f"S-{n}" for n in range(4)]), pa.array(free), pa.array(numbers)],
        names=["case_id", "sex", "bmi"],
    )
    columns = validate_columns(batch, normalise=True)
    assert columns.plain.to_pylist() == [False, False, False, True]  # each row has a bad value
    kept = {given for _, given in columnar._READ}
    assert kept == {"Male", "m", "31,5", "28.0"}
    assert not kept & {"Jane Roe, 12 Elm St", "x" * 40, "not measured 1970-01-01", "3" * 40}
    again = validate_columns(batch, normalise=True)  # the next chunk reads the same
    assert again.plain.to_pylist() == columns.plain.to_pylist()
    for n in range(columnar.READ_KEPT + 10):  # bounded: the store starts again when full
        columnar._read_named("bmi", str(20 + n / 1000))
    assert len(columnar._READ) <= columnar.READ_KEPT
