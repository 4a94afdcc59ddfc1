"""Mapping files (--map): the registry example screens as its clean twin; every part of the
format does what docs/mapping.md says, and a bad mapping or a contradictory row is named."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import simple_icd_10_cm as icd
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from engine.batch.run import BatchOptions, run_batch
from engine.batch.worker import OutputFormat
from engine.cli import app
from engine.errors import CaseInputError, UsageError
from engine.mapping import MappingError, load_mapping
from engine.screener import Screener
from engine.synth import registry
from tests.conftest import ROOT, RULESET

runner = CliRunner()
EXAMPLE = ROOT / "cases" / "registry"
EXPORT, MAPPING = EXAMPLE / "export.csv", EXAMPLE / "mapping.yaml"


def batch_verdicts(
    tmp_path: Path, name: str, cohort: Path, mapping: Path | None = None
) -> tuple[list[str], Any]:
    """Verdicts of a cohort screened by run_batch (CSV output, one worker), in row order."""
    out = tmp_path / f"{name}.csv"
    options = BatchOptions(
        inputs=[str(cohort)],
        out=str(out),
        output_format=OutputFormat.csv,
        rules_dir=RULESET.directory,
        workers=1,
        summary=str(tmp_path / f"{name}.summary.json"),
        mapping=load_mapping(mapping) if mapping else None,
    )
    summary = run_batch(options, RULESET)
    with out.open(encoding="utf-8") as handle:
        return [row["verdict"] for row in csv.DictReader(handle)], summary


# --- the registry example -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_registry_export_is_the_generator_output(tmp_path: Path) -> None:
    """The committed export is what engine/synth/registry.py writes, and it is messy as a real
    export is: registry names, integer ids, codes, abbreviations, decimal commas, extra columns."""
    written = registry.write_example(tmp_path)
    assert written.read_bytes() == EXPORT.read_bytes()
    with EXPORT.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 2000
    assert [r["Record ID"] for r in rows[:3]] == ["1", "2", "3"]
    cells = [v for r in rows for v in r.values()]
    assert any("," in v and v.replace(",", "").lstrip("-").isdigit() for v in cells)
    assert {r["Primary Dx"] for r in rows} >= {"M51.16", "M48.062", "HNP", "DDD"}
    assert any(";" in r["Secondary Dx"] for r in rows)
    assert {"Surgeon grade", "LOS (days)", "Weight (lb)", "SVA (cm)"} <= set(rows[0])


def test_registry_codes_are_in_the_icd10cm_release() -> None:
    """Every ICD-10-CM code the example writes exists in the release the project uses."""
    with EXPORT.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    codes = {r["Primary Dx"] for r in rows if r["Primary Dx"][:1].isupper()}
    codes = {c for c in codes if c[1:3].isdigit()}
    codes |= {c.strip() for r in rows for c in r["Secondary Dx"].split(";") if c.strip()}
    assert len(codes) > 15
    assert not sorted(c for c in codes if not icd.is_valid_item(c))


@pytest.mark.timeout(600)
def test_registry_export_screens_as_its_clean_twin(tmp_path: Path) -> None:
    """With the shipped mapping no row is rejected, and every verdict is the twin's."""
    twin = registry.write_twin(tmp_path / "twin.csv")
    mapped, summary = batch_verdicts(tmp_path, "export", EXPORT, MAPPING)
    clean, _ = batch_verdicts(tmp_path, "twin", twin)
    assert summary.reconciliation.rows_rejected == 0
    assert len(mapped) == len(clean) >= 2000
    differ = [n for n, (a, b) in enumerate(zip(mapped, clean, strict=True), 1) if a != b]
    assert differ == []
    assert summary.stamp.mapping is not None
    assert summary.stamp.mapping.sha256 == load_mapping(MAPPING).sha256


# --- the format, part by part -------------------------------------------------------------------

