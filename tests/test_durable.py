"""durable-rules limits met at load time: match stack, JSON numbers, handle reuse, stamp."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import durable_rules_engine as dre
import pytest

from engine.derive import build_facts
from engine.evaluate.durable import (
    STACK_BUDGET,
    CompiledRule,
    DurableEvaluator,
    EngineError,
    check_limits,
    compile_rules,
    fnv1a_32,
    pack,
    ruleset_json,
    stack_cost,
    to_durable_json,
)
from engine.evaluate.reference import ReferenceEvaluator
from engine.rules.loader import load_ruleset
from tests.conftest import RULES_DIR, RULESET

RULE_TEMPLATE = """\
id: ACC-{n:03d}
name: bmi-over-{n}
version: 1.0.0
category: access
severity: info
when: 'bmi > {threshold} and (diagnosis in ["fracture", "tumor"] or levels >= 2)'
message: Synthetic rule {n}.
rationale: Synthetic rule for the durable-rules stack limit test.
evidence: M
provisional: true
sources: [{{citation: "synthetic"}}]
cases:
  fires: [{{name: high, case: {{bmi: 89, levels: 3}}}}]
  does_not_fire: [{{name: low, case: {{bmi: 11, levels: 3}}}}]
  not_evaluable: [{{name: unknown, case: {{levels: 3}}, missing: [bmi]}}]
"""


@pytest.fixture(scope="module")
def wide_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 rules that all fire together for a heavy case: far beyond 64 simultaneous matches."""
    root = tmp_path_factory.mktemp("wide") / "rules"
    root.mkdir()
    for name in ("ruleset.yaml", "policy.yaml"):
        shutil.copy(RULES_DIR / name, root / name)
    (root / "access").mkdir()
    for n in range(1, 121):
        text = RULE_TEMPLATE.format(n=n, threshold=10 + n * 0.5)
        (root / "access" / f"ACC-{n:03d}-bmi-over-{n}.yaml").write_text(text)
    return root


def test_one_ruleset_for_everything_would_hit_error_303(wide_rules: Path) -> None:
    """The limit is real: without packing, durable-rules refuses the case."""
    ruleset = load_ruleset(wide_rules)
    everything = ruleset_json(compile_rules(ruleset))
    handle = dre.create_ruleset("wide-unpacked", json.dumps(everything))
    with pytest.raises(Exception, match="303"):
        dre.assert_fact(
            handle,
            json.dumps(
                {
                    "kind": "case",
                    "sid": "0",
                    "id": 1,
                    "bmi": 89.0,
                    "levels": 3,
                    "diagnosis": "fracture",
                }
            ),
        )


def test_packed_rulesets_screen_the_heavy_case(wide_rules: Path) -> None:
    ruleset = load_ruleset(wide_rules)
    groups = pack(compile_rules(ruleset))
    assert len(groups) > 1
    assert all(2 + sum(r.cost for r in g) <= STACK_BUDGET for g in groups)
    durable, reference = DurableEvaluator(ruleset), ReferenceEvaluator(ruleset)
    facts = build_facts({"bmi": 89.0, "levels": 3, "diagnosis": "fracture"}, ruleset)
    outcomes = durable.evaluate(facts)
    assert outcomes == reference.evaluate(facts)
    assert all(o.status == "fired" for o in outcomes)


def test_stack_cost_counts_or_branches_once_per_path() -> None:
    leaf = {"a": 1}
    assert stack_cost(leaf) == (1, 1)
    assert stack_cost({"$and": [leaf, {"b": 2}]}) == (2, 1)
    two_way = {"$or": [{"$gt": {"x": 1}}, {"$lt": {"y": 1}}]}
    assert stack_cost(two_way) == (4, 2)
    assert stack_cost({"$and": [two_way, two_way]}) == (4 + 8, 4)
    same_field = {"$or": [{"d": "a"}, {"d": "b"}, {"d": "c"}]}
    assert stack_cost(same_field) == (2, 1)


def test_bundled_rules_fit_the_stack_budget() -> None:
    groups = pack(compile_rules(RULESET))
    assert all(2 + sum(r.cost for r in g) <= STACK_BUDGET for g in groups)
    assert sorted(r.index for g in groups for r in g) == list(range(len(RULESET.rules)))


def test_floats_are_written_so_durable_rules_can_read_them() -> None:
    assert to_durable_json({"x": 1e-05, "y": 2.5, "z": True, "s": "L5-S1"}) == (
        '{"x": 1.0e-05, "y": 2.5, "z": true, "s": "L5-S1"}'
    )
    evaluator = DurableEvaluator(RULESET)
    facts = build_facts({"slip_percent": 1e-05, "diagnosis": "spondylolisthesis"}, RULESET)
    assert evaluator.evaluate(facts) == ReferenceEvaluator(RULESET).evaluate(facts)


def test_fnv_hash_matches_durable_rules() -> None:
    """Reference values of 32-bit FNV-1a, the hash durable-rules gives attribute names."""
    assert fnv1a_32("") == 0x811C9DC5
    assert fnv1a_32("a") == 0xE40C292C
    assert fnv1a_32("foobar") == 0xBF9CF968


def test_colliding_attribute_names_are_refused() -> None:
    # "costarring" and "liquid" are a known FNV-1a 32-bit collision
    assert fnv1a_32("costarring") == fnv1a_32("liquid")
    with pytest.raises(EngineError, match="share a 32-bit hash"):
        check_limits([], ["costarring", "liquid"])


def test_too_many_attributes_are_refused() -> None:
    with pytest.raises(EngineError, match="attributes per fact"):
        check_limits([], [f"field_{i}" for i in range(300)])


def test_too_many_nex_tests_are_refused() -> None:
    many = [
        CompiledRule(i, {"s1": True, "s0": False, "w1": {"$nex": {f"f{i}": 1}}, "w0": False})
        for i in range(130)
    ]
    with pytest.raises(EngineError, match="nex"):
        check_limits([many], [])


def test_handles_are_built_once_per_process() -> None:
    assert DurableEvaluator(RULESET).handles == DurableEvaluator(RULESET).handles


def test_every_pattern_carries_the_case_guard() -> None:
    for group in pack(compile_rules(RULESET)):
        for rule in ruleset_json(group).values():
            assert rule["all"][0]["m"]["$and"][0] == {"kind": "case"}


def test_stamp_is_stable_and_changes_with_a_threshold(tmp_path: Path) -> None:
    assert load_ruleset(RULES_DIR).sha256 == RULESET.sha256
    copy = tmp_path / "rules"
    shutil.copytree(RULES_DIR, copy)
    rule = next((copy / "radiation").glob("RAD-005-*.yaml"))
    rule.write_text(rule.read_text().replace("bmi >= 40", "bmi >= 41"))
    assert load_ruleset(copy).sha256 != RULESET.sha256
