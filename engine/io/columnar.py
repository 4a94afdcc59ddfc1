"""Validate a whole Arrow record batch at once, for the rows that are plainly valid.

Row-by-row validation (cases.validate_case, pydantic) costs about 15 us a row, most of it
for values Parquet already types: an int64 age, a bool flag, a string that is one of an
enum's values. Here each column is checked once per batch with Arrow compute (type, range,
allowed values), and a row every column of which passes becomes its values directly. Every
other row - a value out of range, a wrong type, an unknown or derived column with a value -
goes back to validate_case, which stays the authority for what is valid and says why not,
and the only place values are normalised (engine.io.normalise): a value not spelt as the
dictionary spells it (`Male`, `Y`, `31,5`, an integer id; an id `101.0` matches CASE_ID_SUSPECT) is
never plain here.
The values given here are exactly those validate_case would give (tested on corrupted
cohorts): numbers in number fields as floats, nulls and empty text dropped, dictionary order.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.io.deid import CASE_ID_SUSPECT
from engine.models import Scalar

CASE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # as models.Case declares it
_ORDER = {name: n for n, name in enumerate(INPUT_FIELDS)}  # validate_case's key order

Validated = tuple[str, dict[str, Scalar]]


def _checked(name: str, column: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(rows whose value in this column is plainly valid or absent, the values to keep).

    Empty text counts as absent and is kept as null: validate_case drops it (not a case_id).
    """
    spec = FIELDS_BY_NAME.get(name)
    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if text and name != "case_id":
        column = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
    absent = column.is_null()
    if spec is None or name not in _ORDER:  # unknown or derived: valid only when absent
        return absent, column
    if name == "case_id":
        if not text:
            return pa.array([False] * len(column)), column
        matches = pc.and_(
            pc.match_substring_regex(column, CASE_ID_PATTERN),
            pc.invert(pc.match_substring_regex(column, CASE_ID_SUSPECT)),
        )
        return pc.fill_null(matches, False), column
    if spec.type is FieldType.enum and text:
        allowed = pc.is_in(column, value_set=pa.array(spec.values, column.type))
    elif spec.type is FieldType.boolean and pa.types.is_boolean(column.type):
        allowed = pc.is_valid(column)
    elif pa.types.is_uint64(column.type):  # beyond int64: Arrow cannot compare it with a bound
        return absent, column
    elif spec.is_numeric and (
        pa.types.is_integer(column.type)
        or (spec.type is FieldType.number and pa.types.is_floating(column.type))
    ):
        if spec.type is FieldType.number:  # pydantic gives floats for number fields
            column = pc.cast(column, pa.float64())
            allowed = pc.is_finite(column)
        else:
            allowed = pc.is_valid(column)
        if spec.minimum is not None:
            allowed = pc.and_(allowed, pc.greater_equal(column, spec.minimum))
        if spec.maximum is not None:
            allowed = pc.and_(allowed, pc.less_equal(column, spec.maximum))
    else:  # any other type (a float age, text in a number field...): validate_case decides
        return absent, column
    return pc.or_(absent, pc.fill_null(allowed, False)), column


@dataclass(frozen=True)
class Columns:
    """A record batch validated column by column: which rows are plainly valid, and the values
    validate_case would give them, by field (nulls where unknown; dictionary order)."""

    plain: pa.Array  # boolean, one per row
    values: dict[str, pa.Array]
    rows: int

    def row_values(self, indices: list[int]) -> list[Validated]:
        """(case_id, known values) of the given (plainly valid) rows, as validate_case gives."""
        if not indices:
            return []
        picked = pa.array(indices, pa.int64())
        rows: list[dict[str, Scalar]] = [{} for _ in indices]
        for name, column in self.values.items():
            values = column.take(picked)
            given = values.to_pylist()
            if values.null_count == 0:
                for row, value in zip(rows, given, strict=True):
                    row[name] = value
            elif values.null_count < len(values):
                for n in pc.indices_nonzero(values.is_valid()).to_pylist():
                    rows[n][name] = given[n]
        return [(str(row.pop("case_id")), row) for row in rows]


def validate_columns(batch: pa.RecordBatch, ignored: frozenset[str] = frozenset()) -> Columns:
    """Check every column of a record batch once; see the module docstring."""
    names = sorted((n for n in batch.schema.names if n not in ignored), key=_position)
    if len(set(names)) != len(names) or "case_id" not in names:
        # duplicate or missing columns: row by row
        return Columns(pa.array([False] * batch.num_rows), {}, batch.num_rows)
    plain: pa.Array | None = None
    values: dict[str, pa.Array] = {}
    for name in names:  # each row's values in dictionary order
        ok, values[name] = _checked(name, batch.column(name))
        if ok.null_count or ok.true_count != len(ok):
            plain = ok if plain is None else pc.and_(plain, ok)
    if plain is None:
        plain = pa.array([True] * batch.num_rows)
    return Columns(plain, values, batch.num_rows)


def validate_batch(
    batch: pa.RecordBatch, ignored: frozenset[str] = frozenset()
) -> list[Validated | None]:
    """Per row, (case_id, known values) as validate_case gives them, or None where a value
    needs validate_case itself (to be refused with its reason, or to be converted)."""
    columns = validate_columns(batch, ignored)
    if not columns.values:
        return [None] * batch.num_rows
    oks = columns.plain.to_pylist()
    found = iter(columns.row_values([n for n, ok in enumerate(oks) if ok]))
    return [next(found) if ok else None for ok in oks]


def _position(name: str) -> tuple[int, str]:
    return (_ORDER.get(name, len(_ORDER)), name)
