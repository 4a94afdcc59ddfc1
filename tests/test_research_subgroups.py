"""Subgroups in the batch summary and report, checked against counts taken from the cohort file."""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from engine.cli import app

ROOT = Path(__file__).resolve().parent.parent
COHORT = ROOT / "cases" / "cohort" / "synthetic-500.csv"
runner = CliRunner()


def test_subgroups_and_rejected_examples(tmp_path: Path) -> None:
    out, summary, report = tmp_path / "r.csv", tmp_path / "s.json", tmp_path / "r.html"
    done = runner.invoke(
        app,
        [
            "batch",
            str(COHORT),
            "--out",
            str(out),
            "--summary",
            str(summary),
            "--report",
            str(report),
            "--workers",
            "1",
            "--progress",
            "none",
        ],
    )
    assert done.exit_code == 0, done.output
    data = json.loads(summary.read_text(encoding="utf-8"))
    screened = data["reconciliation"]["rows_screened"]
    groups = {g["field"]: g["rows"] for g in data["subgroups"]}
    assert list(groups) == ["diagnosis", "planned_procedure", "region"]
    for rows in groups.values():
        assert sum(r["count"] for r in rows) == screened
        for row in rows:
            assert sum(row["verdicts"].values()) == row["count"]
    # no constraint narrows diagnosis: its subgroups are the cohort's own values, with verdicts
    rejected = {e["row"] for e in data["rejected_examples"]}
    with COHORT.open(encoding="utf-8", newline="") as handle:
        given = [
            r["diagnosis"] or "(unknown)"
            for n, r in enumerate(csv.DictReader(handle), 1)
            if n not in rejected
        ]
    assert {r["value"]: r["count"] for r in groups["diagnosis"]} == dict(collections.Counter(given))
    with out.open(encoding="utf-8", newline="") as handle:
        verdicts = collections.Counter(
            (d, row["verdict"]) for d, row in zip(given, csv.DictReader(handle), strict=True)
        )
    for row in groups["diagnosis"]:
        for verdict, count in row["verdicts"].items():
            assert verdicts[(row["value"], verdict)] == count
    # rejected examples: field, row and reason only, as many as rows rejected (up to ten)
    assert len(data["rejected_examples"]) == data["reconciliation"]["rows_rejected"] == 5
    assert all(set(e) == {"field", "row", "reason"} for e in data["rejected_examples"])
    html = report.read_text(encoding="utf-8")
    for field in groups:
        assert f"chart-subgroup-{field}" in html
    lumbar = next(r for r in groups["region"] if r["value"] == "lumbar")
    assert f'id="subgroup-region-lumbar-count" class="num">{lumbar["count"]}<' in html