SMALL: dict[str, Any] = {
    "columns": {
        "Record ID": "case_id",
        "Gender": {"field": "sex", "values": {"1": "male", "2": "female"}},
        "Primary Dx": {"field": "diagnosis", "codes": "icd10cm"},
        "Other Dx": {"codes": "icd10cm", "split": ";"},
        "Diabetes": {"field": "diabetes", "values": {"x": True}, "blank": False},
        "Weight (lb)": {"measure": "weight", "unit": "lb"},
        "Height (in)": {"measure": "height", "unit": "in"},
        "SVA (cm)": {"field": "sva_mm", "unit": "cm"},
    },
    "constants": {"region": "lumbar"},
    "ignore": ["Surgeon"],
}


SMALL_MAPPING = load_mapping(SMALL)


def test_each_part_of_a_mapping_places_its_values() -> None:
    mapping = load_mapping(SMALL)
    row = {
        "Record ID": "12",
        "Gender": "2",
        "Primary Dx": "m51.16",
        "Other Dx": "M81.0; I10",
        "Diabetes": "",
        "Weight (lb)": "154,3",
        "Height (in)": "67",
        "SVA (cm)": "4,53",
        "Surgeon": "Consultant",
        "note": "kept for validation",
    }
    assert mapping.apply(row) == {
        "case_id": "12",
        "sex": "female",
        "diagnosis": "disc_herniation",
        "osteoporosis": True,  # M81.0; I10 sets nothing
        "diabetes": False,  # a blank cell means no, because this mapping says so
        "bmi": 24.2,  # 154.3 lb at 67 in, to one decimal
        "sva_mm": 45.3,  # not 45.300000000000004
        "region": "lumbar",
        "note": "kept for validation",
    }


def test_a_value_the_mapping_cannot_place_goes_on_to_validation() -> None:
    """An unknown code or word is not dropped: validation refuses it, naming the field."""
    mapping = load_mapping(SMALL)
    mapped = mapping.apply({"Record ID": "1", "Primary Dx": "M54.5", "Gender": "3"})
    assert mapped["diagnosis"] == "M54.5"
    assert mapped["sex"] == "3"
    with pytest.raises(CaseInputError) as caught:
        Screener.load(engine="reference").screen(mapped)
    assert {p.field for p in caught.value.problems} >= {"diagnosis", "sex"}


@pytest.mark.parametrize(
    ("row", "field", "columns"),
    [
        ({"Primary Dx": "M80.08XA", "Osteo": "N"}, "osteoporosis", ("Primary Dx", "Osteo")),
        ({"Primary Dx": "M51.16", "Dx2": "M48.062"}, "diagnosis", ("Primary Dx", "Dx2")),
        ({"Other Dx": "M51.16; M43.16"}, "diagnosis", ("Other Dx",)),
        ({"Primary Dx": "M51.16", "Region": "cervical"}, "region", ("Region", "constants")),
    ],
)
def test_sources_that_disagree_are_a_row_error_naming_both(
    row: dict[str, str], field: str, columns: tuple[str, ...]
) -> None:
    mapping = load_mapping(
        {
            "columns": {
                "Primary Dx": {"field": "diagnosis", "codes": "icd10cm"},
                "Dx2": {"field": "diagnosis", "codes": "icd10cm"},
                "Other Dx": {"codes": "icd10cm", "split": ";"},
                "Osteo": {"field": "osteoporosis", "values": {"Y": True, "N": False}},
                "Region": "region",
            },
            "precedence": {"diagnosis": ["Primary Dx", "Dx2"]},
            "constants": {"region": "lumbar"},
        }
    )
    with pytest.raises(CaseInputError) as caught:
        mapping.apply({"case_id": "S-1", **row}, "export.csv", 7)
    (problem,) = caught.value.problems
    assert problem.field == field
    for column in columns:
        assert (column if column == "constants" else f"column '{column}'") in problem.message
    assert caught.value.row == 7
    assert caught.value.case_id == "S-1"


