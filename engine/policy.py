"""From rule outcomes to a verdict, following rules/policy.yaml (highest verdict first)."""

from __future__ import annotations

from collections.abc import Iterable

from engine.models import PolicyEntry, RuleOutcome, Verdict
from engine.rules.ruleset import Ruleset


def decide_verdict(outcomes: Iterable[RuleOutcome], ruleset: Ruleset) -> PolicyEntry:
    """The first policy entry whose condition holds; the last entry is the default."""
    severity_of = ruleset.severity_of
    present = {(outcome.status, severity_of[outcome.rule_id]) for outcome in outcomes}
    for entry, triggers in ruleset.policy_triggers:
        if triggers is None or not triggers.isdisjoint(present):
            return entry
    raise AssertionError("unreachable: the policy's last entry is a default")  # checked at load


def verdict_rank(verdict: Verdict) -> int:
    """0 for the highest verdict (urgent_review), 4 for the lowest."""
    return list(Verdict).index(verdict)
