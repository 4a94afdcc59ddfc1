"""The Host API baseline's rules: each rule part as one durable-rules rule, written directly.

The textbook way to put a rule in durable-rules is one rule per thing to detect, its condition
written as one pattern with `$and`/`$or` as the rule reads. Here each rule part (its scope, its
condition) is one rule for "definitely true" and one for "unknown" (Kleene logic, as
production computes them); a part is false when neither matches. These are the patterns the
production path ran until it moved to one conjunction per status (results.md, item 24), so
the baseline is the same from run to run; the patterns keep the group tests that keep the
rule base within durable-rules' 64-entry match stack in one ruleset.
"""

from __future__ import annotations

import json
from typing import Any

from engine.evaluate.base import rule_status
from engine.evaluate.durable import DurableEvaluator
from engine.evaluate.layout import STATUS_BITS, boolean_operators, group_test
from engine.evaluate.network import Node, add_pattern, limit_problems, stack_bound
from engine.evaluate.patterns import (
    GUARD,
    MAX_GROUPS,
    MAX_PATTERN_OPERATORS,
    STACK_BUDGET,
    Pattern,
    PatternCompiler,
)
from engine.models import RuleStatus

PARTS = ("s1", "s?", "w1", "w?")  # scope true / unknown, condition true / unknown
BITS = {"s1": 1, "s?": 2, "w1": 4, "w?": 8}


def _true_and_unknown(compiler: PatternCompiler, cond: Any) -> tuple[Pattern, Pattern]:
    """The patterns of a part's "definitely true" and "unknown". Where unknown is too long,
    "not false" stands in: it also matches when true, and the true pattern takes precedence."""
    patterns = compiler.kleene(cond)
    unknown = patterns.unknown
    if boolean_operators(unknown) > MAX_PATTERN_OPERATORS:
        unknown = patterns.not_false
    return patterns.true, unknown


def _as_rules(pattern: dict[str, Any]) -> list[dict[str, Any]]:
    """A part pattern as durable-rules rules: one, or one per alternative of a top-level `$or`
    too long for one pattern (as a rule author would split it)."""
    if boolean_operators(pattern) <= MAX_PATTERN_OPERATORS:
        return [pattern]
    alternatives = pattern.get("$or")
    if not alternatives or any(
        boolean_operators(a) > MAX_PATTERN_OPERATORS for a in alternatives
    ):
        raise ValueError("a condition too long for one durable-rules pattern")
    return list(alternatives)


def _gated(gate: Pattern, part: Pattern) -> Pattern:
    """A condition pattern that also requires its scope not false, where that fits."""
    if isinstance(part, bool) or gate is True:
        return part
    if gate is False:
        return False
    gated = {"$and": [gate, part]}
    return gated if boolean_operators(gated) <= MAX_PATTERN_OPERATORS else part


def _part_value(constant: Pattern, unknown: Pattern, true: bool, maybe: bool) -> bool | None:
    """True, unknown or false for one part, from its two patterns (or their folded constants)."""
    if constant is True or (isinstance(constant, dict) and true):
        return True
    if unknown is True or (isinstance(unknown, dict) and maybe):
        return None
    return False


class TextbookRules:
    """The part patterns of a rule base, grouped into one ruleset, and their status tables."""

    def __init__(self, durable: DurableEvaluator) -> None:
        ruleset = durable.ruleset
        compiler = PatternCompiler(ruleset.constrained_fields)
        patterns: list[tuple[str, dict[str, Any]]] = []
        self.tables: list[list[tuple[RuleStatus, bool | None]]] = []
        for index, rule in enumerate(ruleset.rules):
            scope: tuple[Pattern, Pattern] = (True, False)
            if rule.scope is not None:
                scope = _true_and_unknown(compiler, rule.scope)
            when = _true_and_unknown(compiler, rule.when)
            if rule.scope is not None:
                gate = compiler.kleene(rule.scope).not_false
                when = (_gated(gate, when[0]), _gated(gate, when[1]))
            parts = dict(zip(PARTS, (*scope, *when), strict=True))
            patterns += [
                (f"{index}.{p}.{k}", alternative)
                for p, v in parts.items()
                if isinstance(v, dict)
                for k, alternative in enumerate(_as_rules(v))
            ]
            self.tables.append(
                [
                    (rule_status(scope_value, when_value), when_value)
                    for mask in range(16)
                    for scope_value in [_part_value(*scope, bool(mask & 1), bool(mask & 2))]
                    for when_value in [_part_value(*when, bool(mask & 4), bool(mask & 8))]
                ]
            )
        for groups in range(max(1, len(patterns) // 44), MAX_GROUPS + 1):
            rules, root = self._grouped(patterns, groups)
            if stack_bound(root) <= STACK_BUDGET and not limit_problems(root):
                break
        else:
            raise ValueError("the textbook patterns do not fit one ruleset")
        self.rules = rules  # under the fields' own names, as a rule author writes them
        # per rule and mask of matched parts, production's status bit (0: its default status)
        self.bits: list[list[int]] = []
        bit_of = {status: bit for bit, status in STATUS_BITS.items()}
        for compiled, table in zip(durable.compiled, self.tables, strict=True):
            if table[0][0] != compiled.default[0]:  # nothing matched: the same status
                raise ValueError("textbook and production disagree on a rule's default status")
            self.bits.append(
                [
                    0 if status == compiled.default[0] else bit_of[status, when]
                    for status, when in table
                ]
            )

    @staticmethod
    def _grouped(
        patterns: list[tuple[str, dict[str, Any]]], groups: int
    ) -> tuple[dict[str, dict[str, Any]], Node]:
        ordered = sorted(patterns, key=lambda item: json.dumps(item[1], sort_keys=True))
        size = -(-len(ordered) // groups)
        root = Node(("", "root", ""))
        guard = root.child(("kind", "$eq", '"case"'))
        rules: dict[str, dict[str, Any]] = {}
        for n, (name, pattern) in enumerate(ordered):
            flag = group_test(n // size)
            add_pattern(guard, {"$and": [flag, pattern]})
            rules[name] = {"all": [{"m": {"$and": [GUARD, flag, pattern]}}]}
        return rules, root

    def masks(self, matched: set[str]) -> dict[int, int]:
        """Production's status bit for each rule whose parts matched (the others take their
        default), so that outcomes are built the same way for every contender."""
        parts: dict[int, int] = {}
        for name in matched:
            index, part, _ = name.split(".")
            parts[int(index)] = parts.get(int(index), 0) | BITS[part]
        found = {}
        for index, mask in parts.items():
            bit = self.bits[index][mask]
            if bit:
                found[index] = bit
        return found
