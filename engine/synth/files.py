"""Chunks of columns as Python rows, CSV, JSONL or Parquet."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.synth.chunk import OPTIONAL, TYPES, Columns

ID_PREFIX = "SYN-"

_BOOL_OBJECTS = np.array([None, False, True], dtype=object)
_ENUM_OBJECTS = {
    name: np.array([*FIELDS_BY_NAME[name].values, None], dtype=object)
    for name in OPTIONAL
    if TYPES[name] is FieldType.enum
}


def object_columns(cols: Columns, typed: bool) -> list[list[object]]:
    """Python values per field in INPUT_FIELDS order (None unknown), corruptions applied."""
    first = cols.first_row
    columns: list[list[object]] = [
        [f"{ID_PREFIX}{row:07d}" for row in range(first, first + cols.size)]
    ]
    for name in OPTIONAL:
        kind = TYPES[name]
        values: npt.NDArray[Any]
        if kind is FieldType.boolean:
            values = _BOOL_OBJECTS[cols.flag[name] + 1]
        elif kind is FieldType.enum:
            values = _ENUM_OBJECTS[name][cols.code[name]]
        else:
            numbers = cols.num[name]
            unknown = np.isnan(numbers)
            if kind is FieldType.integer:
                values = np.where(unknown, 0, numbers).astype(np.int64).astype(object)
            else:
                values = numbers.astype(object)
            values[unknown] = None
        columns.append(values.tolist())
    position = {name: i for i, name in enumerate(INPUT_FIELDS)}
    for offset, corruption in cols.overrides:
        for name, value in corruption.typed_values if typed else corruption.values:
            columns[position[name]][offset] = value
    return columns


def _text(value: object) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def write_csv(handle: Any, chunks: Iterator[Columns]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(INPUT_FIELDS)
    for cols in chunks:
        text = [list(map(_text, column)) for column in object_columns(cols, typed=False)]
        writer.writerows(zip(*text, strict=True))


def write_jsonl(handle: Any, chunks: Iterator[Columns]) -> None:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    for cols in chunks:
        lines = [
            dumps({k: v for k, v in zip(INPUT_FIELDS, values, strict=True) if v is not None})
            for values in zip(*object_columns(cols, typed=False), strict=True)
        ]
        handle.write("\n".join(lines) + "\n")


def _arrow_schema() -> Any:
    import pyarrow as pa

    types = {
        FieldType.integer: pa.int64(),
        FieldType.number: pa.float64(),
        FieldType.boolean: pa.bool_(),
        FieldType.enum: pa.string(),
        FieldType.string: pa.string(),
    }
    return pa.schema([pa.field(name, types[TYPES[name]]) for name in INPUT_FIELDS])


def _arrow_table(cols: Columns, schema: Any) -> Any:
    """One chunk as a typed Arrow table; string columns go through Python, the rest stay numpy."""
    import pyarrow as pa

    num = {name: values.copy() for name, values in cols.num.items()}
    flag = {name: values.copy() for name, values in cols.flag.items()}
    text: dict[str, list[object]] = {}
    for offset, corruption in cols.overrides:
        for name, value in corruption.typed_values:
            if name in num:
                num[name][offset] = float(value)  # type: ignore[arg-type]  # numbers by design
            elif name in flag:
                flag[name][offset] = 1 if value else 0
            else:
                text.setdefault(name, _ENUM_OBJECTS[name][cols.code[name]].tolist())
                text[name][offset] = value
    first = cols.first_row
    arrays: list[Any] = [
        pa.array([f"{ID_PREFIX}{row:07d}" for row in range(first, first + cols.size)], pa.string())
    ]
    for name in OPTIONAL:
        kind = TYPES[name]
        if kind is FieldType.boolean:
            arrays.append(pa.array(flag[name] == 1, pa.bool_(), mask=flag[name] < 0))
        elif kind is FieldType.enum:
            column = text.get(name)
            if column is None:
                column = _ENUM_OBJECTS[name][cols.code[name]].tolist()
            arrays.append(pa.array(column, pa.string()))
        else:
            unknown = np.isnan(num[name])
            if kind is FieldType.integer:
                whole = np.where(unknown, 0, num[name]).astype(np.int64)
                arrays.append(pa.array(whole, pa.int64(), mask=unknown))
            else:
                arrays.append(pa.array(num[name], pa.float64(), mask=unknown))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet(path: Path, chunks: Iterator[Columns]) -> None:
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for cols in chunks:
            writer.write_table(_arrow_table(cols, schema))
