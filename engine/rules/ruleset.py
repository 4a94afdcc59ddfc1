"""The loaded rule set: screening rules, derived attributes, constraints and policy, checked."""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from engine.dictionary import FIELDS_BY_NAME, FieldSpec
from engine.models import (
    SEVERITY_ORDER,
    ConstraintFile,
    DerivedFile,
    Inferred,
    PolicyEntry,
    PolicyFile,
    RuleFile,
    RuleOutcome,
    RulesetStamp,
    RuleStatus,
    Scalar,
    settled_outcome,
)
from engine.rules.condition import Cond, Expr, Truth, fields_of, to_text
from engine.rules.logic import Kleene, compile_kleene


def points_key(value: Scalar) -> str:
    """The key of a component value in a points table: "true"/"false" for a boolean."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Rule:
    """A screening rule with its conditions parsed."""

    meta: RuleFile
    path: str
    scope: Cond | None
    when: Cond

    @cached_property
    def id(self) -> str:  # cached: read for every rule of every case
        return self.meta.id

    @cached_property
    def fields(self) -> tuple[str, ...]:
        """Fields the rule reads, scope first, in a stable order."""
        read = fields_of(self.when) | (fields_of(self.scope) if self.scope else set())
        return tuple(sorted(read))


@dataclass(frozen=True)
class DerivedRule:
    """A derived attribute: one of expression, bands or condition defines its value."""

    meta: DerivedFile
    path: str
    spec: FieldSpec
    expression: Expr | None = None
    bands: tuple[tuple[Cond, Scalar], ...] = ()
    condition: Cond | None = None
    points: tuple[tuple[str, dict[str, int]], ...] = ()
    supplied_total: str | None = None

    @property
    def field(self) -> str:
        return self.spec.name

    @cached_property
    def inputs(self) -> tuple[str, ...]:
        read: set[str] = set()
        if self.expression is not None:
            read |= fields_of(self.expression)
        if self.condition is not None:
            read |= fields_of(self.condition)
        for cond, _ in self.bands:
            read |= fields_of(cond)
        read |= {name for name, _ in self.points}
        if self.supplied_total:
            read.add(self.supplied_total)
        return tuple(sorted(read))


@dataclass(frozen=True)
class Constraint:
    """Known facts that narrow the possible values of one enum or boolean field."""

    meta: ConstraintFile
    spec: FieldSpec
    narrowings: tuple[tuple[Cond, frozenset[Scalar]], ...]

    @property
    def id(self) -> str:
        return self.meta.id


# one narrowing of a constraint: the constraint, the field it narrows, its condition and that
# condition compiled, the values it allows, and the fields the condition reads
Narrowing = tuple[Constraint, str, Cond, Kleene, frozenset[Scalar], frozenset[str]]


@dataclass
class Memo:
    """The per-case caches later steps keep for one ruleset (engine.derive, engine.evaluate).

    They belong to the ruleset they were filled from and go with it; nothing is keyed by id().
    Entries are immutable and filled idempotently, so two threads racing on one key both store
    an equal value (each dict operation is atomic under the GIL).
    """

    # engine.derive: each derived field with its compiled deriver, its rule where it is a points
    # score, its inputs and its value with none of them known, in file order (derive._DeriverPlan)
    derivers: Any = None
    # engine.derive: the narrowings of every constraint, arranged for the constraint passes
    constraint_plan: Any = None
    # engine.derive: one shared Inferred per (field, value type, value, constraint)
    inferred: dict[tuple[str, type, Scalar, str], Inferred] = field(default_factory=dict)
    # engine.evaluate.base: explained outcomes by rule id, status and what the explanation reads
    explained: dict[tuple[object, ...], RuleOutcome] = field(default_factory=dict)


@dataclass(frozen=True)
class Ruleset:
    """Everything the engine needs to screen a case, loaded from one rules directory."""

    name: str
    version: str
    directory: str
    rules: tuple[Rule, ...]
    derived: tuple[DerivedRule, ...]
    constraints: tuple[Constraint, ...]
    policy: PolicyFile
    by_id: dict[str, Rule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {r.id: r for r in self.rules})

    @cached_property
    def memo(self) -> Memo:
        """The per-case caches of this ruleset (engine.derive, engine.evaluate.base)."""
        return Memo()

    @cached_property
    def report_order(self) -> dict[str, tuple[int, str]]:
        """Rule id to its sort key in reports: severity first, then id."""
        return {r.id: (SEVERITY_ORDER[r.meta.severity], r.id) for r in self.rules}

    @cached_property
    def asked_because(self) -> dict[str, str]:
        """Rule id to why its questions are asked, for the clinician: the rule file's
        `asks_because`, else its message (the form, the reports and the card show it)."""
        return {r.id: r.meta.asks_because or r.meta.message for r in self.rules}

    @cached_property
    def report_positions(self) -> tuple[int, ...]:
        """Positions of the rules (and of their outcomes) in report order."""
        order = self.report_order
        return tuple(sorted(range(len(self.rules)), key=lambda i: order[self.rules[i].id]))

    @cached_property
    def in_report_order(self) -> Callable[[Sequence[RuleOutcome]], tuple[RuleOutcome, ...]]:
        """A function that picks one outcome per rule, in report order, in one C call."""
        positions = self.report_positions
        if len(positions) < 2:  # itemgetter of one position returns the item, not a tuple
            return lambda outcomes: tuple(outcomes[p] for p in positions)
        return operator.itemgetter(*positions)

    @cached_property
    def baseline_outcomes(self) -> tuple[RuleOutcome, ...]:
        """Per rule, in report order, the shared outcome of a case it says nothing about.

        Not applicable for a scoped rule, not fired otherwise: most rules end so for most
        cases. An outcome that *is* its rule's baseline object can be skipped wherever only
        fired, conditional and not-evaluable rules matter (see `notable_outcomes`).
        """
        return tuple(
            settled_outcome(
                rule.id,
                RuleStatus.not_applicable if rule.scope is not None else RuleStatus.not_fired,
            )
            for rule in map(self.rules.__getitem__, self.report_positions)
        )

    @cached_property
    def policy_ignores_inert(self) -> bool:
        """No policy entry is selected by a not-fired or not-applicable rule."""
        inert = {RuleStatus.not_fired, RuleStatus.not_applicable}
        return all(
            triggers is None or not any(status in inert for status, _ in triggers)
            for _, triggers in self.policy_triggers
        )

    @cached_property
    def policy_triggers(
        self,
    ) -> list[tuple[PolicyEntry, frozenset[tuple[RuleStatus, str]] | None]]:
        """Per policy entry, the (status, severity) pairs that select it (None: the default)."""
        return [
            (
                entry,
                None
                if entry.if_any is None
                else frozenset(
                    (RuleStatus(entry.if_any.status), s.value) for s in entry.if_any.severity
                ),
            )
            for entry in self.policy.verdicts
        ]

    @cached_property
    def severity_of(self) -> dict[str, str]:
        """Rule id to severity value, for the verdict policy's hot path."""
        return {r.id: r.meta.severity.value for r in self.rules}

    @cached_property
    def derived_by_field(self) -> dict[str, DerivedRule]:
        return {d.field: d for d in self.derived}

    @cached_property
    def constrained_fields(self) -> frozenset[str]:
        return frozenset(c.spec.name for c in self.constraints)

    @cached_property
    def bounded_fields(self) -> dict[str, tuple[Scalar, ...]]:
        """Derived fields whose bands end with a catch-all (`when: 'true'`), with their band
        values: when such a field is unknown, the values its bands leave possible are passed to
        the screening rules as constraints' possible values are (derive.build_facts), so a
        comparison true or false for all of them is decided (MISDEF class 1 or 2 cannot be 3)."""
        return {
            rule.field: tuple(dict.fromkeys(value for _, value in rule.bands))
            for rule in self.derived
            if rule.bands and rule.bands[-1][0] == Truth(True)
        }

    @cached_property
    def compiled_narrowings(self) -> list[Narrowing]:
        """Every narrowing of every constraint: constraint, field, condition and its compiled
        form, the values it allows, and the fields the condition reads."""
        return [
            (constraint, constraint.spec.name, when, compile_kleene(when), allowed, reads)
            for constraint in self.constraints
            for when, allowed in constraint.narrowings
            for reads in (frozenset(fields_of(when)),)
        ]

    @cached_property
    def explanation_inputs(self) -> dict[str, tuple[str, ...]]:
        """Rule id -> every field its missing-data explanation depends on.

        The fields its condition reads and, for derived ones, their inputs all the way down.
        """
        result = {}
        for rule in self.rules:
            found: set[str] = set()
            pending = list(fields_of(rule.when))
            while pending:
                name = pending.pop()
                if name not in found:
                    found.add(name)
                    derived = self.derived_by_field.get(name)
                    if derived is not None:
                        pending.extend(derived.inputs)
            result[rule.id] = tuple(sorted(found))
        return result

    @cached_property
    def fields_read(self) -> frozenset[str]:
        """Every field a screening rule reads (inputs and derived)."""
        return frozenset(f for r in self.rules for f in r.fields)

    @cached_property
    def canonical(self) -> str:
        """Canonical JSON of everything that changes a result; its sha256 stamps every output."""
        doc = {
            "name": self.name,
            "version": self.version,
            "rules": [
                {
                    **r.meta.model_dump(mode="json", exclude={"cases", "scope", "when"}),
                    "scope": to_text(r.scope) if r.scope else None,
                    "when": to_text(r.when),
                }
                for r in self.rules
            ],
            "derived": [
                {
                    **d.meta.model_dump(
                        mode="json", exclude={"cases", "expression", "bands", "condition"}
                    ),
                    # points and supplied_total are plain data, kept by model_dump above
                    "expression": to_text(d.expression) if d.expression else None,
                    "bands": [[to_text(c), v] for c, v in d.bands],
                    "condition": to_text(d.condition) if d.condition else None,
                }
                for d in self.derived
            ],
            "constraints": [
                {
                    **c.meta.model_dump(mode="json", exclude={"narrowings"}),
                    "narrowings": [
                        [to_text(w), sorted(allowed, key=str)] for w, allowed in c.narrowings
                    ],
                }
                for c in self.constraints
            ],
            "policy": self.policy.model_dump(mode="json"),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()

    @cached_property
    def stamp(self) -> RulesetStamp:
        return RulesetStamp(name=self.name, version=self.version, sha256=self.sha256)

    def field_spec(self, name: str) -> FieldSpec:
        return FIELDS_BY_NAME[name]
