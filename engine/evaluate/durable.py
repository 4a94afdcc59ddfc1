"""The production evaluator: durable-rules decides what fires.

Each rule part (its scope, its condition) compiles to two durable-rules patterns in negation
normal form of Kleene logic: "definitely true" and "unknown" (not definitely true and not
definitely false). A part is true or unknown when that pattern fires and false when neither
does, so each part costs at most one firing and the common case (false: a rule that does not
apply) none. Usage follows
docs/durable-rules-notes.md §7: the low-level C API, rulesets built once per process, one fixed
sid, assert -> drain -> retract, no Host and no delete_state. Every pattern carries a
`kind == "case"` guard, then a group flag: groups turn the alpha network from one wide level into
two narrow ones, which keeps durable-rules' 64-entry match stack (error 303) within bounds for
the whole rule base in a single ruleset. The bound is computed, not hoped for (network.py).
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
from engine.errors import RuleFileError
from engine.evaluate.base import make_outcome, rule_status
from engine.evaluate.network import Node, add_pattern, limit_problems, stack_bound
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
    fields_of,
)
from engine.rules.ruleset import Ruleset

# durable-rules' alpha-node stack holds 64 entries (MAX_STACK_SIZE); keep a margin.
STACK_BUDGET = 60
MAX_GROUPS = 48
# rete.c MAX_SEQUENCE_EXPRESSIONS is 32 per pattern and every $and/$or takes two; one $and is
# the guard and group flag we put around each pattern
MAX_PATTERN_OPERATORS = 14
SID = "0"
_OPS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_ARITH = {"+": "$add", "-": "$sub", "*": "$mul"}
Pattern = dict[str, Any] | bool  # True / False are patterns folded to a constant
GUARD = {"kind": "case"}


class EngineError(Exception):
    """durable-rules refused something it should not have: a bug in miss-screen."""


class ConditionTooComplex(EngineError):
    """A condition whose pattern needs more and/or operators than durable-rules takes."""

    def __init__(self, operators: int) -> None:
        super().__init__(
            f"needs {operators} and/or operators in one durable-rules pattern "
            f"(at most {MAX_PATTERN_OPERATORS}); simplify the condition or split the rule"
        )


def boolean_operators(pattern: Pattern) -> int:
    """`$and`/`$or` nodes in a pattern: each takes two of the 32 expression slots (error 113)."""
    if isinstance(pattern, dict):
        return sum((k in ("$and", "$or")) + boolean_operators(v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return sum(boolean_operators(p) for p in pattern)
    return 0


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
    if not fields_of(expr):  # the parser folds these; an unfolded one would never match
        raise EngineError("an expression without a field reached the durable-rules compiler")
    return {_ARITH[expr.op]: {"$l": _expr(expr.left), "$r": _expr(expr.right)}}


def _compare(field: str, op: str, rhs: Any) -> dict[str, Any]:
    return {field: rhs} if op == "==" else {_OPS[op]: {field: rhs}}


def _absent(field: str) -> dict[str, Any]:
    return {"$nex": {field: 1}}


@dataclass(frozen=True)
class Kleene4:
    """The four NNF patterns of a condition: true, false, not false, not true."""

    true: Pattern
    false: Pattern
    not_false: Pattern
    not_true: Pattern

    def negate(self) -> Kleene4:
        return Kleene4(self.false, self.true, self.not_true, self.not_false)


class PatternCompiler:
    """Kleene condition -> patterns for "definitely true" and "possibly true"."""

    def __init__(self, constrained: frozenset[str]) -> None:
        self.constrained = constrained

    def compile(self, cond: Cond) -> tuple[Pattern, Pattern]:
        """(definitely true, unknown) patterns of a condition.

        "Unknown" is not-false and not-true, so at most one pattern fires. Where that
        conjunction is too long for durable-rules, "not false" stands in: it also fires when
        the condition is true, and the true pattern takes precedence (see _part_value).
        """
        four = self.four(cond)
        unknown = _all([four.not_false, four.not_true])
        if boolean_operators(unknown) > MAX_PATTERN_OPERATORS:
            unknown = four.not_false
        for pattern in (four.true, unknown):
            if boolean_operators(pattern) > MAX_PATTERN_OPERATORS:
                raise ConditionTooComplex(boolean_operators(pattern))
        return four.true, unknown

    def four(self, cond: Cond) -> Kleene4:
        if isinstance(cond, Truth):
            return Kleene4(cond.value, not cond.value, cond.value, not cond.value)
        if isinstance(cond, Known):
            present, absent = {"$ex": {cond.field: 1}}, _absent(cond.field)
            known = Kleene4(present, absent, present, absent)
            return known.negate() if cond.negated else known
        if isinstance(cond, Compare):
            return self._comparison(cond)
        if isinstance(cond, Member):
            member = self._membership(cond)
            return member.negate() if cond.negated else member
        if isinstance(cond, Not):
            return self.four(cond.item).negate()
        parts = [self.four(item) for item in cond.items]
        trues = [p.true for p in parts]
        falses = [p.false for p in parts]
        not_falses = [p.not_false for p in parts]
        not_trues = [p.not_true for p in parts]
        if isinstance(cond, And):
            return Kleene4(_all(trues), _any(falses), _all(not_falses), _any(not_trues))
        return Kleene4(_any(trues), _all(falses), _any(not_falses), _all(not_trues))

    def _ruled_out(self, field: str, value: Scalar) -> Pattern:
        """Pattern of "constraints rule value out" (only asserted while field is unknown)."""
        if field not in self.constrained:
            return False
        return {ruled_out_key(field, value): True}

    def _still_possible(self, field: str, value: Scalar) -> Pattern:
        if field not in self.constrained:
            return True
        return _absent(ruled_out_key(field, value))

    def _comparison(self, cond: Compare) -> Kleene4:
        rhs = _expr(cond.rhs)
        # durable-rules can match `$m` references to a missing field (events.c reads a stale
        # result), so every field the right side reads is required to exist first
        present = [{"$ex": {f: 1}} for f in sorted(fields_of(cond.rhs))]
        holds = _all([*present, _compare(cond.field, cond.op, rhs)])
        fails = _all([*present, _compare(cond.field, NEGATED_OP[cond.op], rhs)])
        missing = _any([_absent(f) for f in sorted({cond.field} | fields_of(cond.rhs))])
        spec = FIELDS_BY_NAME[cond.field]
        if spec.type in (FieldType.enum, FieldType.boolean) and isinstance(cond.rhs, Const):
            value = cond.rhs.value
            equal = _compare(cond.field, "==", value)
            unequal = _compare(cond.field, "!=", value)
            # unknown field: `x == v` is false once v is ruled out, and `x != v` true
            eq = Kleene4(
                true=equal,
                false=_any([unequal, self._ruled_out(cond.field, value)]),
                not_false=_all([_any([equal, missing]), self._still_possible(cond.field, value)]),
                not_true=_any([unequal, missing]),
            )
            return eq if cond.op == "==" else eq.negate()
        return Kleene4(holds, fails, _any([holds, missing]), _any([fails, missing]))

    def _membership(self, cond: Member) -> Kleene4:
        spec = FIELDS_BY_NAME[cond.field]
        field, members = cond.field, list(cond.values)
        others = [v for v in spec.domain if v not in set(members)]
        finite = spec.type in (FieldType.enum, FieldType.boolean)
        any_equal = _any([_compare(field, "==", v) for v in members])
        all_unequal = _all([_compare(field, "!=", v) for v in members])
        missing = _absent(field)
        if finite and not others:  # the list holds every value: true whatever is unknown
            return Kleene4(True, False, True, False)
        out_members = _all([self._ruled_out(field, v) for v in members]) if finite else False
        out_others = _all([self._ruled_out(field, v) for v in others]) if finite else False
        return Kleene4(
            true=_any([any_equal, out_others]),
            false=_any([all_unequal, out_members]),
            not_false=_all(
                [
                    _any([any_equal, missing]),
                    _any([self._still_possible(field, v) for v in members]) if finite else True,
                ]
            ),
            not_true=_all(
                [
                    _any([all_unequal, missing]),
                    _any([self._still_possible(field, v) for v in others]) if finite else True,
                ]
            ),
        )


# --- laying the patterns out in rulesets ------------------------------------------------------

PARTS = ("s1", "s?", "w1", "w?")  # scope true / unknown, when true / unknown


@dataclass(frozen=True)
class CompiledRule:
    """A rule's parts: a pattern to emit, or a constant when folded."""

    index: int
    parts: dict[str, Pattern]

    def patterns(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for part in PARTS:
            pattern = self.parts[part]
            if isinstance(pattern, dict):
                yield f"{self.index}.{part}", pattern


def compile_rules(ruleset: Ruleset) -> list[CompiledRule]:
    compiler = PatternCompiler(ruleset.constrained_fields)
    compiled = []
    for index, rule in enumerate(ruleset.rules):
        try:
            scope_true, scope_unknown = (
                compiler.compile(rule.scope) if rule.scope else (True, False)
            )
            when_true, when_unknown = compiler.compile(rule.when)
        except ConditionTooComplex as exc:
            raise RuleFileError(str(exc), rule.path, key="when") from None
        parts = {"s1": scope_true, "s?": scope_unknown, "w1": when_true, "w?": when_unknown}
        compiled.append(CompiledRule(index, parts))
    return compiled


def group_key(group: int) -> str:
    return f"__g{group}"


@dataclass(frozen=True)
class Layout:
    """The rulesets to create: per ruleset, its grouped patterns by name, and the group count."""

    rulesets: list[dict[str, dict[str, Any]]]
    groups: int
    bounds: list[int]


def _grouped(
    patterns: list[tuple[str, dict[str, Any]]], groups: int
) -> tuple[dict[str, dict[str, Any]], Node]:
    """Split patterns (similar ones together) into groups behind group flags; model the network."""
    ordered = sorted(patterns, key=lambda item: json.dumps(item[1], sort_keys=True))
    size = -(-len(ordered) // groups)
    root = Node(("", "root", ""))
    guard = root.child(("kind", "$eq", '"case"'))
    rules: dict[str, dict[str, Any]] = {}
    for n, (name, pattern) in enumerate(ordered):
        flag = {group_key(n // size): 1}
        add_pattern(guard, {"$and": [flag, pattern]})
        rules[name] = {"all": [{"m": {"$and": [GUARD, flag, pattern]}}]}
    return rules, root


def layout(compiled: list[CompiledRule], budget: int = STACK_BUDGET) -> Layout:
    """The fewest rulesets, and the fewest groups, whose worst-case stack stays within budget."""
    patterns = [item for rule in compiled for item in rule.patterns()]
    for count in range(1, len(compiled) + 1):
        share = -(-len(compiled) // count)
        chunks = [compiled[i : i + share] for i in range(0, len(compiled), share)]
        found = []
        for chunk in chunks:
            chunk_patterns = [item for rule in chunk for item in rule.patterns()]
            # about 40 patterns fit a group: start near there instead of at one group
            for groups in range(max(1, len(chunk_patterns) // 44), MAX_GROUPS + 1):
                rules, root = _grouped(chunk_patterns, groups)
                bound = stack_bound(root)
                if bound <= budget and not limit_problems(root):
                    found.append((rules, bound, groups))
                    break
            else:
                break
        if len(found) == len(chunks):
            return Layout(
                rulesets=[rules for rules, _, _ in found],
                groups=max(groups for _, _, groups in found),
                bounds=[bound for _, bound, _ in found],
            )
    raise EngineError(f"no layout keeps {len(patterns)} patterns within durable-rules' limits")


# --- JSON as durable-rules' parser reads it ---------------------------------------------------


def durable_number(value: float) -> str:
    """A float durable-rules parses: its JSON reader accepts an exponent only after a fraction."""
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        return f"{mantissa}.0e{exponent}"
    return text


def _scalar(value: Scalar) -> str:
    """One fact value as JSON text durable-rules reads (enum values are plain ASCII words)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    return durable_number(value)


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
RESERVED_ATTRIBUTES = ("kind", "sid", "id", "$forward")  # $forward: the or-join nodes' name


def fnv1a_32(text: str) -> int:
    """durable-rules' 32-bit hash of attribute names (json.c, getStringAndHash)."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def check_attributes(attributes: list[str]) -> None:
    """Refuse facts durable-rules cannot hold: too many attributes, colliding name hashes."""
    names = [*RESERVED_ATTRIBUTES, *attributes]
    if len(names) > MAX_FACT_ATTRIBUTES:
        raise EngineError(f"{len(names)} attributes per fact; durable-rules takes 252")
    hashes: dict[int, str] = {}
    for name in names:
        other = hashes.setdefault(fnv1a_32(name), name)
        if other != name:
            raise EngineError(f"attribute names {other!r} and {name!r} share a 32-bit hash")


# --- evaluation -------------------------------------------------------------------------------

_HANDLES: dict[str, list[int]] = {}  # ruleset sha256 -> handles; built once per process


class DurableEvaluator:
    """Screens facts with durable-rules; one per process, never shared across threads."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.compiled = compile_rules(ruleset)
        self.layout = layout(self.compiled)
        self.fields = sorted(ruleset.fields_read)
        self.ruled_out = sorted(ruleset.constrained_fields & ruleset.fields_read)
        flags = [ruled_out_key(f, v) for f in self.ruled_out for v in FIELDS_BY_NAME[f].domain]
        group_flags = [group_key(g) for g in range(self.layout.groups)]
        check_attributes([*self.fields, *flags, *group_flags])
        self.handles = _HANDLES.get(ruleset.sha256) or self._create_handles()
        _HANDLES[ruleset.sha256] = self.handles
        self._prefix = '"kind": "case", "sid": "0", ' + "".join(
            f'"{flag}": 1, ' for flag in group_flags
        )
        # per rule, the folded constant of each part (None where a pattern decides it) ...
        self._constants = [
            tuple(None if isinstance(c.parts[p], dict) else bool(c.parts[p]) for p in PARTS)
            for c in self.compiled
        ]
        # ... each pattern name -> (rule index, part), and each rule's outcome if nothing fires
        self._names = {
            f"{c.index}.{part}": (c.index, part) for c in self.compiled for part in PARTS
        }
        empty: set[str] = set()
        self._defaults = [
            self._outcome(index, empty, Facts(values={})) for index in range(len(self.compiled))
        ]
        self._ids: Iterator[int] = itertools.count(1)
        self._keys = [(name, f"{json.dumps(name)}: ") for name in self.fields]
        self._flag_keys = [
            (f, [(v, f'"{ruled_out_key(f, v)}": true') for v in FIELDS_BY_NAME[f].domain])
            for f in self.ruled_out
        ]

    def _create_handles(self) -> list[int]:
        handles = []
        for n, rules in enumerate(self.layout.rulesets):
            try:
                handle = dre.create_ruleset(
                    f"miss-{self.ruleset.sha256[:12]}-{n}", to_durable_json(rules)
                )
            except Exception as exc:  # the C extension raises its own error type
                raise EngineError(f"durable-rules refused ruleset {n}: {exc}") from exc
            handles.append(handle)
        return handles

    def body(self, facts: Facts) -> str:
        """The fact's attributes as durable-rules JSON text (hot path: no generic encoder)."""
        values = facts.values
        parts = [key + _scalar(values[name]) for name, key in self._keys if name in values]
        for field, flags in self._flag_keys:
            possible = facts.possible.get(field)
            if possible is not None:
                parts.extend(key for value, key in flags if value not in possible)
        return ", ".join(parts)

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
        body = self.body(facts)
        fired: set[str] = set()
        for handle in self.handles:
            self._run(handle, body, fired)
        return fired

    def _run(self, handle: int, body: str, fired: set[str]) -> None:
        for _attempt in range(3):
            fact_id = next(self._ids)
            text = f'{{{self._prefix}"id": {fact_id}{", " if body else ""}{body}}}'
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
            return
        raise EngineError("durable-rules refused the case three times (id hash collisions)")

    def _outcome(self, index: int, parts: set[str], facts: Facts) -> RuleOutcome:
        s1, s_unknown, w1, w_unknown = self._constants[index]
        scope = _part_value(s1, s_unknown, "s1" in parts, "s?" in parts)
        when = _part_value(w1, w_unknown, "w1" in parts, "w?" in parts)
        rule = self.ruleset.rules[index]
        return make_outcome(rule, rule_status(scope, when), when, facts, self.ruleset)

    def evaluate(self, facts: Facts) -> list[RuleOutcome]:
        return self.outcomes_from(self.fired_parts(facts), facts)

    def outcomes_from(self, fired: set[str], facts: Facts) -> list[RuleOutcome]:
        """Every rule's outcome from the names of the patterns that fired."""
        touched: dict[int, set[str]] = {}
        names = self._names
        for name in fired:
            index, part = names[name]
            touched.setdefault(index, set()).add(part)
        outcomes = list(self._defaults)  # most rules fire nothing: false scope or condition
        for index, parts in touched.items():
            outcomes[index] = self._outcome(index, parts, facts)
        return outcomes


def _part_value(
    true_const: bool | None, unknown_const: bool | None, true_fired: bool, unknown_fired: bool
) -> bool | None:
    """True, unknown or false for one part, from its two patterns (or their folded constants)."""
    if true_const is True or (true_const is None and true_fired):
        return True
    if unknown_const is True or (unknown_const is None and unknown_fired):
        return None
    return False
