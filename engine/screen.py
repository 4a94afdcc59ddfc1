"""The one place that wires the steps: case values -> facts -> outcomes -> verdict -> Result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine import __version__
from engine.derive import InconsistentInput, build_facts
from engine.errors import CaseInputError
from engine.evaluate.base import Evaluator
from engine.models import (
    SEVERITY_ORDER,
    ConditionalFinding,
    Finding,
    NotEvaluable,
    Result,
    RuleOutcome,
    RuleStatus,
    Scalar,
)
from engine.policy import decide_verdict
from engine.rules.condition import to_text
from engine.rules.logic import narrow
from engine.rules.ruleset import Rule, Ruleset


@dataclass(frozen=True)
class Screening:
    """A result plus every rule's outcome (batch counts need the ones a Result leaves out)."""

    result: Result
    outcomes: list[RuleOutcome]

    def outcome_of(self, rule_id: str) -> RuleOutcome:
        return next(o for o in self.outcomes if o.rule_id == rule_id)


def apply_site(
    values: Mapping[str, Scalar], site: Mapping[str, Scalar]
) -> tuple[dict[str, Scalar], dict[str, Scalar]]:
    """Fill setting fields the case lacks from the site profile; case values win."""
    assumed = {k: v for k, v in site.items() if k not in values}
    return {**values, **assumed}, assumed


def screen_values(
    case_id: str,
    values: Mapping[str, Scalar],
    ruleset: Ruleset,
    evaluator: Evaluator,
    *,
    site: Mapping[str, Scalar] | None = None,
    source: str = "<case>",
) -> Screening:
    """Screen one validated case (known values only, case_id excluded)."""
    merged, assumed = apply_site(values, site or {})
    try:
        facts = build_facts(merged, ruleset)
    except InconsistentInput as exc:
        raise CaseInputError(source, [exc.problem], case_id=case_id) from None
    outcomes = evaluator.evaluate(facts)
    policy = decide_verdict(outcomes, ruleset)
    findings: list[Finding] = []
    conditional: list[ConditionalFinding] = []
    not_evaluable: list[NotEvaluable] = []
    for outcome in outcomes:
        rule = ruleset.by_id[outcome.rule_id]
        if outcome.status is RuleStatus.fired:
            findings.append(_finding(rule, facts.values))
        elif outcome.status is RuleStatus.conditional:
            conditional.append(
                ConditionalFinding(
                    **_finding(rule, facts.values).model_dump(),
                    scope=to_text(narrow(rule.scope, facts.possible)) if rule.scope else "",
                    missing=list(outcome.missing),
                )
            )
        elif outcome.status is RuleStatus.not_evaluable:
            not_evaluable.append(
                NotEvaluable(
                    rule_id=rule.id,
                    name=rule.meta.name,
                    severity=rule.meta.severity,
                    missing=list(outcome.missing),
                )
            )
    order = {r.id: (SEVERITY_ORDER[r.meta.severity], r.id) for r in ruleset.rules}
    result = Result(
        case_id=case_id,
        verdict=policy.verdict,
        summary=policy.summary,
        findings=sorted(findings, key=lambda f: order[f.rule_id]),
        conditional=sorted(conditional, key=lambda f: order[f.rule_id]),
        not_evaluable=sorted(not_evaluable, key=lambda f: order[f.rule_id]),
        derived=dict(facts.derived),
        inferred=list(facts.inferred),
        assumed=assumed,
        ruleset=ruleset.stamp,
        tool_version=__version__,
    )
    return Screening(result=result, outcomes=outcomes)


def _finding(rule: Rule, values: Mapping[str, Scalar]) -> Finding:
    meta = rule.meta
    return Finding(
        rule_id=meta.id,
        name=meta.name,
        category=meta.category,
        severity=meta.severity,
        message=meta.message,
        rationale=" ".join(meta.rationale.split()),
        sources=meta.sources,
        evidence=meta.evidence,
        provisional=meta.provisional,
        values={f: values[f] for f in rule.fields if f in values},
    )
