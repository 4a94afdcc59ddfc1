"""End to end on a synthetic cohort with corrupt and missing values, in every input format.

The issue's acceptance run uses 100,000 rows (benchmarks/acceptance_batch.py); this test runs the
same checks on a smaller cohort so CI stays fast: reconciliation balances exactly, the errors file
names every corrupt row, and outputs are identical for --workers 1, --workers 2 and dask.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.synth import corrupt_row_numbers, write_cohort

ROWS, SEED, MISSING, CORRUPT = 2000, 11, 0.05, 0.01
runner = CliRunner()


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cohort")
    paths = {}
    for suffix in ("csv", "jsonl", "parquet"):
        path = folder / f"cohort.{suffix}"
        write_cohort(path, ROWS, SEED, missing=MISSING, corrupt=CORRUPT)
        paths[suffix] = path
    return paths


def run(source: Path, out: Path, *extra: str) -> dict[str, object]:
    summary = out.with_suffix(".summary.json")
    result = runner.invoke(
        app,
        [
            "batch",
            str(source),
            "--out",
            str(out),
            "--summary",
            str(summary),
            "--progress",
            "none",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_every_format_balances_and_names_every_corrupt_row(
    cohorts: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / "out.jsonl"
    summary = run(cohorts[suffix], out, "--workers", "2")
    corrupt = corrupt_row_numbers(ROWS, SEED, CORRUPT)
    assert summary["reconciliation"] == {
        "rows_read": ROWS,
        "rows_screened": ROWS - len(corrupt),
        "rows_rejected": len(corrupt),
        "balanced": True,
    }
    errors = [
        json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()
    ]
    assert {e["row"] for e in errors} == corrupt
    assert len(out.read_text().splitlines()) == ROWS - len(corrupt)


def test_formats_give_the_same_results(cohorts: dict[str, Path], tmp_path: Path) -> None:
    outputs = []
    for suffix in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"{suffix}.jsonl"
        run(cohorts[suffix], out, "--workers", "1")
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_one_two_workers_and_dask_give_identical_output(
    cohorts: dict[str, Path], tmp_path: Path
) -> None:
    outputs = {}
    for name, extra in {
        "w1": ["--workers", "1"],
        "w2": ["--workers", "2"],
        "dask": ["--workers", "2", "--executor", "dask"],
    }.items():
        out = tmp_path / f"{name}.parquet"
        summary = run(cohorts["parquet"], out, *extra)
        assert summary["reconciliation"]["balanced"]
        outputs[name] = (out.read_bytes(), (tmp_path / f"{name}.parquet.errors.jsonl").read_bytes())
    assert outputs["w1"] == outputs["w2"] == outputs["dask"]


def test_html_report_matches_the_summary(cohorts: dict[str, Path], tmp_path: Path) -> None:
    out, report = tmp_path / "out.csv", tmp_path / "report.html"
    summary = run(cohorts["csv"], out, "--workers", "1", "--report", str(report))
    page = report.read_text()
    rec = summary["reconciliation"]
    assert f'id="rows-read">{rec["rows_read"]}<' in page
    assert f'id="rows-rejected">{rec["rows_rejected"]}<' in page
