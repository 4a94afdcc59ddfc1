"""Bad case input: exit 2 and one line naming the field, the value and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app

runner = CliRunner()


def screen_file(
    tmp_path: Path, content: bytes | str, name: str = "case.yaml"
) -> tuple[int, str, str]:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    result = runner.invoke(app, ["screen", str(path)])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            "case_id: T-1\nslip_pct: 30\n",
            "unknown field 'slip_pct'; did you mean 'slip_percent'?",
            id="typo",
        ),
        pytest.param(
            "case_id: T-1\nmeyerding_grade: 3\n",
            "meyerding_grade: is a derived attribute",
            id="derived",
        ),
        pytest.param(
            "case_id: T-1\nbmi: thirty\n",
            "bmi: 'thirty' is not a number; expected a number from 10 to 90 (kg/m²)",
            id="wrong-type",
        ),
        pytest.param(
            "case_id: T-1\nsva_mm: 512\n",
            "sva_mm: 512 is out of range; expected a number from -150 to 400 (mm)",
            id="out-of-range",
        ),
        pytest.param(
            "case_id: T-1\nage_years: 54.5\n",
            "age_years: 54.5 is not a whole number",
            id="fraction-for-integer",
        ),
        pytest.param(
            "case_id: T-1\nage_years: true\n",
            "age_years: true is not a whole number",
            id="boolean-for-integer",
        ),
        pytest.param(
            "case_id: T-1\ndiagnosis: Fractured\n",
            "diagnosis: 'Fractured' is not a valid value; expected one of",
            id="enum-case",  # 'Fracture' is read as fracture (issue 17): case is not a typo
        ),
        pytest.param(
            "case_id: T-1\npregnant: maybe\n",
            "pregnant: 'maybe' is not a boolean",
            id="bad-boolean",
        ),
        pytest.param(
            "case_id: T-1\nlevels: [1, 2]\n", "levels: expected a single value", id="nested"
        ),
        pytest.param("age_years: 40\n", "case_id: is required", id="no-case-id"),
        pytest.param(
            "case_id: 'S 0193'\n", "case_id: 'S 0193' is not a valid id", id="bad-case-id"
        ),
        pytest.param("", "case file is empty", id="empty"),
        pytest.param("   \n\n", "case file is empty", id="blank"),
        pytest.param(b"\x00\x01\x02binary", "case file is binary", id="binary"),
        pytest.param(b"\xff\xfe\xfa", "not UTF-8", id="not-utf8"),
        pytest.param("case_id: T-1\nbmi: [1\n", "malformed YAML", id="malformed-yaml"),
        pytest.param(
            "- just\n- a list\n",
            "expected a mapping of field names to values, got list",
            id="not-a-mapping",
        ),
        pytest.param(
            "case_id: T-1\nsex: male\npregnant: true\n",
            "pregnant: true is ruled out by CON-001",
            id="constraint",
        ),
    ],
)
def test_bad_case_input_exits_2_with_a_clear_line(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    code, out, err = screen_file(tmp_path, content)
    assert code == 2
    assert out == ""
    assert expected in err
    assert err.startswith("error: ")
    assert "Traceback" not in err


def test_constraint_error_names_both_facts(tmp_path: Path) -> None:
    _, _, err = screen_file(tmp_path, "case_id: T-1\nsex: male\npregnant: true\n")
    assert "sex is male" in err
    assert "pregnant: true" in err


def test_every_problem_of_a_case_is_reported(tmp_path: Path) -> None:
    _, _, err = screen_file(tmp_path, "case_id: T-1\nbmi: 5\nsva_mm: 900\nslip_pct: 2\n")
    assert len(err.strip().splitlines()) == 3


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    code, _, err = screen_file(tmp_path, '{"case_id": "T-1",\n "bmi": }', name="case.json")
    assert code == 2
    assert "malformed JSON at line 2" in err


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["screen", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read case file" in result.stderr


def test_set_value_is_validated_like_a_file() -> None:
    result = runner.invoke(app, ["screen", "--set", "age_years=54", "--set", "bmi=900"])
    assert result.exit_code == 2
    assert "bmi: 900 is out of range" in result.stderr


def test_set_without_equals_is_a_usage_error() -> None:
    result = runner.invoke(app, ["screen", "--set", "age_years"])
    assert result.exit_code == 2
    assert "--set expects FIELD=VALUE" in result.stderr


def test_empty_values_mean_unknown(tmp_path: Path) -> None:
    code, out, _ = screen_file(tmp_path, "case_id: T-1\nbmi:\nsex: ''\n")
    assert code == 0
    assert "Case T-1" in out


@pytest.mark.parametrize(
    "raw",
    [
        {"case_id": "A1", 7: None},  # a name that is not text, even with no value
        {"case_id": "A1", "levels": [1, 2]},
        {"case_id": "A1", "levels": {"n": 2}},
    ],
)
def test_rows_the_fast_path_cannot_take_are_still_refused(raw: dict[object, object]) -> None:
    """validate_case checks plain rows in one pass; anything else gets the full checks."""
    from engine.errors import CaseInputError
    from engine.io.cases import validate_case

    with pytest.raises(CaseInputError, match=r"must be text|nested structure"):
        validate_case(raw, "rows.jsonl", row=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("045", 45), ("007.5", 7.5), ("-3", -3), ("0x1F", 31), ("12.5", 12.5)],
)
def test_numbers_are_read_as_a_clinician_types_them(text: str, expected: float) -> None:
    """YAML 1.1 would read `045` as octal 37: a typed age or BMI is decimal (YAML 1.2 numbers)."""
    from engine.yamlsource import parse_yaml

    assert parse_yaml(f"age_years: {text}").data == {"age_years": expected}


def test_a_leading_zero_age_is_screened_as_typed(tmp_path: Path) -> None:
    """A woman of 056 is 56, past the pregnancy question (RAD-001 asks 10-55); octal would be 46."""
    import json

    from_set = runner.invoke(
        app, ["screen", "--set", "sex=female", "--set", "age_years=056", "--format", "json"]
    )
    assert from_set.exit_code == 0, from_set.stderr
    path = tmp_path / "case.yaml"
    path.write_text("case_id: T-1\nsex: female\nage_years: 056\n")
    from_file = runner.invoke(app, ["screen", str(path), "--format", "json"])
    assert from_file.exit_code == 0, from_file.stderr
    for output in (from_set.stdout, from_file.stdout):
        open_fields = {f for item in json.loads(output)["not_evaluable"] for f in item["missing"]}
        assert "pregnant" not in open_fields
    asked = runner.invoke(
        app, ["screen", "--set", "sex=female", "--set", "age_years=46", "--format", "json"]
    )
    asked_fields = {f for i in json.loads(asked.stdout)["not_evaluable"] for f in i["missing"]}
    assert "pregnant" in asked_fields


@pytest.mark.parametrize("text", ["1:30", "1_000", "1:30.5"])
def test_yaml_1_1_number_forms_are_not_numbers(tmp_path: Path, text: str) -> None:
    """Sexagesimal and underscored numbers stay text, so validation names them (not 90)."""
    code, _, stderr = screen_file(tmp_path, f"case_id: T-1\nbmi: {text}\n")
    assert code == 2
    assert "bmi" in stderr
