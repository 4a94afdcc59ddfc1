"""Known facts narrow unknown ones: nobody is asked what cannot apply to them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.derive import InconsistentInput, build_facts
from engine.evaluate.base import Evaluator
from engine.models import Inferred, RuleStatus
from engine.rules.loader import load_ruleset
from engine.screen import screen_values
from tests.conftest import RULES_DIR, RULESET


def screen(values: dict[str, object], evaluator: Evaluator):  # type: ignore[no-untyped-def]
    return screen_values("T-1", values, RULESET, evaluator)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["durable", "reference"])
@pytest.mark.parametrize(
    "values",
    [{"sex": "male", "age_years": 30}, {"sex": "female", "age_years": 70}, {"age_years": 8}],
    ids=["man", "woman-70", "child-8"],
)
def test_pregnancy_is_not_asked_where_it_cannot_apply(
    values: dict[str, object], backend: str, evaluators: dict[str, Evaluator]
) -> None:
    screening = screen(values, evaluators[backend])
    assert (
        Inferred(field="pregnant", value=False, constraint="CON-001") in screening.result.inferred
    )
    for outcome in screening.outcomes:
        assert "pregnant" not in outcome.missing


def test_pregnancy_is_asked_of_a_woman_of_reproductive_age(
    evaluators: dict[str, Evaluator],
) -> None:
    screening = screen(
        {"sex": "female", "age_years": 30, "planned_procedure": "discectomy"}, evaluators["durable"]
    )
    rad001 = screening.outcome_of("RAD-001")
    assert rad001.status is RuleStatus.not_evaluable
    assert rad001.missing == ("pregnant",)


@pytest.mark.parametrize("backend", ["durable", "reference"])
def test_a_discectomy_is_never_offered_llif_considerations(
    backend: str, evaluators: dict[str, Evaluator]
) -> None:
    screening = screen(
        {"planned_procedure": "discectomy", "lowest_level": "L5-S1"}, evaluators[backend]
    )
    scopes = [c.scope for c in screening.result.conditional]
    assert scopes, "endoscopic and tubular considerations stay conditional"
    assert not any("llif" in s or "mis_tlif" in s for s in scopes)
    assert screening.outcome_of("ACC-008").status is RuleStatus.not_applicable


def test_narrowed_field_leaves_the_others_open() -> None:
    facts = build_facts({"planned_procedure": "discectomy"}, RULESET)
    assert facts.possible["mis_technique"] == {
        "tubular_discectomy",
        "endoscopic_discectomy",
        "other",
    }
    assert "mis_technique" not in facts.values


def test_a_single_remaining_value_is_inferred() -> None:
    facts = build_facts({"planned_procedure": "vertebral_augmentation"}, RULESET)
    assert facts.values["mis_technique"] == "vertebral_augmentation"
    assert facts.inferred == (
        Inferred(field="mis_technique", value="vertebral_augmentation", constraint="CON-002"),
    )


def test_a_supplied_value_the_constraint_rules_out_names_both_facts() -> None:
    with pytest.raises(InconsistentInput) as info:
        build_facts({"planned_procedure": "discectomy", "mis_technique": "llif"}, RULESET)
    message = str(info.value)
    assert "llif is ruled out by CON-002" in message
    assert "planned_procedure is discectomy" in message


def test_constraints_chain_whatever_their_order_in_the_file(tmp_path: Path) -> None:
    """A narrowing whose condition reads a field another constraint infers is applied once that
    field is known, however late in the file: here a three-step chain written back to front."""
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    path = copy / "constraints.yaml"
    chain = """constraints:
  - id: CON-901
    name: test-chain-second
    field: herniation_migrated
    narrowings:
      - {when: 'herniation_calcified == false', allowed: [false]}
    rationale: A test constraint that reads what CON-900 infers.
    evidence: V
    sources:
      - citation: "test only"
  - id: CON-900
    name: test-chain-first
    field: herniation_calcified
    narrowings:
      - {when: 'mis_technique == "vertebral_augmentation"', allowed: [false]}
    rationale: A test constraint that reads what CON-002 infers.
    evidence: V
    sources:
      - citation: "test only"
"""
    path.write_text(path.read_text().replace("constraints:\n", chain, 1))
    ruleset = load_ruleset(copy)
    facts = build_facts({"planned_procedure": "vertebral_augmentation"}, ruleset)
    assert [(i.field, i.value, i.constraint) for i in facts.inferred] == [
        ("mis_technique", "vertebral_augmentation", "CON-002"),
        ("herniation_calcified", False, "CON-900"),
        ("herniation_migrated", False, "CON-901"),
    ]
    untouched = build_facts({"planned_procedure": "discectomy"}, ruleset)
    assert "herniation_calcified" not in untouched.values
