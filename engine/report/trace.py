"""Why a rule fired, or not: each part of its condition, true, false or unknown, on which values.

Reuses the three-valued evaluation of engine/rules/logic.py, so the trace says exactly what the
reference evaluator decided; the durable backend is held to the same outcomes by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.derive import Facts
from engine.models import Scalar
from engine.rules.condition import And, Cond, Not, Or, fields_of, to_text
from engine.rules.logic import compile_kleene
from engine.rules.ruleset import Rule

TRUTH_WORDS = {True: "true", False: "false", None: "unknown"}
MAX_DEPTH = 3  # deeper parts are shown as one line: a trace is read, not audited


@dataclass(frozen=True)
class TraceLine:
    """One part of a condition: its depth, its truth value, its text and the values it read."""

    depth: int
    truth: bool | None
    text: str
    values: str


def show_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _values_read(cond: Cond, facts: Facts) -> str:
    shown = []
    for name in sorted(fields_of(cond)):
        if name in facts.values:
            shown.append(f"{name} = {show_value(facts.values[name])}")
        elif name in facts.possible:
            options = ", ".join(sorted(show_value(v) for v in facts.possible[name]))
            shown.append(f"{name} unknown (still possible: {options})")
        else:
            shown.append(f"{name} unknown")
    return "; ".join(shown)


def trace_condition(cond: Cond, facts: Facts, depth: int = 0) -> list[TraceLine]:
    """The condition as lines: each and/or part with its truth value, leaves with their values."""
    truth = compile_kleene(cond)(facts.values, facts.possible)
    if isinstance(cond, And | Or) and depth < MAX_DEPTH:
        head = "all of" if isinstance(cond, And) else "any of"
        lines = [TraceLine(depth, truth, head, "")]
        for item in cond.items:
            lines += trace_condition(item, facts, depth + 1)
        return lines
    if isinstance(cond, Not) and isinstance(cond.item, And | Or) and depth < MAX_DEPTH:
        lines = [TraceLine(depth, truth, "not", "")]
        return lines + trace_condition(cond.item, facts, depth + 1)
    return [TraceLine(depth, truth, to_text(cond), _values_read(cond, facts))]


def trace_rule(rule: Rule, facts: Facts) -> list[tuple[str, list[TraceLine]]]:
    """The scope (when the rule has one) and the condition of a rule, traced on a case's facts."""
    parts = [("scope", rule.scope)] if rule.scope is not None else []
    parts.append(("when", rule.when))
    return [(name, trace_condition(cond, facts)) for name, cond in parts if cond is not None]
