"""What every evaluator shares: the interface, the status table and the missing-data explanation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.derive import Facts, missing_inputs
from engine.models import RuleOutcome, RuleStatus, settled_outcome
from engine.rules.logic import unknown_fields
from engine.rules.ruleset import Rule, Ruleset


class Evaluator(Protocol):
    """Decides every screening rule of a ruleset for one case's facts."""

    ruleset: Ruleset

    def evaluate(self, facts: Facts) -> list[RuleOutcome]:
        """One outcome per rule, in ruleset order."""
        ...

    def evaluate_many(self, many: Sequence[Facts]) -> list[list[RuleOutcome]]:
        """evaluate() for each of many cases, in order."""
        ...


def rule_status(scope: bool | None, when: bool | None) -> RuleStatus:
    """Combine a rule's three-valued scope and condition into its status (docs/rule-format.md)."""
    if scope is False:
        return RuleStatus.not_applicable
    if scope is None:
        return RuleStatus.not_fired if when is False else RuleStatus.conditional
    if when is None:
        return RuleStatus.not_evaluable
    return RuleStatus.fired if when else RuleStatus.not_fired


EXPLAINED_STATUSES = frozenset({RuleStatus.not_evaluable, RuleStatus.conditional})
# outcomes with something missing are kept by the ruleset (Ruleset.memo.explained), by rule,
# status and what the explanation reads: cohorts repeat the same gaps, and outcomes are immutable
EXPLAINED_LIMIT = 20_000  # about 10 MB; a 100,000-row cohort made 17,779 distinct entries


def make_outcome(
    rule: Rule, status: RuleStatus, when: bool | None, facts: Facts, ruleset: Ruleset
) -> RuleOutcome:
    """The outcome of one rule, naming the input fields that would settle an unknown condition."""
    if when is None and status in EXPLAINED_STATUSES:
        return explained_outcome(rule, status, facts, ruleset)
    return settled_outcome(rule.id, status)


def explained_outcome(
    rule: Rule, status: RuleStatus, facts: Facts, ruleset: Ruleset
) -> RuleOutcome:
    """The outcome of a rule whose condition is unknown, with the fields that would settle it."""
    values, possible = facts.values, facts.possible
    inputs = ruleset.explanation_inputs[rule.id]
    explained = ruleset.memo.explained
    gaps = (
        rule.id,
        status,
        tuple(map(values.get, inputs)),  # a known value is never None
        tuple(map(possible.get, inputs)) if possible else None,
    )
    hit = explained.get(gaps)
    if hit is not None:
        return hit
    fields = unknown_fields(rule.when, values, possible)
    missing = tuple(missing_inputs(fields, ruleset, facts))
    outcome = RuleOutcome(rule_id=rule.id, status=status, missing=missing)
    if len(explained) >= EXPLAINED_LIMIT:
        explained.clear()
    explained[gaps] = outcome
    return outcome
