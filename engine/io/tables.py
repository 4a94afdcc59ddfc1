"""Stream cohort rows from CSV, JSONL, Parquet or .xlsx in chunks, numbering every row.

Rows come out as raw dicts (strings from CSV, typed values from JSONL, Parquet and .xlsx) or as
a RowProblem when a row cannot even be parsed; validation happens later, per row. Parquet
chunks, and CSV chunks read `columnar` (text columns), carry an Arrow record batch instead of
dicts. Row numbers are 1-based data rows: the header is not a row (CSV and .xlsx: row N is the
N-th record after the header; JSONL: row N is line N). A CSV file's delimiter (`,` `;` tab) is
taken from its header line unless given, and its encoding is UTF-8 unless given; a file that is
not UTF-8 is read as cp1252 (or latin-1), said once on stderr, as European spreadsheets save them.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import functools
import hashlib
import json
import operator
import re
import sys
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import UsageError
from engine.io.cases import json_problem
from engine.jsonsource import JsonInputError, loads_strict

CHUNK_ROWS = 1000
SAMPLE_ROWS = 1000  # rows the de-identification guard looks at
_BLOCK = 1 << 20
MAX_LINE_BYTES = 1 << 20  # a JSONL row or a CSV header line longer than this is not a case
MAX_SKIPPED_BYTES = 64 << 20  # an overlong JSONL line is skipped up to here, then the input fails
HANDLER_RELEASE_S = 10.0  # the longest wait for Arrow to drop the CSV reader's handler
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


class InputFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    xlsx = "xlsx"


DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # latin-1 decodes any byte: the last resort


@dataclass(frozen=True)
class RowProblem:
    """A row that could not be parsed at all (malformed CSV record, invalid JSON line)."""

    reason: str


Row = dict[str, Any] | RowProblem


@dataclass
class Chunk:
    """Consecutive rows of one input, numbered.

    A Parquet or CSV chunk may travel as an Arrow record batch (CSV: text columns) and become
    Python rows only where it is screened: the parent process, which reads and writes for
    every worker, does not build or pickle a dict per row. Such a chunk's `rows` hold only the
    rows the reader refused (RowProblem), and `numbers` the row number of each batch row when
    they are not consecutive from `first` (a refused row falls between them).
    """

    index: int
    source: str
    rows: list[tuple[int, Row]]
    batch: pa.RecordBatch | None = None
    first: int = 1
    numbers: np.ndarray | None = None
    input: int = 0  # the input's place among the run's inputs, from 0 (one file given twice
    # is two inputs of one name)

    def batch_numbers(self) -> np.ndarray:
        """The row number of each row of the record batch."""
        if self.numbers is not None:
            return self.numbers
        size = self.batch.num_rows if self.batch is not None else 0
        return np.arange(self.first, self.first + size, dtype=np.int64)

    def size(self) -> int:
        """How many rows it holds, refused ones included."""
        return len(self.rows) + (self.batch.num_rows if self.batch is not None else 0)

    def span(self) -> tuple[int, int]:
        """The first and last row numbers."""
        ends = [n for n, _ in self.rows]
        if self.batch is not None and self.batch.num_rows:
            numbers = self.batch_numbers()
            ends += [int(numbers[0]), int(numbers[-1])]
        return (min(ends), max(ends)) if ends else (self.first, self.first - 1)

    def materialized(self) -> list[tuple[int, Row]]:
        """The numbered rows in row order, built from the record batch if the chunk carries one."""
        if self.batch is None:
            return self.rows
        rows: list[tuple[int, Row]] = list(
            zip(self.batch_numbers().tolist(), self.batch.to_pylist(), strict=True)
        )
        if self.rows:
            rows = sorted(rows + self.rows, key=operator.itemgetter(0))
        return rows


def detect_format(path: str, given: InputFormat | None = None) -> InputFormat:
    """Input format from --input-format, else from the file extension ('-' is JSONL)."""
    if given is not None:
        return given
    if path == "-":
        return InputFormat.jsonl
    suffix = Path(path).suffix.lower().lstrip(".")
    aliases = {"ndjson": "jsonl", "pq": "parquet", "tsv": "csv"}
    suffix = aliases.get(suffix, suffix)
    try:
        return InputFormat(suffix)
    except ValueError:
        raise UsageError(
            f"{path}: cannot tell the format from the extension; "
            "use --input-format csv|jsonl|parquet|xlsx"
        ) from None


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


ESTIMATE_BYTES = 1 << 20  # the head of a text input read to estimate its rows


def estimated_rows(path: str, fmt: InputFormat) -> tuple[int, bool] | None:
    """How many rows an input holds, and whether that is exact, for a progress bar.

    Parquet: its metadata (exact). CSV and JSONL: counted when the file is small, else its size
    over the mean line length of its first MiB (an estimate). Standard input: unknown (None).
    """
    if path == "-" or not Path(path).is_file():
        return None
    if fmt is InputFormat.parquet:
        try:
            with pq.ParquetFile(path) as parquet:
                return int(parquet.metadata.num_rows), True
        except Exception:  # an unreadable file is reported when it is opened for reading
            return None
    if fmt is InputFormat.xlsx:
        return None  # a zip of XML: its size says nothing of its rows
    size = Path(path).stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(ESTIMATE_BYTES)
    lines = head.count(b"\n") + (1 if head and not head.endswith(b"\n") else 0)
    header = 1 if fmt is InputFormat.csv else 0
    if len(head) >= size:
        return max(lines - header, 0), True
    if not lines:
        return None
    return max(round(size * lines / len(head)) - header, 0), False


class TableReader:
    """One input: its columns, a sample for the de-identification guard, then all its rows."""

    def __init__(
        self,
        path: str,
        fmt: InputFormat,
        *,
        delimiter: str | None = None,
        encoding: str | None = None,
        sheet: str | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.source = "<stdin>" if path == "-" else path
        self.delimiter = delimiter
        self.encoding = encoding or "utf-8"
        self.sheet = sheet
        if delimiter is not None and delimiter not in DELIMITERS:
            raise UsageError("--delimiter must be one of , ; or tab (\\t)")
        if encoding is not None:
            _check_encoding(encoding)
        self._stdin_digest = hashlib.sha256()
        self._stdin_head: list[bytes] = []
        self._stdin_lines: Iterator[bytes] | None = None
        self._header_bytes = 0
        if path == "-" and fmt is not InputFormat.jsonl:
            raise UsageError("standard input (-) is read as JSONL only")
        if path == "-":  # stdin is read once: keep the head for the column scan and sample
            self._stdin_lines = _bounded_lines(sys.stdin.buffer, self.source)
            for line in self._stdin_lines:
                self._stdin_digest.update(line)
                self._stdin_head.append(line)
                if len(self._stdin_head) >= SAMPLE_ROWS:
                    break
            start = self._stdin_head[0][:4] if self._stdin_head else b""
        elif not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
        elif fmt not in (InputFormat.parquet, InputFormat.xlsx):
            with open(path, "rb") as handle:
                start = handle.read(4)
        if fmt not in (InputFormat.parquet, InputFormat.xlsx):
            _refuse_utf16(start, self.source)
        if fmt is InputFormat.csv and encoding is None and not _decodes(path, "utf-8"):
            self.encoding = _fallback_encoding(path)
            sys.stderr.write(
                f"note: {self.source} is not UTF-8 text; read as {self.encoding} "
                "(pass --encoding to choose)\n"
            )
        self.columns = self._columns()

    # columns and sample --------------------------------------------------------------------

    def _columns(self) -> list[str]:
        if self.format is InputFormat.parquet:
            try:
                with pq.ParquetFile(self.path) as parquet:
                    return list(parquet.schema_arrow.names)
            except (pa.ArrowException, OSError) as exc:
                raise UsageError(f"{self.source}: not a readable Parquet file ({exc})") from None
        if self.format is InputFormat.xlsx:
            return self._xlsx_header()
        if self.format is InputFormat.csv:
            with open(self.path, "rb") as handle:  # the header only: later rows may be bad bytes
                first = handle.readline(MAX_LINE_BYTES + 1)
            if len(first) > MAX_LINE_BYTES:
                raise UsageError(f"{self.source}: the CSV header line is longer than 1 MB")
            self._header_bytes = len(first)
            encoding = "utf-8-sig" if self.encoding.lower() in ("utf-8", "utf8") else self.encoding
            try:
                text = first.decode(encoding)
                self.delimiter = self.delimiter or sniff_delimiter(text)
                header = next(csv.reader([text], delimiter=self.delimiter), [])
            except (csv.Error, UnicodeDecodeError) as exc:
                raise UsageError(f"{self.source}: cannot read the CSV header ({exc})") from None
            if not header:
                raise UsageError(f"{self.source}: the CSV file is empty (no header row)")
            return [h.strip() for h in header]
        columns: dict[str, None] = {}
        for _, row in self._jsonl_rows(limit=SAMPLE_ROWS):
            if isinstance(row, dict):
                columns.update(dict.fromkeys(row))
        return list(columns)

    def sample(self, size: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
        """The first rows (parsed ones only), for the value patterns of the guard."""
        found: list[dict[str, Any]] = []
        with contextlib.closing(self.chunks(0, chunk_rows=size, limit=size)) as chunks:
            for chunk in chunks:
                found.extend(row for _, row in chunk.rows if isinstance(row, dict))
        return found

    @property
    def total_rows(self) -> int | None:
        if self.format is InputFormat.parquet:
            with pq.ParquetFile(self.path) as parquet:
                return int(parquet.metadata.num_rows)
        return None

    def sha256(self) -> str:
        """Content hash; for stdin, of what was read (call after the rows were consumed)."""
        if self.path == "-":
            return self._stdin_digest.hexdigest()
        return file_sha256(self.path)

    # rows ------------------------------------------------------------------------------------

    def chunks(
        self,
        first_index: int,
        chunk_rows: int | None = None,
        limit: int | None = None,
        *,
        columnar: bool = False,
    ) -> Generator[Chunk, None, None]:
        """Every row of the input, in order, in chunks of chunk_rows (default CHUNK_ROWS).

        Parquet chunks, and CSV chunks when `columnar`, carry their rows as a record batch."""
        chunk_rows = chunk_rows or CHUNK_ROWS
        if self.format is InputFormat.parquet and limit is None:
            yield from self._parquet_chunks(first_index, chunk_rows)
            return
        if self.format is InputFormat.csv and columnar and limit is None:
            yield from self._csv_chunks(first_index, chunk_rows)
            return
        rows = {
            InputFormat.csv: self._csv_rows,
            InputFormat.jsonl: self._jsonl_rows,
            InputFormat.parquet: self._parquet_rows,
            InputFormat.xlsx: self._xlsx_rows,
        }[self.format](limit=limit)
        index = first_index
        batch: list[tuple[int, Row]] = []
        with contextlib.closing(rows):  # an early stop closes the file reader at once
            for number, row in rows:
                batch.append((number, row))
                if len(batch) >= chunk_rows:
                    yield Chunk(index, self.source, batch)
                    index, batch = index + 1, []
        if batch:
            yield Chunk(index, self.source, batch)

    def _csv_chunks(self, first_index: int, chunk_rows: int) -> Generator[Chunk, None, None]:
        """The CSV file's rows as record batches of text columns, chunk_rows rows a chunk (with
        the rows the reader refused, each in the chunk its number falls in)."""
        index = first_index
        held: list[tuple[pa.RecordBatch, np.ndarray]] = []
        refused: list[tuple[int, Row]] = []
        count = 0
        batches = self._csv_batches()
        with contextlib.closing(batches):  # an early stop closes the file reader at once
            for batch, numbers, problems in batches:
                refused.extend(problems)
                if batch.num_rows:
                    held.append((batch, numbers))
                    count += batch.num_rows
                while count >= chunk_rows or len(refused) >= chunk_rows:
                    yield self._csv_chunk(index, held, refused, chunk_rows)
                    index += 1
                    count = sum(b.num_rows for b, _ in held)
        while held or refused:
            yield self._csv_chunk(index, held, refused, chunk_rows)
            index += 1

    def _csv_chunk(
        self,
        index: int,
        held: list[tuple[pa.RecordBatch, np.ndarray]],
        refused: list[tuple[int, Row]],
        size: int,
    ) -> Chunk:
        """The next chunk of up to `size` read rows, taken off `held` (and the refused rows
        numbered before its last row, taken off `refused`)."""
        if not held:
            mine = refused[:size]
            del refused[:size]
            return Chunk(index, self.source, mine)
        table = pa.Table.from_batches([b for b, _ in held]).combine_chunks()
        numbers = np.concatenate([n for _, n in held])
        held.clear()
        if table.num_rows > size:
            held.append((table.slice(size).combine_chunks().to_batches()[0], numbers[size:]))
            table, numbers = table.slice(0, size), numbers[:size]
        last = int(numbers[-1]) if held else None  # the last chunk takes every refused row
        taken = [r for r in refused if last is None or r[0] < last]
        del refused[: len(taken)]
        batch = table.combine_chunks().to_batches()[0]
        first = int(numbers[0])
        consecutive = int(numbers[-1]) - first + 1 == len(numbers)
        return Chunk(
            index,
            self.source,
            taken,
            batch=batch,
            first=first,
            numbers=None if consecutive else numbers,
        )

    def _csv_batches(
        self,
    ) -> Generator[tuple[pa.RecordBatch, np.ndarray, list[tuple[int, Row]]], None, None]:
        """Per block the reader parsed: its rows as text columns, their row numbers, and the
        rows it refused up to its last row (malformed records, bytes not in the encoding)."""
        if Path(self.path).stat().st_size <= self._header_bytes:
            return  # a header and nothing else (perhaps without its final newline): no rows
        invalid: dict[int, RowProblem] = {}
        done = 0  # the last row number given out
        label = _encoding_label(self.encoding)
        stream = _CsvStream(self.path, self.columns, invalid, self.delimiter or ",")
        with contextlib.closing(stream):
            for batch in _arrow_errors(stream, self.source, "CSV"):
                # a malformed record is skipped by the reader: number the others around it
                pending = sorted(n for n in list(invalid) if n > done)
                span = batch.num_rows + len(pending)
                free = np.ones(span, dtype=np.bool_)
                gaps = np.array(pending, dtype=np.int64) - (done + 1)
                free[gaps[gaps < span]] = False
                numbers = np.flatnonzero(free)[: batch.num_rows].astype(np.int64) + done + 1
                end = int(numbers[-1]) if batch.num_rows else done
                problems: list[tuple[int, Row]] = [(n, invalid.pop(n)) for n in pending if n < end]
                text, bad = _decoded(batch, self.encoding)
                if bad.size:
                    problems.extend((int(n), RowProblem(f"not {label} text")) for n in numbers[bad])
                    problems.sort(key=operator.itemgetter(0))
                    keep = np.ones(batch.num_rows, dtype=np.bool_)
                    keep[bad] = False
                    text, numbers = text.filter(pa.array(keep)), numbers[keep]
                done = max(done, end)
                yield text, numbers, problems
        late: list[tuple[int, Row]] = [(n, invalid[n]) for n in sorted(invalid)]
        if late:
            yield pa.RecordBatch.from_pylist([]), np.empty(0, np.int64), late

    def _csv_rows(self, limit: int | None = None) -> Generator[tuple[int, Row], None, None]:
        if Path(self.path).stat().st_size <= self._header_bytes:
            return  # a header and nothing else (perhaps without its final newline): no rows
        invalid: dict[int, RowProblem] = {}
        number = 0
        encoding = self.encoding
        label = _encoding_label(encoding)
        stream = _CsvStream(self.path, self.columns, invalid, self.delimiter or ",")
        with contextlib.closing(stream):
            for batch in _arrow_errors(stream, self.source, "CSV"):
                for values in batch.to_pylist():
                    number += 1
                    while number in invalid:
                        yield number, invalid.pop(number)
                        number += 1
                    try:
                        yield (
                            number,
                            {
                                k: None if v is None else v.decode(encoding)
                                for k, v in values.items()
                            },
                        )
                    except UnicodeDecodeError:
                        yield number, RowProblem(f"not {label} text")
                    if limit is not None and number >= limit:
                        return
        for late in sorted(invalid):
            yield late, invalid[late]

    def _jsonl_rows(self, limit: int | None = None) -> Generator[tuple[int, Row], None, None]:
        for number, line in self._lines(limited=limit is not None):
            if limit is not None and number > limit:
                return
            if not line.strip():
                continue
            if len(line) > MAX_LINE_BYTES:
                yield number, RowProblem("a JSONL row longer than 1 MB; not a case")
                continue
            try:
                text = line.decode("utf-8-sig")
                value = json.loads(text, parse_constant=_non_finite)
                # a key given twice leaves fewer keys than `":` marks: parse again to find it
                # (the check costs far less than a hook on every row)
                if isinstance(value, dict) and len(value) != text.count('":'):
                    value = loads_strict(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                message = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                yield number, RowProblem(f"not valid JSON ({message})")
            except _NonFiniteRow:
                yield (
                    number,
                    RowProblem(
                        "holds NaN or Infinity, which are not JSON numbers; leave the field out"
                    ),
                )
            except JsonInputError as exc:
                yield number, RowProblem(json_problem(exc))
            except (RecursionError, ValueError):  # nested too deeply, or an integer too long
                yield (
                    number,
                    RowProblem("not a JSON row miss-screen can read (too deep or too long)"),
                )
            else:
                if isinstance(value, dict):
                    yield number, value
                else:
                    yield number, RowProblem("a JSONL row must be a JSON object")

    def _lines(self, *, limited: bool = False) -> Iterator[tuple[int, bytes]]:
        if self.path != "-":
            with open(self.path, "rb") as handle:
                yield from enumerate(_bounded_lines(handle, self.source), 1)
            return
        yield from enumerate(self._stdin_head, 1)
        number = len(self._stdin_head)
        if limited or number < SAMPLE_ROWS or self._stdin_lines is None:
            return  # a look at the head only, or stdin ended inside the head
        for line in self._stdin_lines:  # the rest, once: only the full pass reads beyond the head
            number += 1
            self._stdin_digest.update(line)
            yield number, line

    def _parquet_chunks(self, first_index: int, chunk_rows: int) -> Iterator[Chunk]:
        """Record batches of chunk_rows rows, read as such (on this thread: a worker's CPU is
        its own). A damaged page is reported after the row CHUNK_ROWS batches reach, whatever
        the chunk size (_rows_before_damage)."""
        number = 0
        located = (
            functools.partial(_rows_before_damage, self.path) if chunk_rows > CHUNK_ROWS else None
        )
        with pq.ParquetFile(self.path) as parquet:
            batches = parquet.iter_batches(batch_size=chunk_rows, use_threads=False)
            for index, batch in enumerate(
                _arrow_errors(batches, self.source, "Parquet", located), first_index
            ):
                yield Chunk(index, self.source, [], batch=batch, first=number + 1)
                number += batch.num_rows

    def _parquet_rows(self, limit: int | None = None) -> Generator[tuple[int, Row], None, None]:
        number = 0
        with pq.ParquetFile(self.path) as parquet:
            batches = parquet.iter_batches(batch_size=CHUNK_ROWS)
            for batch in _arrow_errors(batches, self.source, "Parquet"):
                for values in batch.to_pylist():
                    number += 1
                    yield number, values
                    if limit is not None and number >= limit:
                        return

    # .xlsx ------------------------------------------------------------------------------------

    def _workbook_sheet(self) -> tuple[Any, Any]:
        """The workbook (read-only: rows streamed, not loaded) and its first or named sheet."""
        try:
            import openpyxl
        except ImportError:  # pragma: no cover - a core dependency
            raise UsageError("reading .xlsx needs openpyxl: pip install openpyxl") from None
        try:
            book = openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except Exception as exc:  # a zip that is not a workbook, a damaged file: one line
            raise UsageError(
                f"{self.source}: not a readable .xlsx workbook ({type(exc).__name__})"
            ) from None
        if self.sheet is None:
            return book, book.worksheets[0]
        if self.sheet not in book.sheetnames:
            book.close()
            raise UsageError(
                f"{self.source}: no sheet named {self.sheet!r}; "
                f"its sheets: {', '.join(book.sheetnames)}"
            )
        return book, book[self.sheet]

    def _xlsx_header(self) -> list[str]:
        book, sheet = self._workbook_sheet()
        try:
            first = next(sheet.iter_rows(max_row=1, values_only=True), ())
        finally:
            book.close()
        header = [_cell_text(cell) or "" for cell in first]
        while header and not header[-1]:
            header.pop()  # formatted but empty cells after the last column
        if not header:
            raise UsageError(f"{self.source}: the first row of the sheet is empty (no header)")
        return [h.strip() for h in header]

    def _xlsx_rows(self, limit: int | None = None) -> Generator[tuple[int, Row], None, None]:
        book, sheet = self._workbook_sheet()
        width = len(self.columns)
        try:
            cells = sheet.iter_rows(min_row=2, values_only=True)
            for number, values in enumerate(cells, 1):
                if limit is not None and number > limit:
                    return
                if all(value is None or value == "" for value in values):
                    continue  # an empty (perhaps only formatted) row holds no case
                beyond = [v for v in values[width:] if v is not None and v != ""]
                if beyond:
                    yield (
                        number,
                        RowProblem(f"{len(beyond)} values beyond the header's {width} columns"),
                    )
                    continue
                row = dict(zip(self.columns, (_cell(value) for value in values), strict=False))
                yield number, {column: row.get(column) for column in self.columns}
        finally:
            book.close()


class _InvalidRows:
    """pyarrow's invalid-row handler: notes each malformed record as a RowProblem, skips it."""

    def __init__(self, expected: int, found: dict[int, RowProblem]) -> None:
        self.expected, self.found = expected, found

    def __call__(self, row: Any) -> str:
        number = int(row.number) - 1  # pyarrow counts the header as record 1
        self.found[number] = RowProblem(
            f"malformed CSV record: expected {self.expected} fields, found {row.actual_columns}"
        )
        return "skip"


