"""The example cases give the verdicts and findings worked out by hand in cases/expected.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.evaluate.base import Evaluator
from engine.io.cases import read_case
from engine.models import Verdict
from engine.screen import screen_values
from tests.conftest import ROOT, RULESET

EXPECTED = yaml.safe_load((ROOT / "cases" / "expected.yaml").read_text())
EXAMPLES = sorted((ROOT / "cases" / "examples").glob("*.yaml"))


def test_every_example_has_an_expectation() -> None:
    assert sorted(EXPECTED) == [p.name for p in EXAMPLES]


def test_examples_cover_every_verdict() -> None:
    assert {e["verdict"] for e in EXPECTED.values()} == set(Verdict)


@pytest.mark.parametrize("backend", ["durable", "reference"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_verdict_and_findings(
    example: Path, backend: str, evaluators: dict[str, Evaluator]
) -> None:
    case_id, values = read_case(str(example))
    result = screen_values(case_id, values, RULESET, evaluators[backend]).result
    expected = EXPECTED[example.name]
    assert result.verdict == expected["verdict"]
    assert sorted(f.rule_id for f in result.findings) == sorted(expected["fires"])
    assert [c.rule_id for c in result.open_cautions] == expected.get("open_cautions", [])


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_insufficient_data_names_what_is_missing(
    example: Path, evaluators: dict[str, Evaluator]
) -> None:
    case_id, values = read_case(str(example))
    result = screen_values(case_id, values, RULESET, evaluators["durable"]).result
    if result.verdict is Verdict.insufficient_data:
        assert any(n.missing and n.can_change_verdict for n in result.not_evaluable)
        assert result.next_questions
        assert len(result.possible_verdicts) > 1  # the open rules can still give either
        assert Verdict.insufficient_data not in result.possible_verdicts
