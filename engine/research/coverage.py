"""Three-valued coverage of the golden cases: `miss-screen rules test --coverage`.

For every rule, every part of its scope and condition (each comparison, membership or `is known`
test, the leaves of the condition tree, and the whole scope and condition) is evaluated with the
same Kleene logic the reference evaluator uses, on the facts of each of the rule's golden cases
(constraints and derived attributes applied). A part is covered when some golden case makes it
true, some false and some unknown; the report lists the states never seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.derive import InconsistentInput, build_facts
from engine.errors import CaseInputError
from engine.goldens import GoldenCase, golden_cases
from engine.io.cases import validate_case
from engine.rules.condition import And, Cond, Known, Not, Or, Truth, to_text
from engine.rules.logic import compile_kleene
from engine.rules.ruleset import Rule, Ruleset

STATES = ("true", "false", "unknown")


def leaves(cond: Cond) -> list[Cond]:
    """The atomic tests of a condition, left to right, each once."""
    if isinstance(cond, And | Or):
        found: list[Cond] = []
        for item in cond.items:
            found += [leaf for leaf in leaves(item) if leaf not in found]
        return found
    if isinstance(cond, Not):
        return leaves(cond.item)
    return [cond]


@dataclass
class PartCoverage:
    where: str  # scope or condition
    text: str
    states: tuple[str, ...] = STATES  # `is known` is never unknown: true and false only
    seen: set[str] = field(default_factory=set)

    @property
    def never(self) -> list[str]:
        return [s for s in self.states if s not in self.seen]

    def as_json(self) -> dict[str, object]:
        return {
            "where": self.where,
            "part": self.text,
            "seen": [s for s in STATES if s in self.seen],
            "never": self.never,
        }


@dataclass
class RuleCoverage:
    rule_id: str
    cases: int
    parts: list[PartCoverage]

    @property
    def complete(self) -> bool:
        return all(not p.never for p in self.parts)


def _state(value: bool | None) -> str:
    return "unknown" if value is None else ("true" if value else "false")


def _states(cond: Cond) -> tuple[str, ...]:
    """The states a part can take: a constant one, `is known` true or false, else all three."""
    if isinstance(cond, Truth):
        return (_state(cond.value),)
    if isinstance(cond, Known):
        return ("true", "false")
    return STATES


def _parts(rule: Rule) -> list[tuple[PartCoverage, Cond]]:
    found: list[tuple[PartCoverage, Cond]] = []
    for where, cond in (("scope", rule.scope), ("condition", rule.when)):
        if cond is None:
            continue
        found.append((PartCoverage(where, "(whole) " + to_text(cond), _states(cond)), cond))
        found += [
            (
                PartCoverage(where, to_text(leaf), _states(leaf)),
                leaf,
            )
            for leaf in leaves(cond)
        ]
    return found


def coverage(ruleset: Ruleset) -> list[RuleCoverage]:
    by_rule: dict[str, list[GoldenCase]] = {}
    for golden in golden_cases(ruleset):
        by_rule.setdefault(golden.rule_id, []).append(golden)
    report = []
    for rule in ruleset.rules:
        parts = _parts(rule)
        compiled = [(part, compile_kleene(cond)) for part, cond in parts]
        goldens = by_rule.get(rule.id, [])
        for golden in goldens:
            try:
                _, values = validate_case({"case_id": golden.case_id, **golden.case}, rule.path)
                facts = build_facts(values, ruleset)
            except (CaseInputError, InconsistentInput):
                continue  # `rules test` reports an invalid golden case
            for part, test in compiled:
                part.seen.add(_state(test(facts.values, facts.possible)))
        report.append(RuleCoverage(rule.id, len(goldens), [p for p, _ in compiled]))
    return report