def test_precedence_fills_from_the_next_column_and_agreeing_ones_pass() -> None:
    mapping = load_mapping(
        {
            "columns": {
                "Dx1": {"field": "diagnosis", "codes": "icd10cm"},
                "Dx2": {"field": "diagnosis", "codes": "icd10cm"},
            },
            "precedence": {"diagnosis": ["Dx2", "Dx1"]},
        }
    )
    assert mapping.apply({"Dx1": "", "Dx2": "M48.061"})["diagnosis"] == "spinal_stenosis"
    assert mapping.apply({"Dx1": "M48.062", "Dx2": None})["diagnosis"] == "spinal_stenosis"
    assert mapping.apply({"Dx1": "M48.062", "Dx2": "M48.0"})["diagnosis"] == "spinal_stenosis"


@pytest.mark.hostile
def test_a_disagreement_never_shows_a_value_that_could_identify_someone() -> None:
    mapping = load_mapping(
        {"columns": {"A": "case_id", "B": "case_id"}, "precedence": {"case_id": ["A", "B"]}}
    )
    with pytest.raises(CaseInputError) as caught:
        mapping.apply({"A": "John Smith", "B": "jane@example.org"})
    text = str(caught.value)
    assert "John" not in text
    assert "jane" not in text
    assert "withheld" in text


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            {"columns": {"Age": "age"}},
            "columns: Age: field: 'age' is not a field of the data dictionary; "
            "did you mean 'age_years'?",
        ),
        ({"columns": {"Grade": "meyerding_grade"}}, "is a derived attribute"),
        (
            {"columns": {"A": "diagnosis", "B": "diagnosis"}},
            "say which comes first under precedence",
        ),
        (
            {"columns": {"G": {"field": "sex", "values": {"1": "mal"}}}},
            "'mal' is not a valid value",
        ),
        (
            {"columns": {"G": {"field": "sex", "values": {"M": "male", "m": "male"}}}},
            "listed twice",
        ),
        ({"columns": {"H": {"field": "bmi", "unit": "in"}}}, "cannot be converted to bmi"),
        (
            {"columns": {"W": {"measure": "weight", "unit": "lb"}}},
            "one weight column and one height",
        ),
        ({"columns": {"X": {"split": ";"}}}, "give the field it feeds"),
        ({"columns": {"X": "sex"}, "constants": {"region": "sacral"}}, "constants: region"),
        ({"columns": {"X": "sex"}, "extra": 1}, "extra: Extra inputs are not permitted"),
        ({"columns": {"X": "sex"}, "ignore": ["X"]}, "both mapped and ignored: X"),
    ],
)
def test_a_bad_mapping_is_named_key_by_key(given: dict[str, Any], expected: str) -> None:
    with pytest.raises(MappingError) as caught:
        load_mapping(given)
    assert expected in "\n".join(caught.value.lines())


@pytest.mark.hostile
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "columns:\n  Gender: sex\n  Gender: age_years\n",
            "map.yaml:3: key 'Gender' is given more than once",
        ),
        ("columns: [a, b\n", "malformed YAML"),
        ("- just a list\n", "expected a mapping with a columns: section"),
        ("columns:\n  Gender: {field: sex, values: {yes: male}}\n", "quote each key"),
        ("#" * 1_100_000, "larger than 1 MB"),
    ],
)
def test_a_mapping_file_that_is_not_one_is_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert expected in "\n".join(caught.value.lines())


