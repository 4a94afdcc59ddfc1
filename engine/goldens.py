"""Run every golden case of a ruleset (per rule and per derived attribute) on given evaluators."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.derive import InconsistentInput, build_facts
from engine.errors import CaseInputError
from engine.evaluate.base import Evaluator
from engine.io.cases import validate_case
from engine.models import RuleStatus, Scalar
from engine.rules.ruleset import Ruleset
from engine.screener import Screener

EXPECTED_STATUSES: dict[str, frozenset[RuleStatus]] = {
    "fires": frozenset({RuleStatus.fired}),
    "does_not_fire": frozenset({RuleStatus.not_fired, RuleStatus.not_applicable}),
    "not_evaluable": frozenset({RuleStatus.not_evaluable}),
    "conditional": frozenset({RuleStatus.conditional}),
}


@dataclass(frozen=True)
class GoldenCase:
    """One named case of one rule (or derived attribute) and what it should give."""

    rule_id: str
    kind: str  # fires | does_not_fire | not_evaluable | conditional | derived
    name: str
    case: dict[str, Any]
    expected_missing: tuple[str, ...] | None = None
    expected_value: Scalar | None = None
    path: str = ""

    @property
    def case_id(self) -> str:
        return f"{self.rule_id}.{self.name}"[:64]


@dataclass
class GoldenResult:
    golden: GoldenCase
    backend: str
    ok: bool
    expected: str
    actual: str
    details: list[str] = field(default_factory=list)


def golden_cases(ruleset: Ruleset) -> list[GoldenCase]:
    """Every golden case in the ruleset, rules first, then derived attributes."""
    found: list[GoldenCase] = []
    for rule in ruleset.rules:
        cases = rule.meta.cases
        if cases is None:
            continue
        for kind in EXPECTED_STATUSES:
            for case in getattr(cases, kind):
                missing = tuple(sorted(case.missing)) if case.missing is not None else None
                found.append(
                    GoldenCase(rule.id, kind, case.name, case.case, missing, path=rule.path)
                )
    for derived in ruleset.derived:
        for dcase in derived.meta.cases:
            found.append(
                GoldenCase(
                    derived.meta.id,
                    "derived",
                    dcase.name,
                    dcase.case,
                    expected_value=dcase.expected,
                    path=derived.path,
                )
            )
    return found


def screen_golden(golden: GoldenCase, screener: Screener, backend: str) -> GoldenResult:
    """Screen one golden case and compare with what it expects."""
    try:
        case_id, values = validate_case({"case_id": golden.case_id, **golden.case}, golden.path)
        if golden.kind == "derived":
            return _run_derived(golden, screener.ruleset, values, backend)
        screening = screener.screening(case_id, values, source=golden.path)
    except (CaseInputError, InconsistentInput) as exc:
        return GoldenResult(golden, backend, False, golden.kind, "invalid case", [str(exc)])
    outcome = screening.outcome_of(golden.rule_id)
    expected_statuses = EXPECTED_STATUSES[golden.kind]
    ok = outcome.status in expected_statuses
    details = []
    expected = "/".join(sorted(s.value for s in expected_statuses))
    actual = outcome.status.value
    if golden.expected_missing is not None:
        expected += f" missing={list(golden.expected_missing)}"
        actual += f" missing={sorted(outcome.missing)}"
        if tuple(sorted(outcome.missing)) != golden.expected_missing:
            ok = False
    if not ok:
        details.append(f"case: {golden.case}")
    return GoldenResult(golden, backend, ok, expected, actual, details)


def _run_derived(
    golden: GoldenCase, ruleset: Ruleset, values: dict[str, Scalar], backend: str
) -> GoldenResult:
    facts = build_facts(values, ruleset)
    field_name = next(d.field for d in ruleset.derived if d.meta.id == golden.rule_id)
    value = facts.derived.get(field_name)
    ok = value == golden.expected_value and _kind(value) is _kind(golden.expected_value)
    return GoldenResult(
        golden, backend, ok, f"{field_name}={golden.expected_value!r}", f"{field_name}={value!r}"
    )


def _kind(value: object) -> type:
    """bool, float (for any number: 20 and 20.0 are the same score), str or NoneType."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float
    return type(value)


def screen_goldens(screeners: Mapping[str, Screener]) -> list[GoldenResult]:
    """Every golden case of the screeners' ruleset (one ruleset), on each screener by name."""
    rulesets = {id(s.ruleset): s.ruleset for s in screeners.values()}
    if len(rulesets) != 1:
        raise ValueError("golden cases are run on screeners of one ruleset")
    (ruleset,) = rulesets.values()
    results = []
    for golden in golden_cases(ruleset):
        for backend, screener in screeners.items():
            results.append(screen_golden(golden, screener, backend))
            if golden.kind == "derived":
                break  # derived values come from the shared derive step, not an evaluator
    return results


# the wiring before engine.Screener, kept for callers not yet moved onto it


def run_golden(
    golden: GoldenCase, ruleset: Ruleset, backend: str, evaluator: Evaluator
) -> GoldenResult:
    """screen_golden with a ruleset and an evaluator (no site profile)."""
    return screen_golden(golden, Screener(ruleset, evaluator, backend, {}), backend)


def run_goldens(ruleset: Ruleset, evaluators: Mapping[str, Evaluator]) -> list[GoldenResult]:
    """screen_goldens with a ruleset and evaluators by name."""
    return screen_goldens({b: Screener(ruleset, e, b, {}) for b, e in evaluators.items()})