class _CsvStream:
    """pyarrow's streaming CSV reader, closed on every path, its handler released by `close`.

    The reader's read-ahead runs on an Arrow thread that may hold the last reference to the
    invalid-row handler (a Python object): freed there while the interpreter shuts down, it
    aborts the process ("terminate called without an active exception", exit 134; issue 26).
    So `close` closes and drops the reader (only this object refers to it: no caller gets it)
    and waits, a bounded time, until the handler is gone.
    """

    def __init__(
        self, path: str, columns: list[str], invalid: dict[int, RowProblem], delimiter: str
    ) -> None:
        handler = _InvalidRows(len(columns), invalid)
        self._released = threading.Event()
        weakref.finalize(handler, self._released.set)
        self._reader: pacsv.CSVStreamingReader | None = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                use_threads=False,
                block_size=_BLOCK,
                skip_rows=1,
                column_names=columns,
                encoding="utf8",
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=handler
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.binary() for c in columns},  # decoded per value by the caller
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while self._reader is not None:  # read through self each time: no frame keeps it
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return
            yield batch

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            self._released.wait(HANDLER_RELEASE_S)


def _cell(value: object) -> object:
    """A spreadsheet cell as a row value: dates and times as ISO text (for the guard to see)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def _cell_text(value: object) -> str | None:
    return None if value is None else str(_cell(value))


def _encoding_label(encoding: str) -> str:
    """The encoding as a refused row's reason names it."""
    return "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding


