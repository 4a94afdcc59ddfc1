"""`miss-screen inspect`: the scan report names what each column feeds and how its values place,
shows only values that cannot identify anyone, refuses identifier columns, and drafts a mapping
with which the registry example screens as its clean twin (at least 95 % of rows)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.mapping import inspect as inspect_module
from engine.mapping import load_mapping
from engine.mapping.inspect import match_name, scan
from engine.synth import registry
from tests.conftest import ROOT, RULESET
from tests.test_mapping import batch_verdicts

runner = CliRunner()
EXPORT = ROOT / "cases" / "registry" / "export.csv"


@pytest.mark.timeout(600)
def test_the_draft_mapping_screens_the_export_as_its_twin(tmp_path: Path) -> None:
    """The Done-when line: inspect --write-map, no edits, >= 95 % of verdicts as the twin's."""
    draft = tmp_path / "draft.yaml"
    result = runner.invoke(app, ["inspect", str(EXPORT), "--write-map", str(draft)])
    assert result.exit_code == 0, result.stderr
    load_mapping(draft)  # a valid mapping file as written
    mapped, summary = batch_verdicts(tmp_path, "draft", EXPORT, draft)
    clean, _ = batch_verdicts(tmp_path, "twin", registry.write_twin(tmp_path / "twin.csv"))
    assert len(mapped) + summary.reconciliation.rows_rejected == len(clean)
    # rejected rows count as different: compare by the export's record id (the row number)
    by_row = dict(zip(_screened_rows(tmp_path / "draft.csv"), mapped, strict=True))
    same = sum(by_row.get(n) == verdict for n, verdict in enumerate(clean, 1))
    assert same >= 0.95 * len(clean)


def _screened_rows(out: Path) -> list[int]:
    with out.open(encoding="utf-8") as handle:
        return [int(row["case_id"]) for row in csv.DictReader(handle)]


@pytest.mark.timeout(300)
def test_the_report_names_fields_units_codes_and_what_is_missing() -> None:
    report = scan(str(EXPORT), RULESET)
    assert report.rows >= 2000
    columns = {c["column"]: c for c in report.as_json()["columns"]}
    assert columns["Primary Dx"]["field"] == "diagnosis"
    assert columns["Primary Dx"]["codes"] == "icd10cm"
    assert columns["Secondary Dx"]["field"] == "codes only"
    assert columns["Secondary Dx"]["split"] == ";"
    assert columns["Weight (lb)"]["field"] == "bmi (as weight)"
    assert (columns["SVA (cm)"]["field"], columns["SVA (cm)"]["unit"]) == ("sva_mm", "cm")
    assert columns["Record ID"]["placed_pct"] == 100.0
    assert columns["LOS (days)"]["field"] is None
    fields = {f["field"]: f for f in report.as_json()["fields"]}
    assert fields["region"]["fed_by"] == []
    assert fields["region"]["unevaluable_without_it"] == fields["region"]["verdict_rules"] > 0
    assert fields["diagnosis"]["fed_by"] == ["Primary Dx"]
    assert fields["diagnosis"]["unevaluable_without_it"] == 0


@pytest.mark.parametrize(
    ("column", "field", "how"),
    [
        ("sex", "sex", "exact"),
        ("MIS technique", "mis_technique", "exact"),
        ("Gender", "sex", "synonym"),
        ("BMI (kg/m2)", "bmi", "exact"),
        ("Index level", "lowest_level", "synonym"),
        ("Smokr", "smoker", "fuzzy"),
        ("Surgeon grade", None, "none"),
    ],
)
def test_a_column_name_is_matched_exactly_by_synonym_or_fuzzily(
    column: str, field: str | None, how: str
) -> None:
    found = match_name(column)
    assert (found.field, found.how) == (field, how)
    assert found.confidence == {"exact": 1.0, "synonym": 0.9, "none": 0.0}.get(
        how, found.confidence
    )
    assert how != "fuzzy" or 0.8 <= found.confidence < 1.0


