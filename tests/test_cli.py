"""The clinician CLI: output contract, text report, site profiles, exit codes, subcommands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from engine.cli import app
from tests.conftest import ROOT

runner = CliRunner()
EXAMPLES = sorted((ROOT / "cases" / "examples").glob("*.yaml"))
CONTRACT_KEYS = [
    "case_id",
    "verdict",
    "summary",
    "findings",
    "conditional",
    "not_evaluable",
    "derived",
    "inferred",
    "assumed",
    "ruleset",
    "tool_version",
    "disclaimer",
    "possible_verdicts",
    "possible_verdicts_exact",
    "next_questions",
    "deciding_questions",
    "open_cautions",
    "schema_version",
]
NOT_EVALUABLE_KEYS = ["rule_id", "name", "severity", "missing", "can_change_verdict"]
FINDING_KEYS = [
    "rule_id",
    "name",
    "category",
    "severity",
    "message",
    "rationale",
    "sources",
    "evidence",
    "provisional",
    "values",
]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def result_schema() -> dict[str, object]:
    code, out, _ = invoke("schema", "result")
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_json_output_follows_the_contract(example: Path, result_schema: dict[str, object]) -> None:
    code, out, err = invoke("screen", str(example), "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    case = yaml.safe_load(example.read_text())
    jsonschema.validate(result, result_schema)
    assert list(result) == CONTRACT_KEYS
    for finding in result["findings"]:
        assert list(finding) == FINDING_KEYS
        assert finding["sources"], finding["rule_id"]
        traceable = set(case) | set(result["derived"]) | {i["field"] for i in result["inferred"]}
        assert set(finding["values"]) <= traceable, finding["rule_id"]
        assert all(case.get(k, v) == v for k, v in finding["values"].items())
    for item in result["conditional"]:
        assert list(item)[: len(FINDING_KEYS)] == FINDING_KEYS
        assert "scope" in item
    for item in result["not_evaluable"]:
        assert list(item) == NOT_EVALUABLE_KEYS
        assert item["missing"]
    changing = [i for i in result["not_evaluable"] if i["can_change_verdict"]]
    assert set(result["next_questions"]) == {m for i in changing for m in i["missing"]}
    assert result["possible_verdicts"], "a settled case still has its own verdict"
    if result["verdict"] in ("worth_discussing", "discuss_with_caution"):
        # only open cautions can be left, and they can only add a caution
        assert set(result["possible_verdicts"]) <= {"worth_discussing", "discuss_with_caution"}
        assert result["deciding_questions"] == []
    deciding = result["deciding_questions"]
    assert result["next_questions"][: len(deciding)] == deciding  # deciding ones first
    cautions = {i["rule_id"] for i in result["not_evaluable"] if i["severity"] == "caution"}
    assert {c["rule_id"] for c in result["open_cautions"]} == cautions
    assert result["schema_version"] == "1.1"
    assert set(result["ruleset"]) == {"name", "version", "sha256"}
    assert "never" in result["disclaimer"] or "not" in result["disclaimer"]


def test_values_are_the_values_the_rule_read() -> None:
    code, out, _ = invoke(
        "screen",
        "--format",
        "json",
        "--set",
        "mis_technique=llif",
        "--set",
        "lowest_level=L5-S1",
        "--set",
        "bmi=27",
    )
    assert code == 0
    finding = next(f for f in json.loads(out)["findings"] if f["rule_id"] == "ACC-008")
    assert finding["values"] == {"lowest_level": "L5-S1", "mis_technique": "llif"}


def test_output_is_byte_identical_across_runs() -> None:
    first = invoke("screen", str(EXAMPLES[0]), "--format", "json")
    second = invoke("screen", str(EXAMPLES[0]), "--format", "json")
    assert first == second


def test_text_report_reads_in_order_verdict_findings_open_questions_disclaimer() -> None:
    code, out, _ = invoke(
        "screen", str(ROOT / "cases/examples/high-grade-spondylolisthesis-l5-s1.yaml")
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("Verdict: MIS NOT FAVOURED (not_favoured)")
    positions = [
        out.index(t)
        for t in (
            "Verdict:",
            "Findings",
            "ACC-007",
            "Slip (%): 62",
            "Questions that decide the verdict",
            "cautions not yet excluded",
            "Screening aid",
        )
    ]
    assert positions == sorted(positions)
    assert "Meyerding grade: 3" in out or "Meyerding grade: 4" in out


def test_open_questions_name_the_missing_fields() -> None:
    code, out, _ = invoke("screen", str(ROOT / "cases/examples/adult-deformity-sva-unknown.yaml"))
    assert code == 0
    assert "INSUFFICIENT DATA" in out
    assert "Sagittal vertical axis (SVA, mm): major" in out
    code, out, _ = invoke(
        "screen", str(ROOT / "cases/examples/adult-deformity-sva-unknown.yaml"), "--details"
    )
    assert "sva_mm: major ACC-001, ACC-003" in out


def test_stdin_case_is_read() -> None:
    result = runner.invoke(
        app,
        ["screen", "-", "--format", "json"],
        input='{"case_id": "S-1", "cauda_equina_syndrome": true}',
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "urgent_review"


def test_set_builds_a_case_without_a_file() -> None:
    code, out, _ = invoke(
        "screen",
        "--format",
        "json",
        "--set",
        "age_years=54",
        "--set",
        "diagnosis=disc_herniation",
        "--set",
        "sex=male",
    )
    assert code == 0
    result = json.loads(out)
    assert result["case_id"] == "cli-case"
    assert {"field": "pregnant", "value": False, "constraint": "CON-001"} in result["inferred"]


def test_set_overrides_a_case_file() -> None:
    example = ROOT / "cases/examples/cauda-equina-l5-s1.yaml"
    code, out, _ = invoke(
        "screen", str(example), "--format", "json", "--set", "cauda_equina_syndrome=false"
    )
    assert code == 0
    assert "RED-001" not in [f["rule_id"] for f in json.loads(out)["findings"]]


def test_site_profile_fills_only_missing_setting_fields(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("mis_equipment_available: false\nnavigation_available: true\n")
    code, out, _ = invoke(
        "screen",
        "--format",
        "json",
        "--site",
        str(site),
        "--set",
        "navigation_available=false",
        "--set",
        "diagnosis=disc_herniation",
    )
    assert code == 0
    result = json.loads(out)
    assert result["assumed"] == {"mis_equipment_available": False}
    assert "EQP-001" in [f["rule_id"] for f in result["findings"]]


def test_site_profile_refuses_patient_fields(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("age_years: 50\n")
    code, _, err = invoke("screen", "--site", str(site), "--set", "bmi=25")
    assert code == 2
    assert "'age_years' is not a setting field" in err


@pytest.mark.parametrize(
    ("fail_on", "expected_code"),
    [("urgent_review", 1), ("not_favoured", 1), ("insufficient_data", 1), ("worth_discussing", 1)],
)
def test_fail_on_exits_1_at_or_above_the_verdict(fail_on: str, expected_code: int) -> None:
    code, out, _ = invoke("screen", "--set", "cauda_equina_syndrome=true", "--fail-on", fail_on)
    assert code == expected_code
    assert "URGENT REVIEW" in out


def test_fail_on_below_the_verdict_exits_0() -> None:
    code, _, _ = invoke(
        "screen", str(ROOT / "cases/examples/stenosis-l4-l5.yaml"), "--fail-on", "not_favoured"
    )
    assert code == 0


def test_brief_format_prints_one_line_per_case() -> None:
    code, out, _ = invoke("screen", *map(str, EXAMPLES), "--format", "brief")
    assert code == 0
    assert len(out.strip().splitlines()) == len(EXAMPLES)


def test_no_case_is_a_usage_error() -> None:
    code, _, err = invoke("screen")
    assert code == 2
    assert "give a case file" in err


def test_unknown_option_is_a_usage_error() -> None:
    code, _, _ = invoke("screen", "--frobnicate")
    assert code == 2


def test_rules_list_json_lists_every_rule(ruleset: object) -> None:
    code, out, _ = invoke("rules", "list", "--format", "json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)] == [r.id for r in ruleset.rules]  # type: ignore[attr-defined]


def test_rules_show_prints_the_condition_and_sources() -> None:
    code, out, _ = invoke("rules", "show", "ACC-008")
    assert code == 0
    assert 'scope: mis_technique == "llif"' in out
    assert "source:" in out


def test_rules_show_unknown_id_exits_2() -> None:
    code, _, err = invoke("rules", "show", "XYZ-999")
    assert code == 2
    assert "no rule with id XYZ-999" in err


def test_rules_test_passes_and_reports_json() -> None:
    code, out, _ = invoke("rules", "test", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["failed"] == 0
    assert report["passed"] == len(report["results"]) > 0


def test_rules_test_exits_1_on_a_mismatch(tmp_path: Path) -> None:
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    path = rules / "access" / "ACC-008-llif-blocked-at-l5-s1.yaml"
    path.write_text(
        path.read_text().replace(
            "when: 'lowest_level == \"L5-S1\"'", "when: 'lowest_level == \"L4-L5\"'"
        )
    )
    code, out, _ = invoke("rules", "test", str(rules))
    assert code == 1
    assert "FAIL ACC-008::llif-l5-s1 [durable] expected fired, got not_fired" in out


def test_schema_case_lists_every_input_field() -> None:
    code, out, _ = invoke("schema", "case")
    assert code == 0
    schema = json.loads(out)
    assert schema["required"] == ["case_id"]
    assert "slip_percent" in schema["properties"]
    assert "meyerding_grade" not in schema["properties"]


def test_reference_engine_gives_the_same_result() -> None:
    example = str(ROOT / "cases/examples/disc-herniation-l4-l5.yaml")
    assert invoke("screen", example, "--format", "json") == invoke(
        "screen", example, "--format", "json", "--engine", "reference"
    )


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "miss-screen")],
        [sys.executable, str(ROOT / "cli.py")],
    ],
    ids=["entry-point", "python-cli-py"],
)
def test_real_process_screens_and_maps_errors(command: list[str], tmp_path: Path) -> None:
    ok = subprocess.run(
        [*command, "screen", str(EXAMPLES[0]), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["disclaimer"]
    bad = subprocess.run(
        [*command, "screen", "--set", "slip_pct=3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert bad.returncode == 2
    assert "did you mean 'slip_percent'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_internal_error_exits_2_with_a_report_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.cli as cli

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(cli, "load_ruleset", boom)
    code, _, err = invoke("rules", "list")
    assert code == 2
    assert "internal error, please report" in err


def test_conditional_scopes_read_as_plain_words() -> None:
    from engine.report.text import scope_words

    assert scope_words('mis_technique == "llif"') == "if LLIF is considered"
    assert scope_words(
        'mis_technique in ["tubular_decompression", "endoscopic_decompression"]'
    ) == ("if tubular decompression or endoscopic decompression is considered")
    assert scope_words('mis_technique not in ["endoscopic_discectomy"]') == (
        "if a technique other than endoscopic discectomy is considered"
    )
    assert scope_words("bmi > 30") == "if bmi > 30"


def test_a_not_favoured_verdict_says_which_red_flags_are_still_open() -> None:
    args = [
        "screen",
        "--set",
        "mis_technique=llif",
        "--set",
        "lowest_level=L5-S1",
        "--set",
        "planned_procedure=fusion",
        "--set",
        "diagnosis=degenerative_disc_disease",
    ]
    code, out, _ = invoke(*args)
    assert code == 0
    assert "Red flags not yet excluded: Cauda equina syndrome" in out
    code, out, _ = invoke(
        *args,
        "--set",
        "cauda_equina_syndrome=false",
        "--set",
        "progressive_neuro_deficit=false",
        "--format",
        "brief",
    )
    assert "red flags not yet excluded" not in out
    assert "not_favoured" in out
