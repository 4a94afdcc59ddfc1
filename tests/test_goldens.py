"""Every golden case of every rule and derived attribute, on both evaluators."""

from __future__ import annotations

import pytest

from engine.evaluate.base import Evaluator
from engine.goldens import GoldenCase, golden_cases, run_golden
from engine.models import Category
from tests.conftest import RULESET

GOLDEN_CASES = golden_cases(RULESET)


@pytest.mark.parametrize("backend", ["durable", "reference"])
@pytest.mark.parametrize("golden", GOLDEN_CASES, ids=lambda g: f"{g.rule_id}::{g.kind}::{g.name}")
def test_golden_case(golden: GoldenCase, backend: str, evaluators: dict[str, Evaluator]) -> None:
    result = run_golden(golden, RULESET, backend, evaluators[backend])
    assert result.ok, f"expected {result.expected}, got {result.actual} {result.details}"


@pytest.mark.parametrize("rule", RULESET.rules, ids=lambda r: r.id)
def test_every_rule_has_each_kind_of_golden_case(rule: object) -> None:
    kinds = {g.kind for g in GOLDEN_CASES if g.rule_id == rule.id}  # type: ignore[attr-defined]
    assert {"fires", "does_not_fire"} <= kinds
    # only a bare scope (`when: 'true'`, e.g. RAD-007) can never be not evaluable
    if rule.meta.when.strip() != "true":  # type: ignore[attr-defined]
        assert "not_evaluable" in kinds


@pytest.mark.parametrize("derived", RULESET.derived, ids=lambda d: d.meta.id)
def test_every_derived_attribute_has_a_known_and_an_unknown_case(derived: object) -> None:
    cases = derived.meta.cases  # type: ignore[attr-defined]
    assert any(c.expected is None for c in cases)
    assert any(c.expected is not None for c in cases)


def test_rules_have_sources_and_every_category_is_covered() -> None:
    assert all(rule.meta.sources for rule in RULESET.rules)
    assert {rule.meta.category for rule in RULESET.rules} == set(Category)
