"""The synthetic cohort: deterministic, valid and consistent, corrupt exactly where planned."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine import synth
from engine.derive import InconsistentInput, build_facts
from engine.dictionary import DERIVED_FIELDS, FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.errors import CaseInputError
from engine.io.cases import validate_case
from engine.rules.condition import fields_of
from engine.synth import (
    corrupt_row_numbers,
    corruption_plan,
    generate_rows,
    write_cohort,
)
from tests.conftest import RULESET

N = 5000
FORMATS = ("csv", "jsonl", "parquet")
ROWS = list(generate_rows(N, 42))
CLEAN = list(generate_rows(N, 42, missing=0.0, corrupt=0.0))


def failure(row: dict[str, object], number: int) -> str | None:
    """The field a row is rejected for by validation or by the constraints, or None if it passes."""
    try:
        _, values = validate_case(row, "synthetic", number)
        build_facts(values, RULESET)
    except CaseInputError as exc:
        return ",".join(str(p.field) for p in exc.problems)
    except InconsistentInput as exc:
        return str(exc.problem.field)
    return None


def failures(rows: list[dict[str, object]]) -> dict[int, str]:
    found = {}
    for number, row in enumerate(rows, 1):
        reason = failure(row, number)
        if reason is not None:
            found[number] = reason
    return found


# --- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_gives_byte_identical_files(tmp_path: Path, fmt: str) -> None:
    first, second, other = (tmp_path / f"{name}.{fmt}" for name in ("a", "b", "c"))
    assert write_cohort(first, 1500, 7) == 1500
    write_cohort(second, 1500, 7)
    write_cohort(other, 1500, 8)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"a.{fmt}", f"b.{fmt}", f"c.{fmt}"]


def test_same_seed_gives_same_rows_and_other_seeds_differ() -> None:
    assert list(generate_rows(N, 42)) == ROWS
    assert list(generate_rows(N, 43)) != ROWS


def test_case_ids_are_unique_and_numbered_from_one() -> None:
    ids = [row["case_id"] for row in ROWS]
    assert ids[0] == "SYN-0000001"
    assert ids[-1] == f"SYN-{N:07d}"
    assert len(set(ids)) == N


# --- validity and corruption ---------------------------------------------------------------------


def test_exactly_the_planned_rows_fail_and_name_the_corrupt_field() -> None:
    plan = corruption_plan(N, 42, 0.01)
    assert len(plan) == round(N * 0.01) == 50
    assert corrupt_row_numbers(N, 42, 0.01) == set(plan)
    found = failures(ROWS)
    assert set(found) == set(plan)
    for number, reason in found.items():
        assert plan[number].field in reason.split(","), (plan[number], reason)
    assert {c.kind for c in plan.values()} == {
        "out_of_range",
        "wrong_type",
        "bad_enum",
        "combination",
    }


def test_without_corruption_every_row_validates_and_builds_facts() -> None:
    assert failures(CLEAN) == {}
    assert corrupt_row_numbers(N, 42, 0.0) == set()


@pytest.mark.parametrize(("n", "share", "expected"), [(1234, 0.01, 12), (10, 0.05, 0), (7, 1.0, 7)])
def test_corrupt_row_count_is_exactly_rounded(n: int, share: float, expected: int) -> None:
    rows = corrupt_row_numbers(n, 3, share)
    assert len(rows) == expected
    assert all(1 <= row <= n for row in rows)


def test_corruptions_across_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "CHUNK_ROWS", 700)
    rows = list(generate_rows(2000, 5, corrupt=0.02))
    assert [row["case_id"] for row in rows] == [f"SYN-{i:07d}" for i in range(1, 2001)]
    assert set(failures(rows)) == corrupt_row_numbers(2000, 5, 0.02)


def test_typed_rows_keep_column_types_and_still_fail() -> None:
    plan = corruption_plan(N, 42, 0.01)
    typed = list(generate_rows(N, 42, typed=True))
    for number, row in enumerate(typed, 1):
        if number not in plan:
            assert row == ROWS[number - 1]
            continue
        assert failure(row, number) is not None
        if plan[number].kind == "wrong_type":
            (name, value), *_ = plan[number].typed_values
            assert isinstance(value, int | float)
            assert row[name] == value != ROWS[number - 1][name]


def test_clean_rows_are_internally_consistent() -> None:
    scores = synth.load_mix().scores
    tlics = {name: scores[name] for name in ("tlics_morphology", "tlics_plc", "tlics_neuro")}
    sins = {name: points for name, points in scores.items() if name.startswith("sins_")}
    slic = {name: points for name, points in scores.items() if name.startswith("slic_")}
    for row in CLEAN:
        diagnosis = row["diagnosis"]
        if row["pregnant"] is True:
            assert row["sex"] == "female"
            age = row["age_years"]
            assert isinstance(age, int)
            assert 18 <= age <= 45
        else:
            assert row["gestational_age_weeks"] is None
        if diagnosis != "disc_herniation":
            assert all(row[f] is None for f in INPUT_FIELDS if f.startswith("herniation_"))
        if diagnosis != "spondylolisthesis":
            assert row["slip_percent"] is None
        if diagnosis != "adult_deformity":
            assert row["sva_mm"] is None
            assert row["coronal_cobb_deg"] is None
        if diagnosis != "fracture":
            assert all(row[f] is None for f in ("tlics_score", *tlics))
        if diagnosis != "tumor":
            assert all(row[f] is None for f in ("sins_score", *sins))
        if diagnosis != "infection":
            assert row["epidural_abscess"] is None
            assert row["spondylodiscitis"] is None
        if row["tlics_score"] is not None and all(row[f] is not None for f in tlics):
            assert row["tlics_score"] == sum(tlics[f][str(row[f])] for f in tlics)
        if row["sins_score"] is not None and all(row[f] is not None for f in sins):
            assert row["sins_score"] == sum(sins[f][str(row[f])] for f in sins)
        if diagnosis != "fracture" or row["region"] not in ("cervical", None):
            assert all(row[f] is None for f in (*slic, "slic_score"))
        if row["slic_neuro"] == "intact":
            assert row["slic_cord_compression"] is not True  # a deficit's modifier (CON-010)
        if row["slic_score"] is not None and all(row[f] is not None for f in slic):
            assert row["slic_score"] == sum(slic[f][str(row[f]).lower()] for f in slic)
        if row["myelopathy"] is True:
            assert row["region"] in ("cervical", "thoracic", None)
        if row["cauda_equina_syndrome"] is True:
            assert row["region"] in ("lumbar", None)


def input_fields_the_rules_read() -> set[str]:
    """Every input field some rule, derived attribute or constraint of the bundled rules reads,
    a derived field standing for the inputs it is computed from, all the way down."""
    pending: set[str] = set()
    for rule in RULESET.rules:
        pending |= set(rule.fields)
    for derived in RULESET.derived:
        pending |= set(derived.inputs)
    for constraint in RULESET.constraints:
        pending.add(constraint.spec.name)
        for when, _ in constraint.narrowings:
            pending |= fields_of(when)
    derived_by_field, found = RULESET.derived_by_field, set()
    while pending:
        name = pending.pop()
        if name in derived_by_field:
            pending |= set(derived_by_field[name].inputs)
        else:
            found.add(name)
    return found


def test_every_field_a_rule_reads_is_filled_by_the_generator() -> None:
    """Issue 29: a field the rules read that synth never fills (the SLIC fields were) leaves its
    rules unexercised by every synthetic cohort and their verdicts open for want of it."""
    read = input_fields_the_rules_read()
    assert {"slic_neuro", "slic_cord_compression", "tlics_neuro", "bmi"} <= read
    assert read <= set(INPUT_FIELDS)  # nothing read is neither an input nor a derived field
    filled = {name for row in CLEAN for name, value in row.items() if value is not None}
    assert sorted(read - filled) == []


def test_clinical_mix_is_plausible() -> None:
    diagnoses = Counter(row["diagnosis"] for row in ROWS)
    assert set(FIELDS_BY_NAME["diagnosis"].values) <= set(diagnoses)
    assert diagnoses["disc_herniation"] > diagnoses["adult_deformity"] > diagnoses["infection"]
    assert diagnoses["spinal_stenosis"] > diagnoses["tumor"]
    known = [c for row in CLEAN if isinstance(c := row["cauda_equina_syndrome"], bool)]
    assert 0.005 < sum(known) / len(known) < 0.025
    assert any(row["mis_technique"] is None for row in CLEAN)
    assert any(row["surgeon_mis_cases"] is None for row in CLEAN)
    assert any(row["surgeon_mis_cases"] is not None for row in CLEAN)
    slips = [s for row in CLEAN if isinstance(s := row["slip_percent"], float)]
    high = sum(1 for s in slips if s > 50)
    assert 0 < high < len(slips) / 4


# --- missing values ------------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.05, 0.3])
def test_missing_share_blanks_known_values_of_the_same_cohort(share: float) -> None:
    blanked = list(generate_rows(N, 42, missing=share, corrupt=0.0))
    known = kept = 0
    for base, row in zip(CLEAN, blanked, strict=True):
        assert row["case_id"] == base["case_id"]
        for name in INPUT_FIELDS[1:]:
            if base[name] is None:
                assert row[name] is None
                continue
            known += 1
            if row[name] is not None:
                assert row[name] == base[name]
                kept += 1
    assert abs((known - kept) / known - share) < 0.01


# --- files ---------------------------------------------------------------------------------------


def _parse_csv_cell(name: str, text: str) -> object:
    """CSV text back to a value of the field's type; corrupt text stays text."""
    if text == "":
        return None
    kind = FIELDS_BY_NAME[name].type
    try:
        if kind is FieldType.integer:
            return int(text)
        if kind is FieldType.number:
            return float(text)
    except ValueError:
        return text
    if kind is FieldType.boolean:
        return {"true": True, "false": False}.get(text, text)
    return text


