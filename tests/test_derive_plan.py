"""The derive step's shortcuts give what the plain definition gives.

engine.derive looks narrowings up by value, re-tests only those whose fields changed, and skips
a derived attribute none of whose inputs is known. Here the plain definition (test every
narrowing until nothing changes; compute every derived attribute) is written out and compared
on a synthetic cohort and on cases built to reach each shortcut's fallback.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.derive import InconsistentInput, _derivers, _reachable_totals, build_facts
from engine.errors import CaseInputError
from engine.io.cases import validate_case
from engine.models import Scalar
from engine.rules.logic import compile_kleene
from engine.synth import generate_rows
from tests.conftest import RULESET


def plain_constraints(known: dict[str, Scalar]) -> tuple[dict[str, Any], set[Any]] | str:
    """Every narrowing tested in every pass until a pass changes nothing; the field a
    contradiction is about if there is one."""
    possible: dict[str, frozenset[Scalar]] = {}
    inferred = set()
    applied: set[int] = set()
    changed = True
    while changed:
        changed = False
        for index, (constraint, name, _, holds, allowed, _) in enumerate(
            RULESET.compiled_narrowings
        ):
            if index in applied or holds(known, possible) is not True:
                continue
            applied.add(index)
            if name in known:
                if known[name] not in allowed:
                    return name
                continue
            now = possible.get(name, frozenset(constraint.spec.domain)) & allowed
            if not now:
                return name
            changed = True
            if len(now) == 1:
                (known[name],) = now
                possible.pop(name, None)
                inferred.add((name, known[name], constraint.id))
            else:
                possible[name] = now
    return possible, inferred


def plain_facts(
    values: dict[str, Scalar],
) -> tuple[dict[str, Scalar], dict[str, Any], set[Any]] | str:
    """The facts, or the field a contradiction is about."""
    known = dict(values)
    found = plain_constraints(known)
    if isinstance(found, str):
        return found
    possible, inferred = found
    seen: dict[str, frozenset[Scalar]] = dict(possible)
    for name, derive, points, _, _ in _derivers(RULESET).derivers:  # every deriver, no shortcut
        try:
            value = derive(known, seen)
        except InconsistentInput as exc:  # a supplied score total its components contradict
            return exc.problem.field
        if value is not None:
            known[name] = value
        elif points is not None:
            totals = _reachable_totals(points, known, possible)
            if totals is not None:
                seen = {**seen, name: totals}
        elif name in RULESET.bounded_fields:  # the band values not excluded, in the plain way
            left = plain_bounds(name, known, seen)
            if left is not None:
                seen = {**seen, name: left}
                possible = {**possible, name: left}
    return known, possible, inferred


def plain_bounds(
    name: str, known: dict[str, Scalar], seen: dict[str, frozenset[Scalar]]
) -> frozenset[Scalar] | None:
    """Each band's value unless its condition is false or an earlier one is true."""
    rule = RULESET.derived_by_field[name]
    outcomes = [compile_kleene(cond)(known, seen) for cond, _ in rule.bands]
    left = frozenset(
        value
        for index, (_, value) in enumerate(rule.bands)
        if outcomes[index] is not False and True not in outcomes[:index]
    )
    return None if left == frozenset(v for _, v in rule.bands) else left


def agree(values: dict[str, Scalar]) -> None:
    expected = plain_facts(values)
    if isinstance(expected, str):
        with pytest.raises(InconsistentInput) as refused:
            build_facts(values, RULESET)
        assert refused.value.problem.field == expected
        return
    facts = build_facts(values, RULESET)
    assert facts.values == expected[0]
    assert facts.possible == expected[1]
    assert {(i.field, i.value, i.constraint) for i in facts.inferred} == expected[2]


def test_the_synthetic_cohort_gets_the_plain_definitions_facts() -> None:
    checked = 0
    for number, row in enumerate(generate_rows(3000, seed=11), 1):
        try:
            _, values = validate_case(row, "synthetic", row=number)
        except CaseInputError:
            continue
        agree(values)
        checked += 1
    assert checked > 2900


@pytest.mark.parametrize(
    "values",
    [
        {},  # nothing known: every looked-up narrowing takes its "unknown" answer
        {"lowest_level": "C7-T1"},  # region narrowed, not inferred: CON-004 tested by value
        {"lowest_level": "C7-T1", "planned_procedure": "fusion"},
        {"lowest_level": "C5-C6", "planned_procedure": "fusion"},  # no technique left: refused
        {"lowest_level": "T12-L1", "planned_procedure": "discectomy", "sex": "female"},
        {"herniation_migration_grade": "none", "herniation_migrated": True},  # refused
        {"herniation_migration_grade": "high"},  # chain: migrated inferred
        {"intradural_ventral": True, "intradural_pathology": False},  # refused
        {"gestational_age_weeks": 20, "sex": "male"},  # refused, naming both
        {"slic_neuro": "intact", "diagnosis": "fracture"},
        {"tlics_morphology": "burst", "tlics_plc": "injured"},  # reachable totals only
        {"tlics_score": 5},  # a supplied total alone stands in
    ],
)
def test_cases_that_reach_each_fallback_get_the_plain_definitions_facts(
    values: dict[str, Scalar],
) -> None:
    agree(values)