def _decoded(batch: pa.RecordBatch, encoding: str) -> tuple[pa.RecordBatch, np.ndarray]:
    """A record batch of bytes as text, and the positions of the rows with a value that is not
    text in `encoding` (their values are left out: the rows are refused).

    UTF-8 is checked by Arrow, cp1252 and latin-1 (the fallbacks) are recoded by byte table;
    another encoding is decoded value by value."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    table = _byte_table(codecs.lookup(encoding).name)
    bad = np.zeros(batch.num_rows, dtype=np.bool_)
    columns: list[pa.Array] = []
    for column in batch.columns:
        if utf8:
            try:
                columns.append(column.cast(pa.string()))  # Arrow checks the UTF-8 itself
                continue
            except pa.ArrowInvalid:
                pass  # some value is not UTF-8: find it value by value
        elif table is not None and column.offset == 0:
            text, undecodable = _recoded(column, *table)
            columns.append(text)
            bad[undecodable] = True
            continue
        texts: list[str | None] = []
        for position, value in enumerate(column.to_pylist()):
            try:
                texts.append(None if value is None else value.decode(encoding))
            except UnicodeDecodeError:
                bad[position] = True
                texts.append(None)
        columns.append(pa.array(texts, pa.string()))
    text = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    return text, np.flatnonzero(bad)


@functools.cache
def _byte_table(codec: str) -> tuple[np.ndarray, np.ndarray] | None:
    """For a fallback encoding (one byte a character): each byte's UTF-8 bytes (padded to 3)
    and their number (0: the byte is no character in it); None for any other encoding."""
    if codec not in {codecs.lookup(name).name for name in FALLBACK_ENCODINGS}:
        return None
    utf8 = np.zeros((256, 3), dtype=np.uint8)
    widths = np.zeros(256, dtype=np.int64)
    for byte in range(256):
        try:
            encoded = bytes([byte]).decode(codec).encode("utf-8")
        except UnicodeDecodeError:
            continue
        utf8[byte, : len(encoded)] = list(encoded)
        widths[byte] = len(encoded)
    return utf8, widths


def _recoded(column: pa.Array, utf8: np.ndarray, widths: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """A binary column in a one-byte encoding as UTF-8 text (byte by byte, by table), and the
    positions of its values holding a byte that is no character (their text is garbage)."""
    validity, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[: len(column) + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else None
    body = data[offsets[0] : offsets[-1]] if data is not None else np.zeros(0, np.uint8)
    sizes = widths[body]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    for k in range(utf8.shape[1]):
        pick = sizes > k
        out[starts[pick] + k] = utf8[body[pick], k]
    recoded = np.concatenate([np.zeros(1, np.int64), ends])[offsets - offsets[0]]
    holes = np.flatnonzero(sizes == 0)
    undecodable = np.unique(np.searchsorted(offsets - offsets[0], holes, side="right") - 1)
    text = pa.Array.from_buffers(
        pa.large_string(),
        len(column),
        [validity, pa.py_buffer(recoded), pa.py_buffer(out)],
        column.null_count,
    ).cast(pa.string())
    return text, undecodable


def sniff_delimiter(header: str) -> str:
    """The delimiter of a CSV header line: the most frequent of `,` `;` tab outside quotes."""
    bare = re.sub(r'"[^"]*"', "", header)
    counts = {delimiter: bare.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"--encoding: unknown encoding {encoding!r}; use utf-8, cp1252 or latin-1"
        ) from None


def _decodes(path: str, encoding: str) -> bool:
    """Whether a file's bytes are text in `encoding` throughout (read in blocks, never whole)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _fallback_encoding(path: str) -> str:
    """cp1252 when every byte of the file is a cp1252 character, else latin-1."""
    return FALLBACK_ENCODINGS[0] if _decodes(path, "cp1252") else FALLBACK_ENCODINGS[1]


