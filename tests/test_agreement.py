"""The durable-rules backend and the reference evaluator agree on generated cases."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine.evaluate.durable as durable_module
from engine.derive import InconsistentInput, build_facts, missing_inputs
from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.evaluate.base import Evaluator
from engine.evaluate.durable import DurableEvaluator
from engine.models import RuleStatus
from engine.rules.condition import And, Compare, Cond, Const, Member, Not, Or
from engine.rules.logic import compile_kleene, unknown_fields
from engine.screen import screen_values
from tests.conftest import EVALUATORS, RULESET


def _thresholds(cond: Cond | None, found: dict[str, set[float]]) -> None:
    if cond is None:
        return
    if isinstance(cond, Compare) and isinstance(cond.rhs, Const):
        if isinstance(cond.rhs.value, int | float) and not isinstance(cond.rhs.value, bool):
            found.setdefault(cond.field, set()).add(float(cond.rhs.value))
    elif isinstance(cond, And | Or):
        for item in cond.items:
            _thresholds(item, found)
    elif isinstance(cond, Not):
        _thresholds(cond.item, found)
    elif isinstance(cond, Member):
        return


THRESHOLDS: dict[str, set[float]] = {}
for _rule in RULESET.rules:
    _thresholds(_rule.scope, THRESHOLDS)
    _thresholds(_rule.when, THRESHOLDS)
for _derived in RULESET.derived:
    for _cond, _ in _derived.bands:
        _thresholds(_cond, THRESHOLDS)
    _thresholds(_derived.condition, THRESHOLDS)


def _value_strategy(name: str) -> st.SearchStrategy[Any]:
    spec = FIELDS_BY_NAME[name]
    if spec.type is FieldType.boolean:
        return st.booleans()
    if spec.type is FieldType.enum:
        return st.sampled_from(spec.values)
    low, high = spec.minimum, spec.maximum
    assert low is not None
    assert high is not None
    near = sorted(
        {
            t + d
            for t in THRESHOLDS.get(name, set())
            for d in (-1, -0.5, 0, 0.5, 1)
            if low <= t + d <= high
        }
    )
    if spec.type is FieldType.integer:
        base: st.SearchStrategy[Any] = st.integers(int(low), int(high))
        edges = [int(v) for v in near if float(v).is_integer()]
    else:
        base = st.floats(low, high, allow_nan=False, allow_infinity=False)
        edges = near
    return st.one_of(base, st.sampled_from(edges)) if edges else base


READ = sorted(
    f
    for f in INPUT_FIELDS
    if f != "case_id"
    and (
        f in RULESET.fields_read
        or any(f in d.inputs for d in RULESET.derived)
        or any(f in c.meta.field or f in str(c.narrowings) for c in RULESET.constraints)
    )
)
CASES = st.fixed_dictionaries({}, optional={name: _value_strategy(name) for name in READ})


def screen_both(values: dict[str, Any], evaluators: dict[str, Evaluator]) -> None:
    try:
        build_facts(values, RULESET)
    except InconsistentInput:
        return  # an input error, raised before either evaluator runs
    durable = screen_values("GEN", values, RULESET, evaluators["durable"])
    reference = screen_values("GEN", values, RULESET, evaluators["reference"])
    assert durable.outcomes == reference.outcomes, values
    assert durable.result == reference.result


@settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(CASES)
def test_backends_agree_on_generated_cases(values: dict[str, Any]) -> None:
    screen_both(values, EVALUATORS)


@settings(max_examples=300, deadline=None)
@given(CASES)
def test_backends_agree_on_random_seeds(values: dict[str, Any]) -> None:
    screen_both(values, EVALUATORS)


def test_generator_reaches_every_status() -> None:
    """The generated cases are not all trivially unknown: every status occurs."""
    seen = set()
    for values in [
        {"cauda_equina_syndrome": True},
        {"cauda_equina_syndrome": False, "diagnosis": "fracture"},
        {},
        {"lowest_level": "L5-S1"},
        {"mis_technique": "llif", "planned_procedure": "fusion", "lowest_level": "L5-S1"},
    ]:
        seen |= {
            o.status for o in screen_values("X", values, RULESET, EVALUATORS["durable"]).outcomes
        }
    assert {s.value for s in seen} == {
        "fired",
        "not_fired",
        "not_evaluable",
        "not_applicable",
        "conditional",
    }


def _facts_or_none(values: dict[str, Any]) -> Any:
    try:
        return build_facts(values, RULESET)
    except InconsistentInput:
        return None


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(CASES, min_size=1, max_size=150))
def test_batches_of_cases_agree_with_one_at_a_time(cohort: list[dict[str, Any]]) -> None:
    """durable-rules screens cases in batches of SLOTS; each case's outcomes are its own."""
    facts = [f for f in map(_facts_or_none, cohort) if f is not None]
    durable = EVALUATORS["durable"]
    assert isinstance(durable, DurableEvaluator)
    expected = [EVALUATORS["reference"].evaluate(f) for f in facts]
    assert durable.evaluate_many(facts) == expected
    with pytest.MonkeyPatch.context() as patch:  # several batches, the last one partial
        patch.setattr(durable_module, "SLOTS", 37)
        assert durable.evaluate_many(facts) == expected
    assert [durable.evaluate(f) for f in facts] == expected


@settings(max_examples=2_000, deadline=None, derandomize=True)
@given(CASES)
def test_remembered_explanations_equal_fresh_ones(values: dict[str, Any]) -> None:
    """make_outcome reuses explanations across cases; each must equal one computed afresh."""
    facts = _facts_or_none(values)
    if facts is None:
        return
    for outcome in EVALUATORS["reference"].evaluate(facts):
        rule = RULESET.by_id[outcome.rule_id]
        unknown = compile_kleene(rule.when)(facts.values, facts.possible) is None
        if unknown and outcome.status in (RuleStatus.not_evaluable, RuleStatus.conditional):
            fresh = unknown_fields(rule.when, facts.values, facts.possible)
            assert outcome.missing == tuple(missing_inputs(fresh, RULESET, facts)), values
