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
        ("herniation_migration_grade", "none", "CON-008"),  # and on into the real rule base
    ]
    # two fields narrowed in the first pass (technique and region): the same chain
    both = build_facts(
        {"planned_procedure": "vertebral_augmentation", "lowest_level": "L1-L2"}, ruleset
    )
    assert [(i.field, i.constraint) for i in both.inferred] == [
        ("mis_technique", "CON-002"),
        ("region", "CON-003"),
        ("herniation_calcified", "CON-900"),
        ("herniation_migrated", "CON-901"),
        ("herniation_migration_grade", "CON-008"),
    ]
    untouched = build_facts({"planned_procedure": "discectomy"}, ruleset)
    assert "herniation_calcified" not in untouched.values


# --- issue 21: anatomy and contradictions (CON-003 .. CON-010) -------------------------------


@pytest.mark.parametrize(
    ("level", "region"),
    [
        ("C1-C2", "cervical"),
        ("C6-C7", "cervical"),
        ("T1-T2", "thoracic"),
        ("T11-T12", "thoracic"),
        ("L1-L2", "lumbar"),
        ("L5-S1", "lumbar"),
    ],
)
def test_the_region_is_inferred_from_the_level(level: str, region: str) -> None:
    facts = build_facts({"lowest_level": level}, RULESET)
    assert facts.values["region"] == region
    assert Inferred(field="region", value=region, constraint="CON-003") in facts.inferred


@pytest.mark.parametrize(
    ("level", "regions"),
    [("C7-T1", {"cervical", "thoracic"}), ("T12-L1", {"thoracic", "lumbar"})],
)
def test_a_junction_leaves_both_neighbouring_regions(level: str, regions: set[str]) -> None:
    facts = build_facts({"lowest_level": level}, RULESET)
    assert "region" not in facts.values
    assert facts.possible["region"] == regions
    for region in regions:  # either neighbour is consistent with the junction
        assert build_facts({"lowest_level": level, "region": region}, RULESET).values["region"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"region": "cervical", "lowest_level": "L4-L5"}, ["cervical", "lowest_level is L4-L5"]),
        ({"region": "lumbar", "lowest_level": "C5-C6"}, ["lumbar", "lowest_level is C5-C6"]),
        ({"region": "lumbar", "lowest_level": "C7-T1"}, ["lumbar", "lowest_level is C7-T1"]),
        ({"region": "cervical", "lowest_level": "T12-L1"}, ["cervical", "lowest_level is T12-L1"]),
        ({"region": "cervical", "mis_technique": "llif"}, ["llif", "region is cervical"]),
        (
            {"lowest_level": "C5-C6", "mis_technique": "mis_tlif"},
            ["mis_tlif", "region is cervical"],
        ),
        (
            {"sex": "male", "gestational_age_weeks": 20},
            ["sex is male", "gestational_age_weeks is 20"],
        ),
        ({"pregnant": False, "gestational_age_weeks": 8}, ["false", "gestational_age_weeks is 8"]),
        (
            {"sex": "female", "age_years": 70, "gestational_age_weeks": 12},
            ["age_years is 70", "gestational_age_weeks is 12"],
        ),
        (
            {"intradural_pathology": False, "intradural_ventral": True},
            ["false", "intradural_ventral is true"],
        ),
        (
            {"herniation_migrated": False, "herniation_migration_grade": "high"},
            ["high", "herniation_migrated is false"],
        ),
        (
            {"herniation_migrated": True, "herniation_migration_grade": "none"},
            ["none", "herniation_migrated is true"],
        ),
        (
            {"slic_neuro": "intact", "slic_cord_compression": True},
            ["true", "slic_neuro is intact"],
        ),
    ],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "",
)
def test_a_case_that_contradicts_itself_is_refused_naming_both_facts(
    values: dict[str, object], named: list[str]
) -> None:
    with pytest.raises(InconsistentInput) as info:
        build_facts(values, RULESET)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    for fact in named:
        assert fact in message


@pytest.mark.parametrize("backend", ["durable", "reference"])
def test_a_cervical_fusion_is_never_offered_tlif_or_llif_considerations(
    backend: str, evaluators: dict[str, Evaluator]
) -> None:
    screening = screen(
        {"planned_procedure": "fusion", "lowest_level": "C5-C6", "diagnosis": "spinal_stenosis"},
        evaluators[backend],
    )
    scopes = " ".join(c.scope for c in screening.result.conditional)
    assert 'mis_technique == "llif"' not in scopes
    assert 'mis_technique == "mis_tlif"' not in scopes
    for rule in ("ACC-008", "ACC-009", "CPX-001", "CPX-006", "BEN-001", "EVD-004"):
        assert screening.outcome_of(rule).status is RuleStatus.not_applicable, (rule, scopes)


def test_consistent_facts_are_inferred_not_refused() -> None:
    facts = build_facts(
        {
            "sex": "female",
            "age_years": 30,
            "gestational_age_weeks": 20,
            "intradural_ventral": True,
            "herniation_migrated": False,
            "slic_neuro": "intact",
        },
        RULESET,
    )
    assert facts.values["pregnant"] is True
    assert facts.values["intradural_pathology"] is True
    assert facts.values["herniation_migration_grade"] == "none"
    assert facts.values["slic_cord_compression"] is False
    migrated = build_facts({"herniation_migration_grade": "low"}, RULESET)
    assert migrated.values["herniation_migrated"] is True
    open_grade = build_facts({"herniation_migrated": True}, RULESET)
    assert open_grade.possible["herniation_migration_grade"] == {"low", "high"}
    no_lesion = build_facts({"intradural_pathology": False}, RULESET)
    assert no_lesion.values["intradural_ventral"] is False


def test_a_contradictory_case_file_is_an_input_error_on_the_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from engine.cli import app

    case = tmp_path / "case.yaml"
    case.write_text("case_id: C-1\nregion: cervical\nlowest_level: L4-L5\n")
    result = CliRunner().invoke(app, ["screen", str(case)])
    assert result.exit_code == 2
    assert "region" in result.output
    assert "lowest_level is L4-L5" in result.output
