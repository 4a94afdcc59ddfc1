"""Subgroups in the batch summary and report, checked against counts taken from the cohort file."""

from __future__ import annotations

import collections
import csv
import html
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from tests.test_html_report import run_chromium

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


# Measured in the page after layout: every subgroup table's right edge against its section's
# (the white page's content box), and the document's width against the window's.
_MEASURE = """<script>window.addEventListener("load", () => {
  const section = document.getElementById("subgroups").getBoundingClientRect();
  const out = document.createElement("pre");
  out.id = "fit-measure";
  out.textContent = JSON.stringify({
    window: window.innerWidth,
    document: document.documentElement.scrollWidth,
    section: section.right,
    tables: [...document.querySelectorAll("#subgroups table")].map(
      t => ({right: t.getBoundingClientRect().right, scroll: t.parentElement.scrollWidth,
             client: t.parentElement.clientWidth})),
  });
  document.body.appendChild(out);
});</script>"""


@pytest.mark.timeout(300)
def test_subgroup_tables_fit_a_1280_px_window(tmp_path: Path) -> None:
    """Issue 29: the bundled cohort's subgroup tables (seven columns of 'n (p %)' under verdict
    words) stay inside the page in a 1280 x 900 window, with nothing to scroll sideways."""
    report = tmp_path / "r.html"
    done = runner.invoke(
        app,
        [
            "batch",
            str(COHORT),
            "--out",
            str(tmp_path / "r.csv"),
            "--report",
            str(report),
            "--progress",
            "none",
        ],
    )
    assert done.exit_code == 0, done.output
    probe = tmp_path / "probe.html"
    page = report.read_text(encoding="utf-8")
    assert page.count("</body>") == 1
    probe.write_text(page.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    shown = run_chromium(tmp_path, "--window-size=1280,900", "--dump-dom", probe.as_uri())
    assert shown.returncode == 0, shown.stderr
    found = re.search(r'<pre id="fit-measure">(.*?)</pre>', shown.stdout, re.S)
    assert found, shown.stdout[-2000:]
    fit = json.loads(html.unescape(found.group(1)))
    assert len(fit["tables"]) == 3  # diagnosis, planned_procedure, region
    assert fit["document"] <= fit["window"]
    for table in fit["tables"]:
        assert table["right"] <= fit["section"] + 0.5, fit
        assert table["scroll"] <= table["client"], fit
