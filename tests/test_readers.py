"""Cohort files as researchers save them (issue 27 items 2, 6): `;` and tab delimiters, cp1252,
.xlsx, decimal commas, integer ids, extra columns; ids come back as given, as text."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine import Screener
from engine.cli import app
from engine.io import tables
from engine.io.tables import InputFormat, TableReader, sniff_delimiter

runner = CliRunner()
HEADER = ["case_id", "sex", "diagnosis", "lowest_level", "bmi", "surgeon"]
ROWS = [
    ["101", "Male", "Disc Herniation", "L4-5", "31,5", "Müller"],
    ["00042", "F", "HNP", "L5/S1", "27,0", "Šimek"],
]


def _batch(tmp_path: Path, cohort: Path, *extra: str) -> tuple[list[dict[str, str]], str, int]:
    out = tmp_path / "out.csv"
    summary = tmp_path / "summary.json"
    report = tmp_path / "report.html"
    run = runner.invoke(
        app,
        [
            "batch",
            str(cohort),
            "--out",
            str(out),
            "--workers",
            "1",
            "--summary",
            str(summary),
            "--report",
            str(report),
            *list(extra),
        ],
    )
    if run.exit_code != 0:
        return [], run.stderr, run.exit_code
    with out.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle)), run.stderr, run.exit_code


def _write(path: Path, delimiter: str, encoding: str) -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(HEADER)
        writer.writerows(ROWS)
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("delimiter", "encoding", "note"),
    [
        (";", "utf-8", False),
        ("\t", "utf-8", False),
        (",", "utf-8", False),
        (";", "cp1252", True),
    ],
    ids=["semicolon", "tab", "comma", "semicolon-cp1252"],
)
def test_european_exports_screen_with_ids_kept_and_extra_columns_listed(
    tmp_path: Path, delimiter: str, encoding: str, note: bool
) -> None:
    if encoding == "cp1252":
        rows_cp = [[cell.replace("Š", "S") for cell in row] for row in ROWS]  # not in cp1252
        path = tmp_path / "cohort.csv"
        with path.open("w", newline="", encoding="cp1252") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(HEADER)
            writer.writerows(rows_cp)
    else:
        path = _write(tmp_path / "cohort.csv", delimiter, encoding)
    rows, stderr, code = _batch(tmp_path, path)
    assert code == 0, stderr
    assert [r["case_id"] for r in rows] == ["101", "00042"]  # leading zeros kept, as text
    assert all(r["verdict"] for r in rows)
    assert "ignored columns (not in the data dictionary): surgeon" in stderr
    assert stderr.count("surgeon") == 1  # listed once, its values never shown
    assert "Müller" not in stderr
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "sex: 2 values normalised, e.g. Male → male" in html
    assert ("read as cp1252" in stderr) is note
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["normalised_values"]["sex"] == {"count": 2, "example": "Male → male"}
    assert summary["normalised_values"]["bmi"]["count"] == 2
    assert summary["reconciliation"]["rows_rejected"] == 0
    assert "sex: 2 values normalised, e.g. Male → male" in stderr
    assert "case_id: " not in stderr  # ids read as text are not normalised, nor ever shown


@pytest.mark.timeout(120)
def test_strict_columns_refuses_unknown_columns_and_ignore_stays_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path / "cohort.csv", ",", "utf-8")
    _, stderr, code = _batch(tmp_path, path, "--strict-columns")
    assert code == 2
    assert "columns not in the data dictionary: surgeon" in stderr
    rows, stderr, code = _batch(tmp_path, path, "--ignore-unknown-columns")
    assert code == 0
    assert len(rows) == 2


@pytest.mark.timeout(120)
def test_an_identifier_named_column_still_refuses_the_input(tmp_path: Path) -> None:
    path = tmp_path / "cohort.csv"
    path.write_text("case_id,patient_name,sex\nS-1,Jane Roe,F\n", encoding="utf-8")
    _, stderr, code = _batch(tmp_path, path)
    assert code == 2
    assert "patient_name" in stderr
    assert "Jane" not in stderr


@pytest.mark.timeout(120)
def test_encoding_and_delimiter_can_be_given(tmp_path: Path) -> None:
    path = tmp_path / "cohort.txt"
    path.write_bytes("case_id;sex;diagnosis\nS-1;F;Hernie discale é\n".encode("latin-1"))
    _rows, stderr, code = _batch(
        tmp_path, path, "--input-format", "csv", "--delimiter", ";", "--encoding", "latin-1"
    )
    assert code == 0, stderr
    assert "read as" not in stderr  # given, so nothing to say
    errors = [
        json.loads(line) for line in (tmp_path / "out.csv.errors.jsonl").read_text().splitlines()
    ]
    assert errors[0]["field"] == "diagnosis"
    assert errors[0]["row"] == 1
    _, stderr, code = _batch(tmp_path, path, "--input-format", "csv", "--delimiter", "|")
    assert code == 2
    assert "--delimiter" in stderr


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("case_id;sex;bmi", ";"),
        ("case_id\tsex", "\t"),
        ("case_id,sex", ","),
        ('"a;b",c,d', ","),
        ("case_id", ","),
    ],
)
def test_the_delimiter_is_taken_from_the_header_line(header: str, expected: str) -> None:
    assert sniff_delimiter(header) == expected


@pytest.mark.timeout(120)
def test_xlsx_first_sheet_or_a_named_one(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    first = book.active
    first.title = "notes"
    first.append(["about this export"])
    data = book.create_sheet("cohort")
    data.append(HEADER)
    data.append([101, "Male", "HNP", "L4/5", 31.5, "A"])
    data.append([102.0, "F", "DDD", "L5S1", "27,5", "B"])
    data.append([None, None, None, None, None, None])  # a formatted, empty row
    path = tmp_path / "cohort.xlsx"
    book.save(path)
    rows, stderr, code = _batch(tmp_path, path, "--sheet", "cohort")
    assert code == 0, stderr
    assert [r["case_id"] for r in rows] == ["101", "102"]
    _, stderr, code = _batch(tmp_path, path)  # the first sheet has no case_id column
    assert code == 2
    assert "case_id" in stderr
    _, stderr, code = _batch(tmp_path, path, "--sheet", "missing")
    assert code == 2
    assert "no sheet named 'missing'" in stderr
    reader = TableReader(str(path), InputFormat.xlsx, sheet="cohort")
    assert reader.columns == HEADER


@pytest.mark.timeout(120)
def test_parquet_rows_with_other_spellings_leave_the_fast_path_and_are_read(
    tmp_path: Path,
) -> None:
    """The column-wise check takes only plainly valid rows; `Male`, an integer id column and
    a text id `7.0` go row by row, through the normaliser, and screen like their clean twins."""
    path = tmp_path / "cohort.parquet"
    table = pa.table(
        {
            "case_id": pa.array(["S-1", "7.0", "S-3"]),
            "sex": pa.array(["male", "Male", "M"]),
            "smoker": pa.array(["Y", "false", None]),
        }
    )
    pq.write_table(table, path)
    rows, stderr, code = _batch(tmp_path, path)
    assert code == 0, stderr
    assert [r["case_id"] for r in rows] == ["S-1", "7", "S-3"]
    screener = Screener.load()
    clean = [
        {"case_id": "S-1", "sex": "male", "smoker": True},
        {"case_id": "7", "sex": "male", "smoker": False},
        {"case_id": "S-3", "sex": "male"},
    ]
    assert [r["verdict"] for r in rows] == [screener.screen(c).verdict.value for c in clean]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["normalised_values"]["sex"]["count"] == 2
    assert summary["normalised_values"]["case_id"] == {"count": 1, "example": None}
    plain = tmp_path / "plain.parquet"  # every column plain but an id written as a float
    pq.write_table(pa.table({"case_id": ["S-1", "7.0"], "sex": ["male", "male"]}), plain)
    rows, stderr, code = _batch(tmp_path, plain)
    assert code == 0, stderr
    assert [r["case_id"] for r in rows] == ["S-1", "7"]
    ints = tmp_path / "ints.parquet"
    table = pa.table({"case_id": pa.array([101, 102, 103]), "sex": ["F", "female", "2"]})
    pq.write_table(table, ints)
    rows, stderr, code = _batch(tmp_path, ints)
    assert code == 0, stderr
    assert [r["case_id"] for r in rows] == ["101", "102"]
    errors = (tmp_path / "out.csv.errors.jsonl").read_text().splitlines()
    (error,) = [json.loads(line) for line in errors]
    assert (error["case_id"], error["field"], error["row"]) == ("103", "sex", 3)


@pytest.mark.timeout(60)
def test_parquet_chunks_span_row_groups_numbered_as_read(tmp_path: Path) -> None:
    """Chunks are read at their size across row groups, each row numbered as it comes."""
    path = tmp_path / "groups.parquet"
    ids = [f"G-{n}" for n in range(1, 3501)]
    pq.write_table(pa.table({"case_id": ids}), path, row_group_size=1500)
    chunks = list(TableReader(str(path), InputFormat.parquet).chunks(7, chunk_rows=1200))
    assert [(c.index, c.first, c.size()) for c in chunks] == [
        (7, 1, 1200), (8, 1201, 1200), (9, 2401, 1100),
    ]  # fmt: skip
    rows = [
        (n, row["case_id"]) for c in chunks for n, row in c.materialized() if isinstance(row, dict)
    ]
    assert rows == [(n, f"G-{n}") for n in range(1, 3501)]


@pytest.mark.timeout(120)
def test_screen_frame_takes_pd_read_csv_as_it_comes(tmp_path: Path) -> None:
    """Integer ids (and 101.0 where a gap made the column float), decimal commas, an extra
    column and a caller's index: screened, ids as text, index and order kept."""
    pd = pytest.importorskip("pandas")
    path = tmp_path / "export.csv"
    path.write_text(
        "case_id;sex;bmi;note\n101;Male;31,5;first\n7;F;;x\n103;M;27,0;\n", encoding="utf-8"
    )
    frame = pd.read_csv(path, sep=";").set_index(pd.Index([30, 10, 20]))
    assert frame["case_id"].dtype.kind == "i"
    out = Screener.load().screen_frame(frame)
    assert list(out.index) == [30, 10, 20]
    assert list(out["case_id"]) == ["101", "7", "103"]
    assert out["rejected"].isna().all()
    assert out.attrs["ignored_columns"] == ["note"]
    gaps = pd.DataFrame({"case_id": [101.0, None, 103.0], "sex": ["M", "F", "F"]})
    out = Screener.load().screen_frame(gaps)
    assert out["case_id"][0] == "101"
    assert out["case_id"][2] == "103"
    assert "case_id" in out["rejected"][1]  # no id: a row error, not a dropped row


