"""Batch progress (issue 16 item 3): total rows and time left where the total is known
(Parquet metadata exactly, CSV and JSONL by bytes), and plain lines when stderr is no terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.io.tables import ESTIMATE_BYTES, InputFormat, estimated_rows
from engine.synth import write_cohort

runner = CliRunner()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_plain_lines_give_rows_total_and_time_left(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.cli import app

    source = tmp_path / f"cohort{suffix}"
    write_cohort(source, 60, seed=1)
    monkeypatch.setenv("MISS_SCREEN_PROGRESS_INTERVAL", "0")  # a line per chunk
    monkeypatch.setenv("MISS_SCREEN_CHUNK_ROWS", "20")
    out = runner.invoke(
        app, ["batch", str(source), "--out", str(tmp_path / "out.jsonl"), "--workers", "1"]
    )
    assert out.exit_code == 0, out.stderr
    lines = out.stderr.splitlines()
    progress = [line for line in lines if line.startswith("screening:")]
    assert progress[0].startswith("screening: 20 rows of 60 (33%)")
    assert "s left" in progress[0]
    assert progress[-1].startswith("screening: 60 rows of 60 (100%)")
    assert "" not in lines  # no blank line from a bar drawn on a non-terminal


@pytest.mark.timeout(120)
def test_progress_none_writes_no_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.cli import app

    source = tmp_path / "cohort.csv"
    write_cohort(source, 30, seed=1)
    monkeypatch.setenv("MISS_SCREEN_PROGRESS_INTERVAL", "0")
    out = runner.invoke(
        app,
        ["batch", str(source), "--out", str(tmp_path / "o.jsonl"), "--progress", "none"],
    )
    assert out.exit_code == 0, out.stderr
    assert "screening:" not in out.stderr


@pytest.mark.timeout(300)
def test_a_large_text_input_is_estimated_by_bytes(tmp_path: Path) -> None:
    source = tmp_path / "cohort.csv"
    rows = 12_000
    write_cohort(source, rows, seed=2)
    assert source.stat().st_size > ESTIMATE_BYTES  # the estimate, not the count, is used
    found = estimated_rows(str(source), InputFormat.csv)
    assert found is not None
    total, exact = found
    assert not exact
    assert abs(total - rows) < rows * 0.05
    parquet = tmp_path / "cohort.parquet"
    write_cohort(parquet, 50, seed=2)
    assert estimated_rows(str(parquet), InputFormat.parquet) == (50, True)
    assert estimated_rows("-", InputFormat.jsonl) is None
