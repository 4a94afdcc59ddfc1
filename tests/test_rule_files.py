"""Bad rule files: each is refused at load time with file:line and a clear reason; nothing runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import RuleFileError
from engine.rules.loader import load_ruleset
from tests.conftest import RULES_DIR

runner = CliRunner()
RULE = RULES_DIR / "access" / "ACC-008-llif-blocked-at-l5-s1.yaml"
ASKS = next(line for line in RULE.read_text().splitlines() if line.startswith("asks_because:"))


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target)
    return target


def edit(rules_dir: Path, old: str, new: str, path: Path = RULE) -> Path:
    target = rules_dir / path.relative_to(RULES_DIR)
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    return target


def check(rules_dir: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["rules", "check", str(rules_dir)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            'when: \'__import__("os").system("touch MARKER")\'',
            "function calls are not allowed",
            id="import",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'open(\"/etc/passwd\") == 1'",
            "a call to open() is not allowed",
            id="call",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'lowest_level.__class__ == 1'",
            "attribute access is not allowed",
            id="attribute",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'lowest_levl == \"L5-S1\"'",
            "unknown field 'lowest_levl'; did you mean 'lowest_level'?",
            id="unknown-field",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'lowest_level == 5'",
            "is an enum; 5 is not one of its values",
            id="enum-vs-number",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'lowest_level == \"L5-S2\"'",
            "'L5-S2' is not a value of 'lowest_level'",
            id="enum-value",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'bmi > \"30\"'",
            "'30' is not a number",
            id="number-vs-string",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'bmi / 2 > 20'",
            "division is not allowed",
            id="division",
        ),
        pytest.param(
            "when: 'lowest_level == \"L5-S1\"'",
            "when: 'lowest_level =='",
            "cannot parse condition",
            id="syntax",
        ),
        pytest.param("severity: major", "severity: huge", "severity", id="bad-severity"),
        pytest.param(
            "sources:\n", "sauces:\n", "unknown key; did you mean 'sources'?", id="misspelt-key"
        ),
        pytest.param("id: ACC-008", "id: ACC-007", "duplicate id ACC-007", id="duplicate-id"),
        pytest.param(ASKS, 'asks_because: "short"', "asks_because", id="asks-too-short"),
        pytest.param(ASKS, "asks_because: " + "x" * 301, "asks_because", id="asks-too-long"),
        pytest.param(
            "asks_because:", "asks_becuase:", "did you mean 'asks_because'?", id="asks-misspelt"
        ),
    ],
)
def test_bad_rule_file_is_refused_with_file_and_line(
    rules_copy: Path, old: str, new: str, expected: str
) -> None:
    edit(rules_copy, old, new.replace("MARKER", str(rules_copy / "pwned")))
    code, err = check(rules_copy)
    assert code == 2
    assert expected in err
    assert "ACC-008-llif-blocked-at-l5-s1.yaml:" in err
    assert "Traceback" not in err
    assert not (rules_copy / "pwned").exists()


def test_error_names_the_line_of_the_condition(rules_copy: Path) -> None:
    path = edit(rules_copy, "when: 'lowest_level == \"L5-S1\"'", "when: 'sva_cm > 95'")
    line = next(
        i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("when:")
    )
    _, err = check(rules_copy)
    where = f"ACC-008-llif-blocked-at-l5-s1.yaml:{line}: when: "
    assert where + "unknown field 'sva_cm'; did you mean 'sva_mm'?" in err


def test_rule_without_sources_is_refused(rules_copy: Path) -> None:
    path = rules_copy / RULE.relative_to(RULES_DIR)
    text = path.read_text()
    start, end = text.index("sources:"), text.index("cases:")
    path.write_text(text[:start] + "sources: []\n" + text[end:])
    code, err = check(rules_copy)
    assert code == 2
    assert "sources" in err


def test_rule_without_golden_cases_is_refused(rules_copy: Path) -> None:
    path = rules_copy / RULE.relative_to(RULES_DIR)
    text = path.read_text()
    path.write_text(text[: text.index("cases:")])
    code, err = check(rules_copy)
    assert code == 2
    assert "needs at least one golden case under cases.fires" in err


def test_golden_case_with_invalid_values_is_refused(rules_copy: Path) -> None:
    edit(
        rules_copy,
        "{name: llif-l5-s1, case: {mis_technique: llif, lowest_level: L5-S1}}",
        "{name: llif-l5-s1, case: {mis_technique: lif, lowest_level: L5-S1}}",
    )
    code, err = check(rules_copy)
    assert code == 2
    assert "mis_technique: 'lif' is not a valid value" in err


def test_policy_with_a_renamed_verdict_is_refused(rules_copy: Path) -> None:
    policy = rules_copy / "policy.yaml"
    policy.write_text(policy.read_text().replace("verdict: not_favoured", "verdict: discouraged"))
    code, err = check(rules_copy)
    assert code == 2
    assert "policy.yaml" in err


def test_yaml_tags_that_build_objects_are_refused(rules_copy: Path) -> None:
    payload = f"!!python/object/apply:os.system ['touch {rules_copy / 'pwned'}']"
    edit(rules_copy, "severity: major", f"severity: {payload}")
    code, err = check(rules_copy)
    assert code == 2
    assert not (rules_copy / "pwned").exists()
    assert "malformed YAML" in err


def test_binary_and_empty_rule_files_are_refused(rules_copy: Path) -> None:
    (rules_copy / "access" / "ACC-900-empty.yaml").write_text("")
    (rules_copy / "access" / "ACC-901-binary.yaml").write_bytes(b"\x00\x01")
    with pytest.raises(RuleFileError) as info:
        load_ruleset(rules_copy)
    text = str(info.value)
    assert "ACC-900-empty.yaml: file is empty" in text
    assert "ACC-901-binary.yaml: file is binary" in text


def test_missing_rules_directory_exits_2(tmp_path: Path) -> None:
    code, err = check(tmp_path / "nowhere")
    assert code == 2
    assert "rules directory not found" in err


def test_the_bundled_rules_check_clean() -> None:
    result = runner.invoke(app, ["rules", "check"])
    assert result.exit_code == 0, result.stderr
    assert "OK (sha256" in result.stdout