@pytest.mark.timeout(120)
def test_batch_with_a_bad_map_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "map.yaml"
    bad.write_text("columns:\n  Gender: gender\n")
    result = runner.invoke(
        app, ["batch", str(EXPORT), "--map", str(bad), "--out", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 2
    assert "map.yaml: columns: Gender: field: 'gender' is not a field" in result.stderr
    assert "did you mean 'sex'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.hostile
@pytest.mark.timeout(120)
def test_an_identifier_column_read_by_the_mapping_is_refused(tmp_path: Path) -> None:
    """`MRN: case_id` does not let a medical record number through the guard."""
    cohort = tmp_path / "c.csv"
    cohort.write_text("MRN,Gender\n123,M\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns:\n  MRN: case_id\n  Gender: sex\n")
    result = runner.invoke(
        app, ["batch", str(cohort), "--map", str(mapping), "--out", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 2
    assert "column 'MRN' (read by the mapping) looks like a direct identifier" in result.stderr
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.timeout(300)
def test_screen_frame_takes_the_mapping_as_a_path_or_a_dict() -> None:
    frame = pd.read_csv(EXPORT, dtype=str, keep_default_na=False).head(200)
    screener = Screener.load()
    by_path = screener.screen_frame(frame, mapping=MAPPING)
    spec = load_mapping(MAPPING).spec.model_dump(exclude_defaults=True)
    by_dict = screener.screen_frame(frame, mapping=spec)
    assert by_path.equals(by_dict)
    twin = pd.DataFrame(list(registry.twin_rows())[:200])
    assert list(by_path["verdict"]) == list(screener.screen_frame(twin)["verdict"])
    assert by_path["rejected"].isna().all()


def test_screen_frame_rejects_a_contradictory_row_in_place() -> None:
    frame = pd.DataFrame(
        [{"id": "A-1", "Dx": "M51.16", "Osteo": "N"}, {"id": "A-2", "Dx": "M80.08XA", "Osteo": "N"}]
    )
    mapping = {
        "columns": {
            "id": "case_id",
            "Dx": {"field": "diagnosis", "codes": "icd10cm"},
            "Osteo": {"field": "osteoporosis", "values": {"N": False}},
        }
    }
    out = Screener.load(engine="reference").screen_frame(frame, mapping=mapping)
    assert out.loc[0, "verdict"] is not None
    assert pd.isna(out.loc[0, "rejected"])
    assert "column 'Dx' gives true but column 'Osteo' gives false" in out.loc[1, "rejected"]
    assert out.loc[1, "case_id"] == "A-2"


def test_the_summary_stamps_the_mapping(tmp_path: Path) -> None:
    cohort = tmp_path / "c.csv"
    cohort.write_text("Study,Gender\nS-1,male\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns:\n  Study: case_id\n  Gender: sex\n")
    _, summary = batch_verdicts(tmp_path, "out", cohort, mapping)
    stamp = json.loads(summary.model_dump_json())["stamp"]["mapping"]
    assert stamp == {"path": str(mapping), "sha256": load_mapping(mapping).sha256}


SMALL_EXPORT = (
    "Study,Gender,Dx,Level\nS-1,1,M51.16,L4-L5\nS-2,2,M48.061,L5-S1\nS-3,1,M43.16,L4-L5\n"
)
SMALL_MAP = (
    "columns:\n  Study: case_id\n  Gender: {field: sex, values: {'1': male, '2': female}}\n"
    "  Dx: {field: diagnosis, codes: icd10cm}\n  Level: lowest_level\n"
)


@pytest.mark.timeout(300)
def test_rules_diff_and_agree_take_the_mapping(tmp_path: Path) -> None:
    cohort, mapping = tmp_path / "export.csv", tmp_path / "map.yaml"
    cohort.write_text(SMALL_EXPORT)
    mapping.write_text(SMALL_MAP)
    rules = RULESET.directory
    args = ["rules", "diff", rules, rules, "--cohort", str(cohort), "--format", "json"]
    unmapped = runner.invoke(app, args)
    assert unmapped.exit_code == 2  # no case_id column without the mapping
    mapped = runner.invoke(app, [*args, "--map", str(mapping)])
    assert mapped.exit_code == 0, mapped.stderr
    report = json.loads(mapped.stdout)
    assert report["new"]["reconciliation"]["rows_screened"] == 3
    assert report["verdict_changed"] == 0
    labels = tmp_path / "labels.csv"
    labels.write_text("case_id,surgeon_1\nS-1,yes\nS-2,no\nS-3,yes\n")
    agreed = runner.invoke(
        app,
        [
            "agree",
            "--labels",
            str(labels),
            "--cohort",
            str(cohort),
            "--map",
            str(mapping),
            "--rules",
            rules,
            "--format",
            "json",
        ],
    )
    assert agreed.exit_code == 0, agreed.stderr
    agreement = json.loads(agreed.stdout)
    assert agreement["cases_labelled"] == 3
    assert agreement["cohort_reconciliation"]["rows_screened"] == 3


def test_a_column_already_named_as_a_field_is_a_source_too() -> None:
    """A `diabetes` column beside diabetes codes: checked against them, never overwritten."""
    mapping = load_mapping({"columns": {"Dx": {"codes": "icd10cm", "split": ";"}}})
    assert mapping.output_columns(["case_id", "diabetes", "Dx"]).count("diabetes") == 1
    assert mapping.apply({"case_id": "S-1", "diabetes": True, "Dx": "E11.9"})["diabetes"] is True
    assert mapping.apply({"case_id": "S-1", "diabetes": None, "Dx": "E11.9"})["diabetes"] is True
    with pytest.raises(CaseInputError) as caught:
        mapping.apply({"case_id": "S-1", "diabetes": False, "Dx": "E11.9"})
    assert "column 'diabetes' gives false but column 'Dx' gives true" in str(caught.value)


@pytest.mark.hostile
@pytest.mark.timeout(120)
@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "Record ID",
                "Gender",
                "Primary Dx",
                "Other Dx",
                "Diabetes",
                "Weight (lb)",
                "Height (in)",
                "SVA (cm)",
                "Surgeon",
                "sex",
                "x",
            ]
        ),
        st.one_of(st.none(), st.text(max_size=20), st.integers(), st.floats(), st.booleans()),
    )
)
def test_any_row_is_mapped_or_refused_with_a_case_error(row: dict[str, Any]) -> None:
    """Whatever a row holds, apply gives a dict or raises CaseInputError: no other exception."""
    problems: list[Any] | None = None
    try:
        mapped = SMALL_MAPPING.apply(row)
    except CaseInputError as exc:
        problems = list(exc.problems)
    else:
        assert isinstance(mapped, dict)
    assert problems is None or problems


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("weight", "height"),
    [
        ("0", "67"),
        ("150", "0"),
        ("-150", "67"),
        ("1e5", "67"),
        (10**400, "67"),
        ("9" * 300, "0,0000001"),
    ],
)
def test_a_weight_and_height_that_make_no_bmi_are_a_row_error(weight: Any, height: str) -> None:
    with pytest.raises(CaseInputError) as caught:
        SMALL_MAPPING.apply({"Record ID": "1", "Weight (lb)": weight, "Height (in)": height})
    assert [p.field for p in caught.value.problems] == ["bmi"]