def _export(path: Path, bom: bool = True) -> Path:
    """A CSV export that tries the columnar reader: a BOM, a quoted newline, a malformed record
    in the middle of a chunk and one at the end, bytes that are not UTF-8 (a row of its own)."""
    lines = [b"case_id,sex,bmi,diagnosis"]
    for n in range(1, 15):
        if n == 6:
            lines.append(b"C-6,male,25,disc_herniation,surplus")  # malformed
        elif n == 9:
            lines.append(b"C-9,\xff,25,disc_herniation")  # not UTF-8
        elif n == 4:
            lines.append(b'C-4,female,"31,5","disc\nherniation"')  # a quoted newline
        else:
            lines.append(f"C-{n},male,{20 + n},disc_herniation".encode())
    lines.append(b"C-15,male")  # malformed, the last row
    path.write_bytes(b"\xef\xbb\xbf" * bom + b"\r\n".join(lines) + b"\r\n")
    return path


@pytest.mark.hostile
@pytest.mark.timeout(120)
@pytest.mark.parametrize("encoding", ["utf-8", "cp1252", "latin-1", "mac_roman"])
@pytest.mark.parametrize("size", [1, 4, 1000])
def test_csv_chunks_by_column_hold_the_rows_read_one_by_one(
    tmp_path: Path, encoding: str, size: int
) -> None:
    """A CSV chunk travels as text columns plus the rows the reader refused, never a dict per
    row; its rows are those read row by row, with the same numbers, values and reasons (a
    malformed record mid-chunk keeps its number, its neighbours are read)."""
    import pickle

    source = _export(tmp_path / "export.csv", bom=encoding == "utf-8")
    reader = TableReader(str(source), InputFormat.csv, encoding=encoding)
    assert reader.columns == ["case_id", "sex", "bmi", "diagnosis"]
    by_row = [row for chunk in reader.chunks(0, chunk_rows=size) for row in chunk.rows]
    chunks = list(reader.chunks(0, chunk_rows=size, columnar=True))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert all(not isinstance(row, dict) for _, row in chunk.rows)
        if chunk.batch is not None:
            assert chunk.batch.num_rows <= size
            assert all(pa.types.is_string(t) for t in chunk.batch.schema.types)
        sent = pickle.loads(pickle.dumps(chunk))  # noqa: S301 - our own bytes, as a worker gets them
        assert sent.materialized() == chunk.materialized()
    by_column = [row for chunk in chunks for row in chunk.materialized()]
    assert by_column == by_row
    numbers = [n for n, _ in by_row]
    assert numbers == list(range(1, 16))
    refused = {n: row.reason for n, row in by_row if not isinstance(row, dict)}
    assert refused[6] == refused[15].replace("found 2", "found 5")
    assert refused[15] == "malformed CSV record: expected 4 fields, found 2"
    assert (9 in refused) is (encoding == "utf-8")
    assert dict(by_row)[4] == {
        "case_id": "C-4",
        "sex": "female",
        "bmi": "31,5",
        "diagnosis": "disc\nherniation",
    }