@pytest.mark.hostile
@pytest.mark.timeout(60)
def test_only_values_that_cannot_identify_anyone_are_shown(tmp_path: Path) -> None:
    cohort = tmp_path / "c.csv"
    rows = ["Study ID,Gender,Age at surgery"]
    rows += [f"S-{n},male,40" for n in range(1000)]  # the identifier guard's sample
    rows += [f"S-{n},Malee,{200 + n}" for n in range(1000, 1003)]
    rows += ["S-2000,John Smith,40", "S-2001,jane@example.org,41"]
    cohort.write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["inspect", str(cohort), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    gender = next(c for c in json.loads(result.stdout)["columns"] if c["column"] == "Gender")
    assert gender["unplaced_top"] == [{"value": "Malee", "count": 3}]
    assert gender["unplaced_not_shown"] == 2
    for text in (
        result.stdout,
        *(
            runner.invoke(app, ["inspect", str(cohort), "--format", f]).stdout
            for f in ("text", "html")
        ),
    ):
        assert "John" not in text
        assert "jane@" not in text
        assert "201" not in text  # an out-of-range age is counted, never shown


@pytest.mark.hostile
@pytest.mark.timeout(60)
def test_an_identifier_column_refuses_the_input(tmp_path: Path) -> None:
    cohort = tmp_path / "c.csv"
    cohort.write_text("Study ID,Patient Name,Gender\nS-1,Ann Lee,F\n")
    draft = tmp_path / "draft.yaml"
    result = runner.invoke(app, ["inspect", str(cohort), "--write-map", str(draft)])
    assert result.exit_code == 2
    assert "column 'Patient Name'" in result.stderr
    assert "looks like a direct identifier" in result.stderr
    assert "Ann" not in result.stderr + result.stdout
    assert not draft.exists()


@pytest.mark.timeout(60)
def test_distinct_values_are_counted_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column of many distinct values keeps at most MAX_DISTINCT of them; the rest count."""
    monkeypatch.setattr(inspect_module, "MAX_DISTINCT", 5)
    cohort = tmp_path / "c.csv"
    cohort.write_text("case_id,sex\n" + "".join(f"S-{n},{n + 10}\n" for n in range(50)))
    report = scan(str(cohort), RULESET)
    sex = next(c for c in report.columns if c.column == "sex")
    assert len(sex.unplaced) == 5
    assert sum(sex.unplaced.values()) + sex.unplaced_other == 50


@pytest.mark.timeout(120)
def test_html_and_json_hold_the_same_numbers(tmp_path: Path) -> None:
    data = json.loads(runner.invoke(app, ["inspect", str(EXPORT), "--format", "json"]).stdout)
    html = runner.invoke(app, ["inspect", str(EXPORT), "--format", "html"]).stdout
    assert html.startswith("<!DOCTYPE html>")
    assert f'<span id="rows">{data["rows"]}</span>' in html
    first = data["columns"][0]
    assert f'id="column-1-values">{first["values"]}<' in html
    assert "<script" not in html


@pytest.mark.hostile
@pytest.mark.timeout(60)
def test_unreadable_rows_and_nested_values_are_counted_not_fatal(tmp_path: Path) -> None:
    cohort = tmp_path / "c.jsonl"
    lines = [
        '{"case_id": "S-1", "sex": ["male"]}',
        "{not json",
        '{"case_id": "S-2", "sex": "male"}',
    ]
    cohort.write_text("\n".join(lines) + "\n")
    report = scan(str(cohort), RULESET)
    assert (report.rows, report.unreadable) == (3, 1)
    sex = next(c for c in report.columns if c.column == "sex")
    assert (sex.values, sex.placed, sex.unplaced_other) == (2, 1, 1)


@pytest.mark.hostile
@pytest.mark.timeout(60)
def test_a_file_without_a_header_shows_none_of_its_first_line(tmp_path: Path) -> None:
    cohort = tmp_path / "c.csv"
    cohort.write_text("S-1,John Smith,1961-03-12\nS-2,Ann Lee,1970-01-02\n")
    result = runner.invoke(app, ["inspect", str(cohort)])
    assert result.exit_code == 2
    assert "looks like a row of data, not a header" in result.stderr
    assert "John" not in result.stderr + result.stdout
    assert "1961" not in result.stderr + result.stdout
