"""The steps engine.Screener wires: case values -> facts -> outcomes -> verdict -> Result.

Call them through a Screener (engine/screener.py), which owns the ruleset, evaluator, policy and
site profile; the functions taking them as arguments are kept for callers not yet moved onto it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import is_not

from engine import __version__
from engine.derive import Facts, InconsistentInput, build_facts
from engine.dictionary import FIELDS_BY_NAME
from engine.errors import CaseInputError
from engine.evaluate.base import Evaluator
from engine.models import (
    ConditionalFinding,
    Finding,
    NotEvaluable,
    OpenCaution,
    PolicyEntry,
    Result,
    RuleOutcome,
    RuleStatus,
    Scalar,
    SiteValue,
)
from engine.policy import Outlook, policy_for
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


TECHNIQUE = "mis_technique"


def apply_site(
    values: Mapping[str, Scalar], site: Mapping[str, SiteValue]
) -> tuple[Mapping[str, Scalar], dict[str, Scalar]]:
    """Fill setting fields the case lacks from the site profile's single values; case values win.

    Per-technique settings are left to `technique_setting`. The merged values are a new dict
    only when something was assumed; the caller copies them before adding anything (build_facts
    does), so the case's own values are never changed.
    """
    assumed: dict[str, Scalar] = {
        k: v for k, v in site.items() if k not in values and not isinstance(v, dict)
    }
    return ({**values, **assumed} if assumed else values), assumed


def technique_setting(per_technique: Mapping[str, int], facts: Facts) -> int | None:
    """The value of a per-technique setting for a case: its technique's number, or with the
    technique unknown the number every technique it still allows shares (none: unknown).

    Rules that read such a setting are scoped to a technique, so with the technique unknown
    they are conditional considerations, which never count toward the verdict; a number is
    only assumed when it is right whichever allowed technique is chosen.
    """
    known = facts.values.get(TECHNIQUE)
    techniques = (
        (known,)
        if known is not None
        else facts.possible.get(TECHNIQUE, FIELDS_BY_NAME[TECHNIQUE].domain)
    )
    numbers = {per_technique.get(str(t)) for t in techniques}
    number = numbers.pop() if len(numbers) == 1 else None
    return number


@dataclass(frozen=True)
class Decision:
    """What screening decides, before any report is built: facts, outcomes, verdict."""

    facts: Facts
    outcomes: list[RuleOutcome]
    policy: PolicyEntry
    assumed: dict[str, Scalar]
    notable: list[RuleOutcome]  # see notable_outcomes
    outlook: Outlook  # the verdicts the open rules can still give (engine.policy)


def prepare(
    case_id: str,
    values: Mapping[str, Scalar],
    ruleset: Ruleset,
    *,
    site: Mapping[str, SiteValue] | None = None,
    source: str = "<case>",
) -> tuple[Facts, dict[str, Scalar]]:
    """A case's facts (site defaults, constraints, derived attributes) and the assumed values."""
    site = site or {}
    merged, assumed = apply_site(values, site)
    try:
        facts = build_facts(merged, ruleset)
        for name, given in site.items():
            if isinstance(given, dict) and name not in merged:
                number = technique_setting(given, facts)  # the technique after constraints
                if number is not None:
                    assumed = {**assumed, name: number}
                    merged = {**merged, name: number}
                    facts = build_facts(merged, ruleset)
        return facts, assumed
    except InconsistentInput as exc:
        raise CaseInputError(source, [exc.problem], case_id=case_id) from None


def notable_outcomes(outcomes: Sequence[RuleOutcome], ruleset: Ruleset) -> list[RuleOutcome]:
    """The outcomes, in report order, that are not their rule's baseline object.

    Every fired, conditional and not-evaluable outcome is among them (a baseline is not
    applicable or not fired); a case usually has a dozen of the 65. The comparison is by
    identity, so an outcome equal to the baseline but built apart is kept: never one too few.
    """
    ordered = ruleset.in_report_order(outcomes)
    return list(compress(ordered, map(is_not, ordered, ruleset.baseline_outcomes)))


def conclude(
    facts: Facts, outcomes: list[RuleOutcome], assumed: dict[str, Scalar], ruleset: Ruleset
) -> Decision:
    """The decision once every rule's outcome is known: the verdict the policy gives."""
    notable = notable_outcomes(outcomes, ruleset)
    # the baselines cannot select a policy entry unless one reads not-fired/not-applicable
    outlook = policy_for(ruleset).decide(outcomes, notable)
    return Decision(facts, outcomes, outlook.entry, assumed, notable, outlook)


def decide(
    case_id: str,
    values: Mapping[str, Scalar],
    ruleset: Ruleset,
    evaluator: Evaluator,
    *,
    site: Mapping[str, SiteValue] | None = None,
    source: str = "<case>",
) -> Decision:
    """Constraints, derived attributes, every rule's outcome and the verdict of one case."""
    facts, assumed = prepare(case_id, values, ruleset, site=site, source=source)
    return conclude(facts, evaluator.evaluate(facts), assumed, ruleset)


def decide_many(
    prepared: list[tuple[Facts, dict[str, Scalar]]], ruleset: Ruleset, evaluator: Evaluator
) -> list[Decision]:
    """decide() for many prepared cases at once (the evaluator sees them together)."""
    outcomes = evaluator.evaluate_many([facts for facts, _ in prepared])
    return [
        conclude(facts, found, assumed, ruleset)
        for (facts, assumed), found in zip(prepared, outcomes, strict=True)
    ]


def screen_values(
    case_id: str,
    values: Mapping[str, Scalar],
    ruleset: Ruleset,
    evaluator: Evaluator,
    *,
    site: Mapping[str, SiteValue] | None = None,
    source: str = "<case>",
) -> Screening:
    """Screen one validated case (known values only, case_id excluded)."""
    decision = decide(case_id, values, ruleset, evaluator, site=site, source=source)
    return screening_of(case_id, decision, ruleset)


def screening_of(case_id: str, decision: Decision, ruleset: Ruleset) -> Screening:
    """The full result (the output contract) of a decided case."""
    facts, outcomes, policy, assumed = (
        decision.facts,
        decision.outcomes,
        decision.policy,
        decision.assumed,
    )
    assessment = policy_for(ruleset).assess(decision.outlook, decision.notable)
    changing = {o.rule_id for o in assessment.changing}
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
                    can_change_verdict=rule.id in changing,
                )
            )
    order = ruleset.report_order
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
        possible_verdicts=list(assessment.possible),
        possible_verdicts_exact=assessment.exact,
        next_questions=list(assessment.next_questions),
        deciding_questions=list(assessment.deciding_questions),
        open_cautions=[
            OpenCaution(
                rule_id=o.rule_id,
                name=ruleset.by_id[o.rule_id].meta.name,
                message=ruleset.by_id[o.rule_id].meta.message,
                missing=list(o.missing),
                can_change_verdict=o.rule_id in changing,
            )
            for o in sorted(assessment.open_cautions, key=lambda o: order[o.rule_id])
        ],
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