@pytest.mark.hostile
@pytest.mark.timeout(120)
def test_every_fallback_byte_is_recoded_as_python_decodes_it(tmp_path: Path) -> None:
    """cp1252 and latin-1 are recoded by byte table: every byte gives the character Python
    decodes, and a byte cp1252 lacks refuses its row (by number) and no other."""
    values = [bytes([b]) + b"x" for b in range(0x20, 0x100) if b not in b',"\x7f']
    lines = [b"case_id,surgeon"] + [b"R-%d,%s" % (n, v) for n, v in enumerate(values, 1)]
    source = tmp_path / "bytes.csv"
    source.write_bytes(b"\n".join(lines) + b"\n")
    for encoding in ("cp1252", "latin-1"):
        reader = TableReader(str(source), InputFormat.csv, encoding=encoding)
        rows = [r for c in reader.chunks(0, chunk_rows=50, columnar=True) for r in c.materialized()]
        assert len(rows) == len(values)
        for (number, row), value in zip(rows, values, strict=True):
            try:
                expected = value.decode(encoding)
            except UnicodeDecodeError:
                assert row == tables.RowProblem(f"not {encoding} text"), number
                continue
            assert isinstance(row, dict), number
            assert row["surgeon"] == expected, number


@pytest.mark.hostile
@pytest.mark.timeout(300)
def test_a_refused_row_mid_chunk_leaves_its_neighbours_screened(tmp_path: Path) -> None:
    """A batch on the default (vectorised) engine: the refused rows are reported by number and
    every other row is screened, in row order (tests/test_engines_differential.py holds its
    CSV outputs to durable-rules')."""
    source = _export(tmp_path / "export.csv")
    out, errors = tmp_path / "out.csv", tmp_path / "errors.jsonl"
    run = runner.invoke(
        app,
        [
            "batch",
            str(source),
            "--out",
            str(out),
            "--errors",
            str(errors),
            "--encoding",
            "utf-8",
            "--workers",
            "1",
            "--progress",
            "none",
        ],
    )
    assert run.exit_code == 0, run.stderr
    found = [json.loads(line) for line in errors.read_text().splitlines()]
    assert [(e["row"], e["reason"]) for e in found] == [
        (6, "malformed CSV record: expected 4 fields, found 5"),
        (9, "not UTF-8 text"),
        (15, "malformed CSV record: expected 4 fields, found 2"),
    ]
    with out.open(encoding="utf-8") as handle:
        screened = [row["case_id"] for row in csv.DictReader(handle)]
    assert screened == [f"C-{n}" for n in range(1, 15) if n not in (6, 9)]


@pytest.mark.hostile
@pytest.mark.timeout(120)
def test_a_run_of_malformed_records_longer_than_a_chunk_keeps_every_row(tmp_path: Path) -> None:
    """More refused rows in a row than a chunk holds, between read ones: none is lost, all keep
    their numbers, in order, by column as by row."""
    lines = ["case_id,bmi", "A-1,20", "A-2,21"] + [f"B-{n},1,2" for n in range(25)] + ["A-3,22"]
    source = tmp_path / "runs.csv"
    source.write_text("\n".join(lines) + "\n")
    reader = TableReader(str(source), InputFormat.csv)
    by_row = [row for chunk in reader.chunks(0, chunk_rows=4) for row in chunk.rows]
    by_column = [
        row
        for chunk in reader.chunks(0, chunk_rows=4, columnar=True)
        for row in chunk.materialized()
    ]
    assert by_column == by_row
    assert [n for n, _ in by_column] == list(range(1, 29))
    assert sum(isinstance(row, tables.RowProblem) for _, row in by_column) == 25
