"""The production evaluator: durable-rules decides what fires.

Each rule compiles to up to four durable-rules patterns: scope definitely true / definitely false
and condition definitely true / definitely false (negation normal form of Kleene logic); a part
is unknown when neither of its patterns fires. Usage follows docs/durable-rules-notes.md §7: the
low-level C API, rulesets built once per process, one fixed sid, assert -> drain -> retract, no
Host and no delete_state. Every pattern carries a `kind == "case"` guard. Rules are packed into as
many rulesets as needed so that no assert can match more than MAX_STACK alpha nodes (error 303).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import durable_rules_engine as dre

from engine.derive import Facts
from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.evaluate.base import make_outcome, rule_status
from engine.models import RuleOutcome, Scalar
from engine.rules.condition import (
    NEGATED_OP,
    And,
    Compare,
    Cond,
    Const,
    Expr,
    FieldRef,
    Known,
    Member,
    Not,
    Truth,
)
from engine.rules.ruleset import Ruleset

# durable-rules' alpha-node stack holds 64 entries (MAX_STACK_SIZE); keep a margin.
STACK_BUDGET = 60
SID = "0"
_OPS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_ARITH = {"+": "$add", "-": "$sub", "*": "$mul"}
Pattern = dict[str, Any] | bool  # True / False are patterns folded to a constant


class EngineError(Exception):
    """durable-rules refused something it should not have: a bug in miss-screen."""


# --- compiling conditions to patterns ---------------------------------------------------------


def ruled_out_key(field: str, value: Scalar) -> str:
    """Name of the boolean asserted when a constraint rules `value` out for unknown `field`."""
    domain = FIELDS_BY_NAME[field].domain
    return f"__ro__{field}__{domain.index(value)}"


def _all(parts: list[Pattern]) -> Pattern:
    if any(p is False for p in parts):
        return False
    kept = [p for p in parts if p is not True]
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else {"$and": kept}


def _any(parts: list[Pattern]) -> Pattern:
    if any(p is True for p in parts):
        return True
    kept = [p for p in parts if p is not False]
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else {"$or": kept}


def _expr(expr: Expr) -> Any:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, FieldRef):
        return {"$m": expr.name}
    return {_ARITH[expr.op]: {"$l": _expr(expr.left), "$r": _expr(expr.right)}}


def _compare(field: str, op: str, rhs: Any) -> dict[str, Any]:
    return {field: rhs} if op == "==" else {_OPS[op]: {field: rhs}}


class PatternCompiler:
    """Kleene condition -> (definitely-true pattern, definitely-false pattern)."""

    def __init__(self, constrained: frozenset[str]) -> None:
        self.constrained = constrained

    def both(self, cond: Cond) -> tuple[Pattern, Pattern]:
        if isinstance(cond, Truth):
            return cond.value, not cond.value
        if isinstance(cond, Known):
            present: Pattern = {"$ex": {cond.field: 1}}
            absent: Pattern = {"$nex": {cond.field: 1}}
            return (absent, present) if cond.negated else (present, absent)
        if isinstance(cond, Compare):
            return self._comparison(cond)
        if isinstance(cond, Member):
            true, false = self._membership(cond)
            return (false, true) if cond.negated else (true, false)
        if isinstance(cond, Not):
            true, false = self.both(cond.item)
            return false, true
        pairs = [self.both(item) for item in cond.items]
        trues, falses = [p[0] for p in pairs], [p[1] for p in pairs]
        if isinstance(cond, And):
            return _all(trues), _any(falses)
        return _any(trues), _all(falses)

    def _ruled_out(self, field: str, value: Scalar) -> Pattern:
        if field not in self.constrained:
            return False
        return {ruled_out_key(field, value): True}

    def _comparison(self, cond: Compare) -> tuple[Pattern, Pattern]:
        rhs = _expr(cond.rhs)
        true: Pattern = _compare(cond.field, cond.op, rhs)
        false: Pattern = _compare(cond.field, NEGATED_OP[cond.op], rhs)
        spec = FIELDS_BY_NAME[cond.field]
        if spec.type in (FieldType.enum, FieldType.boolean) and isinstance(cond.rhs, Const):
            # unknown field: `x == v` is false once v is ruled out; `x != v` true likewise
            if cond.op == "==":
                false = _any([false, self._ruled_out(cond.field, cond.rhs.value)])
            else:
                true = _any([true, self._ruled_out(cond.field, cond.rhs.value)])
        return true, false

    def _membership(self, cond: Member) -> tuple[Pattern, Pattern]:
        spec = FIELDS_BY_NAME[cond.field]
        members = set(cond.values)
        true = _any([{cond.field: v} for v in cond.values])
        false = _all([{"$neq": {cond.field: v}} for v in cond.values])
        if spec.type in (FieldType.enum, FieldType.boolean):
            others = [v for v in spec.domain if v not in members]
            if not others:
                return True, False
            if cond.field in self.constrained:
                true = _any([true, _all([self._ruled_out(cond.field, v) for v in others])])
                false = _any([false, _all([self._ruled_out(cond.field, v) for v in cond.values])])
        return true, false


def stack_cost(pattern: Pattern, entries: int = 1) -> tuple[int, int]:
    """Upper bound on alpha-node pushes for a pattern, and how often its last node is pushed.

    Sound over-estimate of durable-rules' DFS stack use: every node is counted as matching, except
    that equality tests of one attribute under one `$or` cannot match together.
    """
    if not isinstance(pattern, dict):
        return 0, entries
    ((key, value),) = pattern.items()
    if key == "$and":
        total = 0
        for part in value:
            pushes, entries = stack_cost(part, entries)
            total += pushes
        return total, entries
    if key == "$or":
        equalities = {next(iter(p)) for p in value if _is_equality(p)}
        if len(equalities) == 1 and all(_is_equality(p) for p in value):
            return 2 * entries, entries  # one leaf and the join node, once per entry
        total, out = 0, 0
        for part in value:
            pushes, branch_out = stack_cost(part, entries)
            total += pushes
            out += branch_out
        return total + out, out
    return entries, entries


def _is_equality(pattern: Pattern) -> bool:
    return (
        isinstance(pattern, dict) and len(pattern) == 1 and not next(iter(pattern)).startswith("$")
    )


# --- packing rules into rulesets --------------------------------------------------------------

PARTS = ("s1", "s0", "w1", "w0")  # scope true / false, when true / false


@dataclass(frozen=True)
class CompiledRule:
    """A rule's four parts: a pattern to emit, or a constant when folded."""

    index: int
    parts: dict[str, Pattern]

    @property
    def cost(self) -> int:
        return sum(stack_cost(p)[0] for p in self.parts.values() if isinstance(p, dict))