@pytest.mark.timeout(600)
def test_typed_parquet_and_two_workers_map_as_csv_does(tmp_path: Path) -> None:
    """Parquet holds the ids as int64 and weights as doubles; the pool pickles the mapping."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    text = {"Primary Dx": pa.string(), "Secondary Dx": pa.string()}
    table = pacsv.read_csv(EXPORT, convert_options=pacsv.ConvertOptions(column_types=text))
    assert table.schema.field("Record ID").type == pa.int64()
    parquet = tmp_path / "export.parquet"
    pq.write_table(table, parquet)
    out = tmp_path / "p.csv"
    args = ["batch", str(parquet), "--map", str(MAPPING), "--out", str(out)]
    result = runner.invoke(app, [*args, "--workers", "2", "--progress", "none"])
    assert result.exit_code == 0, result.stderr
    from_csv, _ = batch_verdicts(tmp_path, "csv", EXPORT, MAPPING)
    with out.open(encoding="utf-8") as handle:
        assert [row["verdict"] for row in csv.DictReader(handle)] == from_csv
    assert "screened 2180 + rejected 0" in result.stderr


@pytest.mark.hostile
@pytest.mark.timeout(300)
def test_ids_a_mapping_names_are_pseudonymised_after_it(tmp_path: Path) -> None:
    """--pseudonymise-ids hashes the case_id the mapping gives (here from `Study`), in batch
    and in screen_frame alike; a row the mapping refuses lists no id as it was read."""
    cohort, mapping = tmp_path / "export.csv", tmp_path / "map.yaml"
    rows = [f"{line}," for line in SMALL_EXPORT.splitlines()[1:]]
    rows.append("S-4,1,M80.08XA,L4-L5,N")  # the code says osteoporosis, the column no
    cohort.write_text("\n".join(["Study,Gender,Dx,Level,Osteo", *rows]) + "\n")
    mapping.write_text(SMALL_MAP + "  Osteo: {field: osteoporosis, values: {'N': false}}\n")
    key, out = tmp_path / "key", tmp_path / "out.csv"
    result = runner.invoke(
        app,
        [
            "batch",
            str(cohort),
            "--map",
            str(mapping),
            "--out",
            str(out),
            "--pseudonymise-ids",
            str(key),
            "--workers",
            "1",
            "--progress",
            "none",
        ],
    )
    assert result.exit_code == 0, result.stderr
    with out.open(encoding="utf-8") as handle:
        ids = [row["case_id"] for row in csv.DictReader(handle)]
    assert len(ids) == 3
    assert all(i.startswith("p-") for i in ids)
    errors = (tmp_path / "out.csv.errors.jsonl").read_text()
    assert '"case_id": null' in errors
    assert "S-4" not in errors
    frame = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    screened = Screener.load(engine="reference").screen_frame(
        frame, mapping=mapping, pseudonymise_ids=key
    )
    assert list(screened["case_id"][:3]) == ids


@pytest.mark.hostile
def test_screen_frame_checks_the_mapped_columns_and_guards_the_names_it_reads() -> None:
    screener = Screener.load(engine="reference")
    frame = pd.DataFrame([{"Study": "S-1", "Gender": "1", "Surgeon grade": "Fellow"}])
    mapping = {"columns": {"Study": "case_id", "Gender": {"field": "sex", "values": {"1": "male"}}}}
    out = screener.screen_frame(frame, mapping=mapping)
    assert out.loc[0, "case_id"] == "S-1"
    assert pd.isna(out.loc[0, "rejected"])
    assert out.attrs["ignored_columns"] == ["Surgeon grade"]
    with pytest.raises(UsageError, match="look like direct identifiers"):
        screener.screen_frame(
            pd.DataFrame([{"MRN": "S-1"}]), mapping={"columns": {"MRN": "case_id"}}
        )


@pytest.mark.hostile
@pytest.mark.timeout(120)
def test_an_identifier_column_mapped_to_the_pseudonymised_id_screens_in_a_frame_as_in_batch(
    tmp_path: Path,
) -> None:
    """`MRN: case_id` refuses a frame, as it refuses a batch; with pseudonymise_ids the MRN is
    hashed before anything reads it, so the frame screens, as `batch --pseudonymise-ids` does."""
    frame = pd.DataFrame([{"MRN": "MRN0012345", "Dx": "HNP", "age_years": 45}])
    mapping = {"columns": {"MRN": "case_id", "Dx": "diagnosis"}}
    with pytest.raises(UsageError, match="'MRN'"):
        Screener.load().screen_frame(frame, mapping=mapping)
    out = Screener.load().screen_frame(frame, mapping=mapping, pseudonymise_ids=tmp_path / "key")
    assert out.loc[0, "case_id"].startswith("p-")
    assert "MRN0012345" not in out.to_csv()
