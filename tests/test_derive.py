"""Derived scores: components win, a supplied total stands in, a disagreeing one is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.derive import InconsistentInput, build_facts
from engine.errors import RuleFileError
from engine.rules.loader import load_ruleset
from tests.conftest import RULES_DIR, RULESET

BURST = {
    "diagnosis": "fracture",
    "tlics_morphology": "burst",
    "tlics_plc": "injured",
    "tlics_neuro": "intact",
}


def test_tlics_is_summed_from_its_components() -> None:
    facts = build_facts(dict(BURST), RULESET)
    assert facts.derived["tlics_score_derived"] == 5
    assert facts.derived["tlics_band"] == "operative"


def test_a_supplied_total_stands_in_for_a_missing_component() -> None:
    values = {"diagnosis": "fracture", "tlics_morphology": "burst", "tlics_score": 4}
    assert build_facts(values, RULESET).derived["tlics_score_derived"] == 4


def test_a_supplied_total_that_disagrees_with_its_components_names_both() -> None:
    with pytest.raises(InconsistentInput) as info:
        build_facts({**BURST, "tlics_score": 3}, RULESET)
    message = str(info.value)
    assert "3 disagrees with its components" in message
    assert (
        "tlics_morphology burst (2) + tlics_plc injured (3) + tlics_neuro intact (0) = 5" in message
    )
    assert info.value.problem.field == "tlics_score"


def test_a_points_table_must_cover_every_value(tmp_path: Path) -> None:
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    score = next((copy / "derived").glob("DER-004-*.yaml"))
    score.write_text(score.read_text().replace("distraction: 4", "distraktion: 4"))
    with pytest.raises(RuleFileError, match="must cover exactly its values"):
        load_ruleset(copy)
