"""Write batch outputs as they come, atomically: a temp file renamed into place at the end.

An interrupted run leaves no half-written file under the final name.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.batch.worker import FLAT_COLUMNS, FLAT_SCHEMA, OutputFormat

PARQUET_ROW_GROUP = 20_000
# a cell a spreadsheet would evaluate as a formula (OWASP "CSV injection"): = + - @ tab CR
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(row: tuple[str, ...]) -> tuple[str, ...]:
    """A CSV row whose cells no spreadsheet evaluates: a case_id that starts like a formula gets
    a leading apostrophe (-2-3 is written '-2-3), as OWASP advises. The other cells are verdicts,
    rule ids and field names, which never do."""
    if not row[0].startswith(FORMULA_START):
        return row
    return ("'" + row[0], *row[1:])


class AtomicPath:
    """A temp path beside the target; `commit` renames it into place, `abort` removes it."""

    def __init__(self, target: str) -> None:
        self.target = Path(target)
        self.temp = self.target.with_name(f".{self.target.name}.{os.getpid()}.tmp")

    def commit(self) -> None:
        os.replace(self.temp, self.target)

    def abort(self) -> None:
        self.temp.unlink(missing_ok=True)


class ResultWriter:
    """Output rows in input order: JSON lines, flattened CSV, or flattened Parquet."""

    def __init__(self, target: str, fmt: OutputFormat) -> None:
        self.format = fmt
        self.atomic = None if target == "-" else AtomicPath(target)
        self._stream: IO[str] | None = None
        self._csv: Any = None
        self._parquet: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []  # Parquet: record batches built by workers
        self._pending_rows = 0
        if fmt is OutputFormat.parquet:
            if self.atomic is None:
                raise ValueError("Parquet cannot be written to stdout")
            self._parquet = pq.ParquetWriter(self.atomic.temp, FLAT_SCHEMA)
            return
        if self.atomic is None:
            self._stream = sys.stdout
        else:
            self._stream = open(self.atomic.temp, "w", encoding="utf-8", newline="")  # noqa: SIM115
        if fmt is OutputFormat.csv:
            self._csv = csv.writer(self._stream, lineterminator="\n")
            self._csv.writerow(FLAT_COLUMNS)

    def write(self, records: list[Any]) -> None:
        if self.format is OutputFormat.jsonl:
            assert self._stream is not None  # noqa: S101  # set for text formats
            self._stream.write("".join(f"{line}\n" for line in records))
        elif self.format is OutputFormat.csv:
            self._csv.writerows(map(spreadsheet_safe, records))
        else:
            self._pending.extend(records)
            self._pending_rows += sum(batch.num_rows for batch in records)
            if self._pending_rows >= PARQUET_ROW_GROUP:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        if self._pending and self._parquet is not None:
            table = pa.Table.from_batches(self._pending, schema=FLAT_SCHEMA).combine_chunks()
            self._parquet.write_table(table)
            self._pending, self._pending_rows = [], 0

    def close(self, *, commit: bool) -> None:
        if self._parquet is not None:
            if commit:
                self._flush_parquet()
            self._parquet.close()
        elif self._stream is not None and self._stream is not sys.stdout:
            self._stream.close()
        elif self._stream is sys.stdout:
            self._stream.flush()
        if self.atomic is not None:
            self.atomic.commit() if commit else self.atomic.abort()


class ErrorWriter:
    """The errors file: one JSON line per problem of a rejected row (or stderr lines)."""

    def __init__(self, target: str | None) -> None:
        self.atomic = AtomicPath(target) if target else None
        self._stream: IO[str] = (
            open(self.atomic.temp, "w", encoding="utf-8")  # noqa: SIM115
            if self.atomic
            else sys.stderr
        )

    def write(self, errors: list[dict[str, Any]]) -> None:
        if self.atomic is None:
            for e in errors:
                where = f"{e['source']}: row {e['row']}" + (
                    f" (case_id {e['case_id']})" if e["case_id"] else ""
                )
                field = f"{e['field']}: " if e["field"] else ""
                self._stream.write(f"error: {where}: {field}{e['reason']}\n")
            return
        self._stream.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors))

    def close(self, *, commit: bool) -> None:
        if self.atomic is None:
            return
        self._stream.close()
        self.atomic.commit() if commit else self.atomic.abort()


def write_text_atomically(target: str, text: str) -> None:
    """Write a whole file (summary, report) through a temp file and a rename."""
    atomic = AtomicPath(target)
    try:
        atomic.temp.write_text(text, encoding="utf-8")
        atomic.commit()
    except BaseException:
        atomic.abort()
        raise
