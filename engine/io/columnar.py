"""Validate a whole Arrow record batch at once, for the rows that are plainly valid.

Row-by-row validation (cases.validate_case, pydantic) costs about 15 us a row, most of it
for values Parquet already types: an int64 age, a bool flag, a string that is one of an
enum's values. Here each column is checked once per batch with Arrow compute (type, range,
allowed values), and a row every column of which passes becomes its values directly. Every
other row - a value out of range, a wrong type, an unknown or derived column with a value -
goes back to validate_case, which stays the authority for what is valid and says why not.
Values are normalised by engine.io.normalise alone: a text column (CSV, a pandas object or
categorical column) is dictionary-encoded and each distinct value read once with
normalise_value, and taken only when the normaliser places it (`Male` -> male) or it is a
plain number (`45`, `31.5`); with `normalise` off a changed value is not plain (a caller that
counts changes and cannot take Columns.changes). A float in an integer field (a pandas column
with gaps) is taken when whole, as pydantic reads it. Ids are never normalised here (an id
`101.0` matches CASE_ID_SUSPECT; an integer id column goes row by row).
The values given here are exactly those validate_case would give (tested on corrupted
cohorts): numbers in number fields as floats, nulls and empty text dropped, dictionary order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldSpec, FieldType
from engine.io.deid import CASE_ID_SUSPECT
from engine.io.normalise import LEVEL_FIELDS, Change, normalise_value, parse_levels
from engine.models import Scalar

# models.Case's id is `^[A-Za-z0-9._-]{1,64}$`: CASE_ID_SUSPECT matches any other character and
# an id without a digit (the empty one too), so an id it clears is valid when short enough
CASE_ID_LONGEST = 64
_ORDER = {name: n for n, name in enumerate(INPUT_FIELDS)}  # validate_case's key order

Validated = tuple[str, dict[str, Scalar]]


# text a number field reads exactly as float()/int() do (pydantic agrees); any other spelling
# (`+5`, ` 5`, `1e1`, `31,5`) is read by the normaliser and validate_case, row by row
UNREAD = "\x00"  # a value mixed_text cannot give as text: its row is validated alone
_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})")
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?")
_KINDS = {
    FieldType.integer: pa.int64(),
    FieldType.number: pa.float64(),
    FieldType.boolean: pa.bool_(),
}


@dataclass(frozen=True)
class Checked:
    """One column checked: which rows are plainly valid or absent (None: every row), the
    values to keep, and (when values were normalised) which rows' values the normaliser
    changed and what was given there."""

    ok: np.ndarray | None
    values: pa.Array
    changed: np.ndarray | None = None
    given: pa.Array | None = None


def _checked(name: str, column: pa.Array, normalise: bool) -> Checked:
    """A column's plainly valid rows and values; empty text counts as absent (kept as null):
    validate_case drops it (not a case_id).

    `normalise`: text, and floats in boolean fields, are read as the normaliser reads them,
    once per distinct value; else a value the normaliser would change is not plain. A column
    whose type and least and greatest value show every row plain costs one kernel call or none.
    """
    spec = FIELDS_BY_NAME.get(name)
    if pa.types.is_dictionary(column.type):  # a categorical column: its values as they are
        column = column.dictionary_decode()
    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if spec is None or name not in _ORDER:  # unknown or derived: valid only when absent
        column = _blanked(column) if text else column
        return Checked(_rows(column.is_null()), column)
    if name == "case_id":
        return _case_ids(column, text)
    if column.null_count == len(column):  # nothing given: any type
        return Checked(None, pa.nulls(len(column), _KINDS.get(spec.type, pa.string())))
    if text and (spec.type is not FieldType.enum or normalise):
        return _read_text(spec, column, normalise)
    if text:  # an enum's values as given
        column = _blanked(column)
        if column.null_count == len(column):
            return Checked(None, pa.nulls(len(column), pa.string()))
        allowed = pc.is_in(column, value_set=pa.array(spec.values, column.type))
        return Checked(_rows(pc.or_(column.is_null(), pc.fill_null(allowed, False))), column)
    if spec.type is FieldType.boolean and pa.types.is_boolean(column.type):
        return Checked(None, column)  # true, false or absent: every row plain
    if spec.type is FieldType.boolean and normalise and pa.types.is_floating(column.type):
        return _boolean_floats(column)
    if pa.types.is_uint64(column.type):  # beyond int64: Arrow cannot compare it with a bound
        return Checked(_rows(column.is_null()), column)
    if spec.type is FieldType.integer and pa.types.is_floating(column.type):
        # a pandas integer column with gaps: 101.0 is 101 (pydantic reads it so, unchanged);
        # 101.5 is refused row by row, with its reason
        whole = pc.and_(pc.equal(column, pc.floor(column)), pc.less(pc.abs(column), float(2**53)))
        whole = _in_range(spec, column, whole)
        absent = column.is_null()
        column = pc.cast(pc.if_else(whole, column, pa.scalar(None, column.type)), pa.int64())
        return Checked(_rows(pc.or_(absent, whole)), column)
    if spec.is_numeric and (
        pa.types.is_integer(column.type)
        or (spec.type is FieldType.number and pa.types.is_floating(column.type))
    ):
        if spec.type is FieldType.number and column.type != pa.float64():
            column = pc.cast(column, pa.float64())  # pydantic gives floats for number fields
        return _numbers(spec, column)
    # any other type (a float age, text in a number field...): validate_case decides
    return Checked(_rows(column.is_null()), column)


def _rows(flags: pa.Array) -> np.ndarray | None:
    """A boolean column without nulls as numpy, or None when every row is true."""
    if flags.true_count == len(flags):
        return None
    rows: np.ndarray = flags.to_numpy(zero_copy_only=False)
    return rows


def _blanked(column: pa.Array) -> pa.Array:
    """Text with empty values as nulls (validate_case drops empty text)."""
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)


def _case_ids(column: pa.Array, text: bool) -> Checked:
    """Ids valid and not shaped like an identifier; any other goes to validate_case."""
    if not text:
        return Checked(np.zeros(len(column), np.bool_), column)
    short = pc.less_equal(pc.binary_length(column), CASE_ID_LONGEST)
    cleared = pc.and_not(short, pc.match_substring_regex(column, CASE_ID_SUSPECT))
    return Checked(_rows(pc.fill_null(cleared, False)), column)


def _numbers(spec: FieldSpec, column: pa.Array) -> Checked:
    """Integers in an integer field, or floats in a number field: plain when finite and in
    range. Told from the column's least and greatest value (and, for floats, its sum: NaN or
    infinite when any value is, or when the sum overflows) when every value is plain."""
    extremes = pc.min_max(column)
    least, greatest = extremes["min"].as_py(), extremes["max"].as_py()
    finite = pa.types.is_integer(column.type) or math.isfinite(pc.sum(column).as_py())
    if finite and _bounded(spec, least) and _bounded(spec, greatest):
        return Checked(None, column)
    allowed = pc.is_valid(column) if pa.types.is_integer(column.type) else pc.is_finite(column)
    allowed = _in_range(spec, column, allowed)
    return Checked(_rows(pc.or_(column.is_null(), allowed)), column)


def _in_range(spec: FieldSpec, column: pa.Array, allowed: pa.Array) -> pa.Array:
    if spec.minimum is not None:
        allowed = pc.and_(allowed, pc.greater_equal(column, spec.minimum))
    if spec.maximum is not None:
        allowed = pc.and_(allowed, pc.less_equal(column, spec.maximum))
    return pc.fill_null(allowed, False)


def _boolean_floats(column: pa.Array) -> Checked:
    """0.0 and 1.0 in a boolean field (a pandas boolean column with gaps), as the normaliser
    reads them: changed values, counted as such."""
    known = pc.is_valid(column)
    ok = pc.or_(pc.invert(known), pc.fill_null(pc.is_in(column, pa.array([0.0, 1.0])), False))
    changed = known.to_numpy(zero_copy_only=False)
    return Checked(_rows(ok), pc.equal(column, 1.0), changed, column)


_ABSENT = (True, None, False)  # a null or empty text: (plain, value, changed)


def _read_text(spec: FieldSpec, column: pa.Array, normalise: bool) -> Checked:
    """A text column read once per distinct value, as normalise_value and validate_case read
    each value: the value, whether it is plain, whether the normaliser changed it. A column
    of plain values as given is kept as it is; one of `true` and `false` is read by compare."""
    if spec.type is FieldType.boolean:
        true = pc.equal(column, "true")
        if (
            true.true_count + pc.equal(column, "false").true_count
            == len(column) - column.null_count
        ):
            return Checked(None, true)
    encoded = (
        pc.dictionary_encode(column).combine_chunks()
        if isinstance(column, pa.ChunkedArray)
        else pc.dictionary_encode(column)
    )
    distinct = encoded.dictionary.to_pylist()
    read = [_read_named(spec.name, value) if value else _ABSENT for value in distinct]
    kind = _KINDS.get(spec.type, pa.string())
    if column.type == kind and all(
        ok and not changed and value == given
        for (ok, value, changed), given in zip(read, distinct, strict=True)
    ):
        return Checked(None, column)  # every value plain and as given, nulls absent
    indices = encoded.indices
    if indices.null_count:  # a null reads as the entry after the distinct values: absent
        indices = pc.fill_null(indices, len(read))
    read.append(_ABSENT)
    at = indices.to_numpy()
    plain = np.array([ok and (normalise or not changed) for ok, _, changed in read])
    values = pa.array([value if ok else None for ok, value, _ in read], kind).take(indices)
    ok = None if plain.all() else plain[at]
    changed = np.array([c for _, _, c in read])
    if not normalise or not changed.any():
        return Checked(ok, values)
    return Checked(ok, values, changed[at], column)


_READ: dict[tuple[str, str], tuple[bool, Scalar | None, bool]] = {}
READ_KEPT = 1 << 14  # values kept for the next chunk, at most (then the store starts again)
KEPT_TEXT = 32  # characters of a value worth keeping, at most


def _read_named(name: str, given: str) -> tuple[bool, Scalar | None, bool]:
    """_read_value, kept for the next chunk: a field's values recur (a CSV's numbers too).

    Only a short value that reads as plain is kept (a dictionary spelling, an in-range number):
    the store lives as long as the process (a notebook, the service), and a value that fails
    its field may be free text that identifies someone (engine.io.deid)."""
    found = _READ.get((name, given))
    if found is None:
        found = _read_value(FIELDS_BY_NAME[name], given)
        if found[0] and len(given) <= KEPT_TEXT:
            if len(_READ) >= READ_KEPT:
                _READ.clear()
            _READ[name, given] = found
    return found


def _read_value(spec: FieldSpec, given: str) -> tuple[bool, Scalar | None, bool]:
    """(plain, value, changed) of one text value of a field, as the row path reads it."""
    if spec.name in LEVEL_FIELDS:
        if given in spec.values:
            return True, given, False
        segments = parse_levels(given)
        if segments is None or len(segments) != 1:  # a span also states `levels`: row by row
            return False, given, False
        return segments[0] in spec.values, segments[0], True  # `L4/5`: one segment respelt
    fixed = normalise_value(spec.name, given)
    if spec.type is FieldType.enum:
        return fixed in spec.values, fixed, fixed != given
    if spec.type is FieldType.boolean:
        return type(fixed) is bool, fixed, given not in ("true", "false")
    if spec.type is FieldType.number:
        if type(fixed) is float:  # a decimal comma
            return _bounded(spec, fixed), fixed, True
        if _NUMBER_TEXT.fullmatch(given):
            return _bounded(spec, float(given)), float(given), False
    if spec.type is FieldType.integer and _INTEGER_TEXT.fullmatch(given):
        return _bounded(spec, int(given)), int(given), False
    return False, None, False


def _bounded(spec: FieldSpec, number: float) -> bool:
    return (spec.minimum is None or number >= spec.minimum) and (
        spec.maximum is None or number <= spec.maximum
    )


@dataclass(frozen=True)
class Columns:
    """A record batch validated column by column: which rows are plainly valid, the values
    validate_case would give them, by field (nulls where unknown; dictionary order), and per
    field whose values the normaliser changed, where (a boolean per row) and what was given."""

    plain: pa.Array  # boolean, one per row
    values: dict[str, pa.Array]
    rows: int
    changes: dict[str, tuple[np.ndarray, pa.Array]] = field(default_factory=dict)

    def changed(self, rows: np.ndarray) -> dict[str, tuple[int, int, str | None]]:
        """Per field, how many of these rows' values the normaliser changed, the first such row
        and its summary example (normalise.Change.example), as validate_counted counts."""
        counts: dict[str, tuple[int, int, str | None]] = {}
        for name, (changed, given) in self.changes.items():
            hit = rows[changed[rows]]
            if len(hit):
                first = int(hit.min())
                value = self.values[name][first].as_py()
                example = Change(name, given[first].as_py(), value).example
                counts[name] = (len(hit), first, example)
        return counts

    def row_values(self, indices: list[int]) -> list[Validated]:
        """(case_id, known values) of the given (plainly valid) rows, as validate_case gives;
        the rows are taken from every column given anywhere at once."""
        if not indices:
            return []
        given = {
            name: column for name, column in self.values.items() if column.null_count < len(column)
        }
        picked = pa.RecordBatch.from_arrays(list(given.values()), names=list(given)).take(
            pa.array(indices, pa.int64())
        )
        rows: list[dict[str, Scalar]] = [{} for _ in indices]
        for name, values in zip(given, picked.columns, strict=True):
            if values.null_count == 0:
                for row, value in zip(rows, values.to_pylist(), strict=True):
                    row[name] = value
            elif values.null_count < len(values):
                for row, value in zip(rows, values.to_pylist(), strict=True):
                    if value is not None:
                        row[name] = value
        return [(str(row.pop("case_id")), row) for row in rows]


def validate_columns(
    batch: pa.RecordBatch, ignored: frozenset[str] = frozenset(), normalise: bool = False
) -> Columns:
    """Check every column of a record batch once; see the module docstring.

    `normalise`: values the normaliser changes (`Male`, `Y`, `31,5`, 1.0 for true) are plain,
    as it changes them (Columns.changes says where); else they are left to validate_case.
    """
    names = sorted((n for n in batch.schema.names if n not in ignored), key=_position)
    if len(set(names)) != len(names) or "case_id" not in names:
        # duplicate or missing columns: row by row
        return Columns(pa.array([False] * batch.num_rows), {}, batch.num_rows)
    plain = np.ones(batch.num_rows, np.bool_)
    values: dict[str, pa.Array] = {}
    changes: dict[str, tuple[np.ndarray, pa.Array]] = {}
    for name in names:  # each row's values in dictionary order
        checked = _checked(name, batch.column(name), normalise)
        values[name] = checked.values
        if checked.changed is not None and checked.given is not None:
            changes[name] = (checked.changed, checked.given)
        if checked.ok is not None:
            plain &= checked.ok
    return Columns(pa.array(plain), values, batch.num_rows, changes)


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


def mixed_text(name: str, value: Scalar | None) -> str | None:
    """A value of a column Arrow cannot type (pd.read_csv gives numbers and text in one column
    when a number column holds a typo), as text the columnar check reads as the row path reads
    the value itself, or as UNREAD (never plain: validate_case reads that row).

    Only text, and whole or decimal numbers in number fields, keep their meaning as text.
    """
    if value is None or type(value) is str:
        return value
    spec = FIELDS_BY_NAME.get(name)
    if spec is None or not spec.is_numeric or type(value) not in (int, float):
        return UNREAD
    if isinstance(value, float) and spec.type is FieldType.integer:  # 42.0 is read as 42
        return str(int(value)) if value.is_integer() else UNREAD
    return str(value) if type(value) is int else repr(value)


def _position(name: str) -> tuple[int, str]:
    return (_ORDER.get(name, len(_ORDER)), name)
