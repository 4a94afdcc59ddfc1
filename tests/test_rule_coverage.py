"""The rule base is complete: boundaries tested, categories covered, every field real."""

from __future__ import annotations

import pytest

from engine.dictionary import FIELDS_BY_NAME, FieldGroup
from engine.rules.condition import And, Compare, Cond, Const, Not, Or
from engine.rules.ruleset import Rule
from tests.conftest import RULESET


def thresholds(cond: Cond | None) -> set[tuple[str, float]]:
    """(input field, threshold) of every numeric comparison with a constant."""
    if cond is None:
        return set()
    if isinstance(cond, Compare) and isinstance(cond.rhs, Const):
        spec = FIELDS_BY_NAME[cond.field]
        value = cond.rhs.value
        if spec.is_numeric and spec.group is not FieldGroup.derived and not isinstance(value, bool):
            return {(cond.field, float(value))}  # type: ignore[arg-type]
        return set()
    if isinstance(cond, And | Or):
        return set().union(*(thresholds(item) for item in cond.items))
    if isinstance(cond, Not):
        return thresholds(cond.item)
    return set()


def golden_values(rule: Rule, field: str) -> set[float]:
    cases = rule.meta.cases
    found: set[float] = set()
    for kind in ("fires", "does_not_fire", "not_evaluable", "conditional"):
        for golden in getattr(cases, kind) if cases else []:
            value = golden.case.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                found.add(float(value))
    return found


CHECKS = [
    pytest.param(rule, field, threshold, id=f"{rule.id}:{field}:{threshold:g}")
    for rule in RULESET.rules
    for field, threshold in sorted(thresholds(rule.when) | thresholds(rule.scope))
]


@pytest.mark.parametrize(("rule", "field", "threshold"), CHECKS)
def test_every_numeric_threshold_has_golden_cases_on_both_sides(
    rule: Rule, field: str, threshold: float
) -> None:
    values = golden_values(rule, field)
    near = max(1.0, abs(threshold) * 0.05)
    assert threshold in values, f"no golden case at {field} = {threshold:g}"
    assert any(threshold < v <= threshold + near for v in values) or any(
        threshold - near <= v < threshold for v in values
    ), f"no golden case just beside {field} = {threshold:g}"


def test_every_category_has_rules_and_every_rule_has_sources() -> None:
    categories = {rule.meta.category.value for rule in RULESET.rules}
    assert categories == {
        "access",
        "complexity",
        "radiation",
        "cost",
        "evidence",
        "benefit",
        "red_flag",
        "indication",
    }
    assert all(rule.meta.sources for rule in RULESET.rules)
    assert all(derived.meta.sources for derived in RULESET.derived)
    assert all(c.meta.sources for c in RULESET.constraints)


def test_every_field_a_rule_reads_exists_in_the_case_model() -> None:
    read = {f for rule in RULESET.rules for f in rule.fields}
    read |= {f for derived in RULESET.derived for f in derived.inputs}
    assert read <= set(FIELDS_BY_NAME)
