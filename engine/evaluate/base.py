"""What every evaluator shares: the interface, the status table and the missing-data explanation."""

from __future__ import annotations

from typing import Protocol

from engine.derive import Facts, missing_inputs
from engine.models import RuleOutcome, RuleStatus
from engine.rules.logic import unknown_fields
from engine.rules.ruleset import Rule, Ruleset


class Evaluator(Protocol):
    """Decides every screening rule of a ruleset for one case's facts."""

    ruleset: Ruleset

    def evaluate(self, facts: Facts) -> list[RuleOutcome]:
        """One outcome per rule, in ruleset order."""
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


_SETTLED: dict[tuple[str, RuleStatus], RuleOutcome] = {}  # outcomes with nothing missing


def make_outcome(
    rule: Rule, status: RuleStatus, when: bool | None, facts: Facts, ruleset: Ruleset
) -> RuleOutcome:
    """The outcome of one rule, naming the input fields that would settle an unknown condition."""
    if when is None and status in (RuleStatus.not_evaluable, RuleStatus.conditional):
        fields = unknown_fields(rule.when, facts.values, facts.possible)
        missing = tuple(missing_inputs(fields, ruleset, facts))
        return RuleOutcome(rule_id=rule.id, status=status, missing=missing)
    key = (rule.id, status)
    outcome = _SETTLED.get(key)
    if outcome is None:  # immutable, so one object per rule and status serves every case
        outcome = _SETTLED[key] = RuleOutcome(rule_id=rule.id, status=status)
    return outcome
