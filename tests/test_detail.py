"""Compact cohort output (issue 16 item 5): `batch --detail ids` (the default for JSONL) holds
ids, verdicts and questions, the rule texts once in OUT.rules.json; `--detail full` the whole
result per line. Both say the same about every case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from tests.conftest import ROOT, RULESET

runner = CliRunner()
COHORT = ROOT / "cases" / "cohort" / "synthetic-500.csv"


def batch(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["batch", *args, "--workers", "1", "--progress", "none"])
    return result.exit_code, result.stderr


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("detail")
    code, err = batch(
        str(COHORT), "--out", str(folder / "ids.jsonl"), "--summary", str(folder / "s.json")
    )
    assert code == 0, err
    code, err = batch(str(COHORT), "--out", str(folder / "full.jsonl"), "--detail", "full")
    assert code == 0, err
    return folder


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.timeout(300)
def test_compact_lines_are_under_a_kilobyte_a_case(outputs: Path) -> None:
    compact = (outputs / "ids.jsonl").read_bytes()
    full = (outputs / "full.jsonl").read_bytes()
    cases = compact.count(b"\n")
    assert cases == full.count(b"\n") == 495
    assert len(compact) / cases < 1024
    assert len(compact) * 10 < len(full)  # the texts are no longer repeated on every line


@pytest.mark.timeout(300)
def test_compact_and_full_say_the_same_about_every_case(outputs: Path) -> None:
    for ids, full in zip(lines(outputs / "ids.jsonl"), lines(outputs / "full.jsonl"), strict=True):
        assert list(ids) == [
            "case_id",
            "verdict",
            "fired",
            "conditional",
            "not_evaluable",
            "missing_fields",
            "possible_verdicts",
            "next_questions",
            "deciding_questions",
            "open_cautions",
        ]
        assert ids["case_id"] == full["case_id"]
        assert ids["verdict"] == full["verdict"]
        findings = full["findings"]
        assert isinstance(findings, list)
        assert sorted(ids["fired"]) == sorted(f["rule_id"] for f in findings)  # type: ignore[arg-type]
        open_rules = full["not_evaluable"]
        assert isinstance(open_rules, list)
        assert ids["not_evaluable"] == [n["rule_id"] for n in open_rules]
        assert ids["missing_fields"] == sorted({m for n in open_rules for m in n["missing"]})
        conditional = full["conditional"]
        assert isinstance(conditional, list)
        assert sorted(ids["conditional"]) == sorted(c["rule_id"] for c in conditional)  # type: ignore[arg-type]
        assert ids["possible_verdicts"] == full["possible_verdicts"]
        assert ids["next_questions"] == full["next_questions"]
        assert ids["deciding_questions"] == full["deciding_questions"]
        assert ids["open_cautions"] == [c["rule_id"] for c in full["open_cautions"]]


@pytest.mark.timeout(300)
def test_the_sidecar_holds_every_rule_text_once_with_the_stamp(outputs: Path) -> None:
    sidecar = json.loads((outputs / "ids.jsonl.rules.json").read_text())
    summary = json.loads((outputs / "s.json").read_text())
    assert sidecar["ruleset"] == summary["stamp"]["ruleset"] == RULESET.stamp.model_dump()
    assert set(sidecar["rules"]) == {r.id for r in RULESET.rules}
    full = lines(outputs / "full.jsonl")
    finding = next(f for r in full for f in r["findings"])  # type: ignore[attr-defined]
    text = sidecar["rules"][finding["rule_id"]]
    assert text["message"] == finding["message"]
    assert text["rationale"] == finding["rationale"]
    assert text["sources"] == finding["sources"]
    assert not (outputs / "full.jsonl.rules.json").exists()  # full lines carry their texts


@pytest.mark.timeout(300)
def test_a_sidecar_that_would_overwrite_another_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    code, err = batch(
        str(COHORT), "--out", str(out), "--summary", str(tmp_path / "o.jsonl.rules.json")
    )
    assert code == 2
    assert "same file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.timeout(300)
def test_stdout_gets_compact_lines_and_no_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"case_id": "A-1", "age_years": 40}) + "\n")
    result = runner.invoke(
        app, ["batch", str(source), "--out", "-", "--workers", "1", "--progress", "none"]
    )
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["verdict"] == "insufficient_data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_full_detail_is_for_jsonl_only(tmp_path: Path) -> None:
    code, err = batch(str(COHORT), "--out", str(tmp_path / "o.csv"), "--detail", "full")
    assert code == 2
    assert "--detail full applies to JSONL" in err
