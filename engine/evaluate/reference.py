"""The reference evaluator: each condition compiled to a Python closure with Kleene logic.

It is the oracle the durable-rules backend is tested against, and a fair speed baseline
(closures, not an interpreter walking the tree per case).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.derive import Facts
from engine.evaluate.base import make_outcome, rule_status
from engine.models import RuleOutcome
from engine.rules.logic import compile_kleene
from engine.rules.ruleset import Ruleset


class ReferenceEvaluator:
    """Plain-Python evaluation of every rule."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self._compiled = [
            (rule, compile_kleene(rule.scope) if rule.scope else None, compile_kleene(rule.when))
            for rule in ruleset.rules
        ]

    def evaluate_many(self, many: Sequence[Facts]) -> list[list[RuleOutcome]]:
        return [self.evaluate(facts) for facts in many]

    def evaluate(self, facts: Facts) -> list[RuleOutcome]:
        values, possible = facts.values, facts.possible
        outcomes = []
        for rule, scope, when in self._compiled:
            scope_value = scope(values, possible) if scope else True
            when_value = when(values, possible)
            status = rule_status(scope_value, when_value)
            outcomes.append(make_outcome(rule, status, when_value, facts, self.ruleset))
        return outcomes