def compile_rules(ruleset: Ruleset) -> list[CompiledRule]:
    compiler = PatternCompiler(ruleset.constrained_fields)
    compiled = []
    for index, rule in enumerate(ruleset.rules):
        scope_true, scope_false = compiler.both(rule.scope) if rule.scope else (True, False)
        when_true, when_false = compiler.both(rule.when)
        parts = {"s1": scope_true, "s0": scope_false, "w1": when_true, "w0": when_false}
        compiled.append(CompiledRule(index, parts))
    return compiled


def pack(compiled: list[CompiledRule], budget: int = STACK_BUDGET) -> list[list[CompiledRule]]:
    """Greedy first-fit packing of rules into rulesets whose stack bound stays within budget."""
    bins: list[tuple[int, list[CompiledRule]]] = []
    for rule in sorted(compiled, key=lambda r: -r.cost):
        if rule.cost + 2 > budget:
            raise EngineError(f"rule {rule.index} alone could exceed durable-rules' match stack")
        for i, (used, members) in enumerate(bins):
            if used + rule.cost <= budget:
                bins[i] = (used + rule.cost, [*members, rule])
                break
        else:
            bins.append((2 + rule.cost, [rule]))  # root and guard nodes
    return [sorted(members, key=lambda r: r.index) for _, members in bins]


def ruleset_json(members: list[CompiledRule]) -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for rule in members:
        for part in PARTS:
            pattern = rule.parts[part]
            if isinstance(pattern, dict):
                rules[f"{rule.index}.{part}"] = {
                    "all": [{"m": {"$and": [{"kind": "case"}, pattern]}}]
                }
    return rules


# --- JSON as durable-rules' parser reads it ---------------------------------------------------


def durable_number(value: float) -> str:
    """A float durable-rules parses: its JSON reader accepts an exponent only after a fraction."""
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        return f"{mantissa}.0e{exponent}"
    return text


def to_durable_json(value: Any) -> str:
    """Serialise patterns and facts (dicts, lists, scalars) for the C engine."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return durable_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(k)}: {to_durable_json(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_durable_json(v) for v in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__} for durable-rules")


# --- the other fixed limits of durable-rules (notes §4), checked before any case is seen ---------

MAX_FACT_ATTRIBUTES = 250  # 252 work, 253 raise error 302 (sid and id included)
MAX_NEX_PER_RULESET = 120  # 129 `$nex` under one parent raise error 107
MAX_CHILD_CONDITIONS = 500  # 513 distinct children of one alpha node hang create_ruleset
RESERVED_ATTRIBUTES = ("kind", "sid", "id")


def fnv1a_32(text: str) -> int:
    """durable-rules' 32-bit hash of attribute names (json.c, getStringAndHash)."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def _count(pattern: Pattern, key: str) -> int:
    if isinstance(pattern, dict):
        return sum((k == key) + _count(v, key) for k, v in pattern.items())
    if isinstance(pattern, list):
        return sum(_count(p, key) for p in pattern)
    return 0