class _NonFiniteRow(ValueError):
    """A JSONL row holding NaN or Infinity (found without the full strict parse)."""


def _non_finite(name: str) -> Any:
    raise _NonFiniteRow(name)


def _refuse_utf16(start: bytes, source: str) -> None:
    """UTF-16 or UTF-32 text (a BOM, or NUL bytes in ASCII) would be misread row by row."""
    if start.startswith(_UTF16_32_BOMS) or b"\x00" in start[:4]:
        raise UsageError(
            f"{source}: the file is UTF-16 or UTF-32 text, not UTF-8; save it as UTF-8"
        )


def _bounded_lines(stream: BinaryIO, source: str) -> Iterator[bytes]:
    """The stream's lines, none held longer than MAX_LINE_BYTES + 1 bytes.

    An overlong line comes out cut to that length (the caller refuses it as a row) and the rest
    of it is skipped; a line beyond MAX_SKIPPED_BYTES (/dev/zero, a binary file) ends the input.
    """
    while line := stream.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            skipped = len(line)
            while (rest := stream.readline(_BLOCK)) and not rest.endswith(b"\n"):
                skipped += len(rest)
                if skipped > MAX_SKIPPED_BYTES:
                    raise UsageError(
                        f"{source}: a line longer than 64 MB; this is not a JSONL file"
                    )
        yield line


def _arrow_errors(
    batches: Iterable[pa.RecordBatch],
    source: str,
    kind: str,
    located: Callable[[int], int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches; a file Arrow cannot read further (a corrupt page, a record larger than
    the block) becomes one error line, never a traceback. `located`: the row the line names,
    from the rows read before the failure (else those rows)."""
    iterator = iter(batches)
    read = 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            if located is not None:
                read = located(read)
            reason = "damaged" if kind == "Parquet" else "broken or holds a record over 1 MB"
            raise UsageError(
                f"{source}: cannot read the {kind} file after row {read}: the file is {reason} "
                f"({type(exc).__name__}); no output was kept"
            ) from None
        read += batch.num_rows
        yield batch


def _rows_before_damage(path: str, read: int) -> int:
    """The rows a Parquet file gives in batches of CHUNK_ROWS before it fails (`read` if it
    fails no more): a damaged page is named after the same row whatever batches found it."""
    found = 0
    try:
        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
                found += batch.num_rows
    except (pa.ArrowException, OSError):
        return found
    return read