def _read(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            assert header == list(INPUT_FIELDS)
            return [
                {n: _parse_csv_cell(n, t) for n, t in zip(header, line, strict=True)}
                for line in reader
            ]
    if path.suffix == ".jsonl":
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            assert None not in data.values()
            rows.append({name: data.get(name) for name in INPUT_FIELDS})
        return rows
    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_round_trip_the_generated_values(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"cohort.{fmt}"
    kinds = {c.kind for c in corruption_plan(2000, 42, 0.02).values()}
    assert "wrong_type" in kinds  # 'thirty' in CSV and JSONL, an out-of-range number in Parquet
    assert write_cohort(path, 2000, 42, corrupt=0.02) == 2000
    expected = list(generate_rows(2000, 42, corrupt=0.02, typed=fmt == "parquet"))
    assert _typed(_read(path)) == _typed(expected)


def _typed(rows: list[dict[str, object]]) -> list[list[tuple[str, str, object]]]:
    """Rows as (field, type, value) so that 1, 1.0 and True do not compare equal."""
    return [[(k, type(v).__name__, v) for k, v in row.items()] for row in rows]


def test_parquet_columns_are_typed_and_no_derived_field_is_written(tmp_path: Path) -> None:
    path = tmp_path / "cohort.parquet"
    write_cohort(path, 300, 1)
    schema = pq.read_schema(path)
    assert schema.names == list(INPUT_FIELDS)
    assert not DERIVED_FIELDS & set(schema.names)
    expected = {
        FieldType.integer: "int64",
        FieldType.number: "double",
        FieldType.boolean: "bool",
        FieldType.enum: "string",
        FieldType.string: "string",
    }
    for name in INPUT_FIELDS:
        assert str(schema.field(name).type) == expected[FIELDS_BY_NAME[name].type], name


def test_no_derived_field_in_rows_or_text_files(tmp_path: Path) -> None:
    assert list(ROWS[0]) == list(INPUT_FIELDS)
    assert not DERIVED_FIELDS & set(ROWS[0])
    write_cohort(tmp_path / "c.csv", 50, 1)
    write_cohort(tmp_path / "c.jsonl", 50, 1)
    header = (tmp_path / "c.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == list(INPUT_FIELDS)
    for line in (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines():
        assert set(json.loads(line)) <= set(INPUT_FIELDS)


def test_text_conventions(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    write_cohort(path, 200, 2, missing=0.0, corrupt=0.0)
    cells = {
        cell
        for line in path.read_text(encoding="utf-8").splitlines()[1:]
        for cell in line.split(",")
    }
    assert {"true", "false", ""} <= cells
    assert not {"True", "False", "None", "nan"} & cells


def test_format_from_extension_or_argument(tmp_path: Path) -> None:
    write_cohort(tmp_path / "rows.txt", 20, 1, format="jsonl")
    assert (
        json.loads((tmp_path / "rows.txt").read_text().splitlines()[0])["case_id"] == "SYN-0000001"
    )
    with pytest.raises(ValueError, match="cannot tell the cohort format"):
        write_cohort(tmp_path / "rows.xlsx", 20, 1)
    assert list(tmp_path.iterdir()) == [tmp_path / "rows.txt"]


def test_empty_cohort_and_bad_arguments(tmp_path: Path) -> None:
    assert write_cohort(tmp_path / "empty.csv", 0, 1) == 0
    assert (tmp_path / "empty.csv").read_text() == ",".join(INPUT_FIELDS) + "\n"
    with pytest.raises(ValueError, match="missing"):
        list(generate_rows(5, 1, missing=1.5))
    with pytest.raises(ValueError, match="seed"):
        list(generate_rows(5, -1))