def check_limits(groups: list[list[CompiledRule]], attributes: list[str]) -> None:
    """Refuse, at load time, a rule set that could crash or mislead durable-rules."""
    names = [*RESERVED_ATTRIBUTES, *attributes]
    if len(names) > MAX_FACT_ATTRIBUTES:
        raise EngineError(f"{len(names)} attributes per fact; durable-rules takes 252")
    hashes: dict[int, str] = {}
    for name in names:
        other = hashes.setdefault(fnv1a_32(name), name)
        if other != name:
            raise EngineError(f"attribute names {other!r} and {name!r} share a 32-bit hash")
    for n, members in enumerate(groups):
        patterns = [p for r in members for p in r.parts.values() if isinstance(p, dict)]
        if len(patterns) > MAX_CHILD_CONDITIONS:
            raise EngineError(f"ruleset {n} has {len(patterns)} patterns under one guard node")
        nex = sum(_count(p, "$nex") for p in patterns)
        if nex > MAX_NEX_PER_RULESET:
            raise EngineError(f"ruleset {n} has {nex} '$nex' tests; durable-rules takes 128")


# --- evaluation -------------------------------------------------------------------------------

_HANDLES: dict[str, list[int]] = {}  # ruleset sha256 -> handles; built once per process


class DurableEvaluator:
    """Screens facts with durable-rules; one per process, never shared across threads."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.compiled = compile_rules(ruleset)
        self.groups = pack(self.compiled)
        self.fields = sorted(ruleset.fields_read)
        self.ruled_out = sorted(ruleset.constrained_fields & ruleset.fields_read)
        flags = [ruled_out_key(f, v) for f in self.ruled_out for v in FIELDS_BY_NAME[f].domain]
        check_limits(self.groups, [*self.fields, *flags])
        self.handles = _HANDLES.get(ruleset.sha256) or self._create_handles()
        _HANDLES[ruleset.sha256] = self.handles
        # per rule: pattern names and, for parts folded to a constant, that constant
        self._plan = [
            (
                rule,
                tuple(f"{c.index}.{part}" for part in PARTS),
                tuple(None if isinstance(c.parts[p], dict) else bool(c.parts[p]) for p in PARTS),
            )
            for c, rule in zip(self.compiled, ruleset.rules, strict=True)
        ]
        self._ids: Iterator[int] = itertools.count(1)

    def _create_handles(self) -> list[int]:
        handles = []
        for n, members in enumerate(self.groups):
            text = to_durable_json(ruleset_json(members))
            try:
                handles.append(dre.create_ruleset(f"miss-{self.ruleset.sha256[:12]}-{n}", text))
            except Exception as exc:  # the C extension raises its own error type
                raise EngineError(f"durable-rules refused ruleset {n}: {exc}") from exc
        return handles

    def encode(self, facts: Facts) -> dict[str, Scalar]:
        """The fact to assert: only the attributes rules read, plus ruled-out flags."""
        values = facts.values
        fact: dict[str, Scalar] = {f: values[f] for f in self.fields if f in values}
        for field in self.ruled_out:
            possible = facts.possible.get(field)
            if possible is not None:
                for value in FIELDS_BY_NAME[field].domain:
                    if value not in possible:
                        fact[ruled_out_key(field, value)] = True
        return fact

    def fired_parts(self, facts: Facts) -> set[str]:
        """Names (`<rule index>.<part>`) of every pattern durable-rules fired for these facts."""
        body = to_durable_json(self.encode(facts))[1:-1]
        fired: set[str] = set()
        for handle in self.handles:
            fired |= self._run(handle, body)
        return fired

    def _run(self, handle: int, body: str) -> set[str]:
        fired: set[str] = set()
        for _attempt in range(3):
            fact_id = next(self._ids)
            sep = ", " if body else ""
            text = f'{{"kind": "case", "sid": "{SID}", "id": {fact_id}{sep}{body}}}'
            try:
                code, state = dre.assert_fact(handle, text)
                if code == 2:  # 32-bit id hash collision (notes §4.7): retry with a new id
                    continue
                result = dre.start_action_for_state(handle, state)
                message = result[1] if result else None
                while message:
                    fired.add(message[2 : message.index('"', 2)])
                    message = dre.complete_and_start_action(handle, state)
                dre.retract_fact(handle, f'{{"sid": "{SID}", "id": {fact_id}}}')
            except Exception as exc:  # the C extension raises its own error type
                raise EngineError(f"durable-rules failed on a case: {exc}") from exc
            return fired
        raise EngineError("durable-rules refused the case three times (id hash collisions)")

    def evaluate(self, facts: Facts) -> list[RuleOutcome]:
        fired = self.fired_parts(facts)
        outcomes = []
        for rule, names, constants in self._plan:
            scope = _part_value(names[0], names[1], constants[0], constants[1], fired)
            when = _part_value(names[2], names[3], constants[2], constants[3], fired)
            status = rule_status(scope, when)
            outcomes.append(make_outcome(rule, status, when, facts, self.ruleset))
        return outcomes


def _part_value(
    true_name: str,
    false_name: str,
    true_const: bool | None,
    false_const: bool | None,
    fired: set[str],
) -> bool | None:
    """True, false or unknown for one part, from its two patterns (or their folded constants)."""
    if true_const is True or (true_const is None and true_name in fired):
        return True
    if false_const is True or (false_const is None and false_name in fired):
        return False
    return None
