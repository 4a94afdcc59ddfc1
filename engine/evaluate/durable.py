"""The production evaluator: durable-rules decides every rule's status.

Each rule compiles to one pattern per status it can take (fired, not fired, not evaluable,
conditional on an unknown scope), built from the negation normal form of Kleene logic: for a
scoped rule, "not fired" is "scope not false and condition false", "fired" is "scope true and
condition true", and so on. The status that takes no pattern (not applicable for a scoped rule,
not fired for the others) is what a case gets when nothing matches, so a rule that does not
apply costs nothing, and a rule a case touches costs one match (a few where the conjunctions
of its status overlap; about 13 matches per case on the synthetic cohort). Each status
pattern is then rewritten as the plain conjunctions whose union it is (conjunctions.py):
durable-rules walks an `$or` through a fresh join node it never shares, and a chain of tests
once. Identical conjunctions become one durable-rules rule that stands for all of its statuses.

Usage follows docs/durable-rules-notes.md §7 and §8: the low-level C API, rulesets built once
per process, one fixed sid, no Host and no delete_state; cases go in batches (assert_facts ->
drain every action -> retract_facts), and every rule carries `cap`, so one action delivers all
matches of its conjunction in the batch. Every conjunction starts with a `kind == "case"` guard,
then a group test (`kind != "g<n>"`): groups turn the alpha network from one wide level into two
narrow ones, which keeps durable-rules' 64-entry match stack (error 303) within bounds for the
whole rule base in a single ruleset. The bound is computed, not hoped for (network.py). Facts
carry short attribute names and enum and boolean values as small integers: every match carries
the whole fact's text.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import durable_rules_engine as dre

from engine.derive import Facts
from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.errors import RuleFileError
from engine.evaluate.base import (
    EXPLAINED_STATUSES,
    explained_outcome,
)
from engine.evaluate.conjunctions import Key, alternatives, whole
from engine.evaluate.network import (
    CHILD_LIMIT,
    Node,
    add_pattern,
    alpha_key,
    limit_problems,
    stack_bound,
)
from engine.models import RuleOutcome, RuleStatus, Scalar, settled_outcome
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
    Or,
    Truth,
    fields_of,
)
from engine.rules.loader import read_yaml_file
from engine.rules.ruleset import Ruleset

# durable-rules' alpha-node stack holds 64 entries (MAX_STACK_SIZE); keep a margin.
STACK_BUDGET = 60
MAX_GROUPS = 48
# conjunctions one status pattern may expand to; the bundled rules need at most 116
MAX_ALTERNATIVES = 256
# a conjunction with parts kept whole (too wide to expand): rete.c MAX_SEQUENCE_EXPRESSIONS is
# 32 per pattern and every $and/$or takes two; one $and is the guard and group test around it
MAX_PATTERN_OPERATORS = 14
MAX_ACTIONS = 4000  # durable-rules rules per ruleset: rete.c MAX_ACTIONS is 4096
MAX_RULESETS = 8  # the layout search stops here: a rule base needing more is refused
SID = "0"
# cases asserted together in one call (each in its own slot, with the slot number as its id), and
# matches of one conjunction delivered in one action (`cap`): one action per conjunction per
# batch of cases instead of one per match. More matches than the cap arrive in further actions.
SLOTS = 512
CAP = 1000
_OPS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
_ARITH = {"+": "$add", "-": "$sub", "*": "$mul"}
Pattern = dict[str, Any] | bool  # True / False are patterns folded to a constant
GUARD = {"kind": "case"}


class EngineError(Exception):
    """durable-rules refused something it should not have: a bug in miss-screen."""


class LayoutError(EngineError):
    """No layout of the conjunctions fits durable-rules' limits; `rules` are the indices of
    the rules to blame (those whose conjunctions fit no layout even alone, if any)."""

    def __init__(self, message: str, rules: list[int]) -> None:
        super().__init__(message)
        self.rules = rules


# --- compiling conditions to patterns ---------------------------------------------------------


def ruled_out_key(field: str, values: frozenset[Scalar]) -> str:
    """Name of the flag asserted when constraints rule out every value of `values` for unknown
    `field` (e.g. `__ro__mis_technique__0_3`: the domain positions of the set)."""
    domain = FIELDS_BY_NAME[field].domain
    return f"__ro__{field}__" + "_".join(str(i) for i in sorted(domain.index(v) for v in values))


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
class KleenePatterns:
    """The NNF patterns of a condition: true, false, not false, not true, and unknown.

    `unknown` is built directly (an atom is unknown when its field is missing and the
    constraints leave it open; a conjunction when no part is false and some part is unknown)
    rather than as `not_false and not_true`: the same truth, in far fewer tests.
    """

    true: Pattern
    false: Pattern
    not_false: Pattern
    not_true: Pattern
    unknown: Pattern

    def negate(self) -> KleenePatterns:
        return KleenePatterns(self.false, self.true, self.not_true, self.not_false, self.unknown)


class PatternCompiler:
    """Kleene condition -> its durable-rules patterns (KleenePatterns)."""

    def __init__(self, constrained: frozenset[str]) -> None:
        self.constrained = constrained
        # value sets whose ruled-out flag the patterns read, per field: the evaluator asserts
        # one flag per set rather than one per value, so "some of these is still possible" is
        # one `$nex` test instead of an `$or` that fires once for every possible value
        self.value_sets: dict[str, set[frozenset[Scalar]]] = {}

    def kleene(self, cond: Cond) -> KleenePatterns:
        if isinstance(cond, Truth):
            return KleenePatterns(cond.value, not cond.value, cond.value, not cond.value, False)
        if isinstance(cond, Known):
            present, absent = {"$ex": {cond.field: 1}}, _absent(cond.field)
            known = KleenePatterns(present, absent, present, absent, False)
            return known.negate() if cond.negated else known
        if isinstance(cond, Compare):
            return self._comparison(cond)
        if isinstance(cond, Member):
            member = self._membership(cond)
            return member.negate() if cond.negated else member
        if isinstance(cond, Not):
            return self.kleene(cond.item).negate()
        parts = [self.kleene(item) for item in cond.items]
        trues = [p.true for p in parts]
        falses = [p.false for p in parts]
        not_falses = [p.not_false for p in parts]
        not_trues = [p.not_true for p in parts]
        some_unknown = _any([p.unknown for p in parts])
        if isinstance(cond, And):  # unknown: no part false, some part unknown
            return KleenePatterns(
                _all(trues),
                _any(falses),
                _all(not_falses),
                _any(not_trues),
                _all([*not_falses, some_unknown]),
            )
        return KleenePatterns(  # unknown: no part true, some part unknown
            _any(trues),
            _all(falses),
            _any(not_falses),
            _all(not_trues),
            _all([*not_trues, some_unknown]),
        )

    def _flag(self, field: str, values: Sequence[Scalar]) -> str:
        chosen = frozenset(values)
        self.value_sets.setdefault(field, set()).add(chosen)
        return ruled_out_key(field, chosen)

    def _ruled_out(self, field: str, values: Sequence[Scalar]) -> Pattern:
        """Pattern of "constraints rule out every one of values" (only while field is unknown)."""
        if not values:
            return True
        if field not in self.constrained:
            return False
        return {self._flag(field, values): True}

    def _still_possible(self, field: str, values: Sequence[Scalar]) -> Pattern:
        """Pattern of "some of values is still possible": not all of them ruled out."""
        if not values:
            return False
        if field not in self.constrained:
            return True
        return _absent(self._flag(field, values))

    def _comparison(self, cond: Compare) -> KleenePatterns:
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
            eq = KleenePatterns(
                true=equal,
                false=_any([unequal, self._ruled_out(cond.field, [value])]),
                not_false=_all([_any([equal, missing]), self._still_possible(cond.field, [value])]),
                not_true=_any([unequal, missing]),
                # missing, and v still possible: with one value left the field is inferred
                unknown=_all([missing, self._still_possible(cond.field, [value])]),
            )
            return eq if cond.op == "==" else eq.negate()
        return KleenePatterns(holds, fails, _any([holds, missing]), _any([fails, missing]), missing)

    def _membership(self, cond: Member) -> KleenePatterns:
        spec = FIELDS_BY_NAME[cond.field]
        field, members = cond.field, list(cond.values)
        others = [v for v in spec.domain if v not in set(members)]
        finite = spec.type in (FieldType.enum, FieldType.boolean)
        any_equal = _any([_compare(field, "==", v) for v in members])
        all_unequal = _all([_compare(field, "!=", v) for v in members])
        missing = _absent(field)
        if finite and not others:  # the list holds every value: true whatever is unknown
            return KleenePatterns(True, False, True, False, False)
        out_members = self._ruled_out(field, members) if finite else False
        out_others = self._ruled_out(field, others) if finite else False
        return KleenePatterns(
            true=_any([any_equal, out_others]),
            false=_any([all_unequal, out_members]),
            not_false=_all(
                [
                    _any([any_equal, missing]),
                    self._still_possible(field, members) if finite else True,
                ]
            ),
            not_true=_all(
                [
                    _any([all_unequal, missing]),
                    self._still_possible(field, others) if finite else True,
                ]
            ),
            unknown=_all(
                [
                    missing,
                    self._still_possible(field, members) if finite else True,
                    self._still_possible(field, others) if finite else True,
                ]
            ),
        )


# --- one pattern per status, as conjunctions, laid out in rulesets -----------------------------

# a rule's statuses, one bit each, and the condition's value in each: a case matches at most one
# of a rule's status patterns, so a mask with two bits set is a bug, reported as such
STATUS_BITS: dict[int, tuple[RuleStatus, bool | None]] = {
    1: (RuleStatus.not_fired, False),
    2: (RuleStatus.fired, True),
    4: (RuleStatus.not_evaluable, None),
    8: (RuleStatus.conditional, True),
    16: (RuleStatus.conditional, None),
}
_BIT = {value: bit for bit, value in STATUS_BITS.items()}


@dataclass(frozen=True)
class CompiledRule:
    """A rule's status patterns by status bit, and its status when none of them matches."""

    index: int
    patterns: dict[int, dict[str, Any]]
    default: tuple[RuleStatus, bool | None]


@dataclass(frozen=True)
class Compiled:
    """Every rule's status patterns, and the value sets whose ruled-out flags they read."""

    rules: list[CompiledRule]
    value_sets: dict[str, list[frozenset[Scalar]]]


def status_patterns(
    scope: KleenePatterns | None, when: KleenePatterns
) -> tuple[dict[int, dict[str, Any]], tuple[RuleStatus, bool | None]]:
    """A rule's pattern for each status bit, and the status a case has when none matches.

    The status that needs no pattern is the common one: not applicable (scope false) for a
    scoped rule, not fired (condition false) for the others. Patterns are exclusive because
    true, false and unknown are.
    """
    if scope is None or scope.true is True:
        patterns = {
            _BIT[RuleStatus.fired, True]: when.true,
            _BIT[RuleStatus.not_evaluable, None]: when.unknown,
        }
        default: tuple[RuleStatus, bool | None] = (RuleStatus.not_fired, False)
    else:
        patterns = {
            _BIT[RuleStatus.not_fired, False]: _all([scope.not_false, when.false]),
            _BIT[RuleStatus.fired, True]: _all([scope.true, when.true]),
            _BIT[RuleStatus.not_evaluable, None]: _all([scope.true, when.unknown]),
            _BIT[RuleStatus.conditional, True]: _all([scope.unknown, when.true]),
            _BIT[RuleStatus.conditional, None]: _all([scope.unknown, when.unknown]),
        }
        default = (RuleStatus.not_applicable, None)
    for bit, pattern in patterns.items():
        if pattern is True:  # this status holds for every case
            default = STATUS_BITS[bit]
    return {bit: p for bit, p in patterns.items() if isinstance(p, dict)}, default


def compile_rules(ruleset: Ruleset) -> Compiled:
    compiler = PatternCompiler(ruleset.constrained_fields)
    compiled = []
    for index, rule in enumerate(ruleset.rules):
        scope = compiler.kleene(rule.scope) if rule.scope is not None else None
        patterns, default = status_patterns(scope, compiler.kleene(rule.when))
        compiled.append(CompiledRule(index, patterns, default))
    value_sets = {
        field: sorted(sets, key=lambda values: ruled_out_key(field, values))
        for field, sets in sorted(compiler.value_sets.items())
    }
    return Compiled(compiled, value_sets)


# durable-rules rules to create: each a conjunction of tests, and the (rule index, status bit)
# pairs it stands for
Conjunctions = list[tuple[list[dict[str, Any]], tuple[tuple[int, int], ...]]]


def conjunctions(
    ruleset: Ruleset,
    compiled: list[CompiledRule],
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Conjunctions:
    """Every status pattern as conjunctions; one shared by several statuses only once.

    A part too wide to expand (MAX_ALTERNATIVES) stays whole inside its conjunctions, with its
    `$or`s, as long as durable-rules takes the result (MAX_PATTERN_OPERATORS); such a
    conjunction may match a case once per true branch, which sets the same status bit.
    `convert` rewrites each test (the evaluator gives attributes their short names).
    """
    found: dict[frozenset[Key], tuple[list[dict[str, Any]], list[tuple[int, int]]]] = {}
    for rule in compiled:
        for bit, pattern in rule.patterns.items():
            for tests in alternatives(pattern, MAX_ALTERNATIVES, convert):
                operators = sum(boolean_operators(test) for test in tests.values())
                if operators > MAX_PATTERN_OPERATORS:
                    raise RuleFileError(
                        f"scope and condition together need {operators} and/or operators in "
                        f"one durable-rules pattern (at most {MAX_PATTERN_OPERATORS}), even "
                        f"split into up to {MAX_ALTERNATIVES} alternatives; simplify the "
                        "condition or split the rule",
                        ruleset.rules[rule.index].path,
                        key="when",
                    )
                entry = found.setdefault(frozenset(tests), (list(tests.values()), []))
                entry[1].append((rule.index, bit))
    return [(tests, tuple(targets)) for tests, targets in found.values()]


def boolean_operators(pattern: Pattern) -> int:
    """`$and`/`$or` nodes in a pattern: each takes two of the 32 expression slots (error 113)."""
    if isinstance(pattern, dict):
        return sum((k in ("$and", "$or")) + boolean_operators(v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return sum(boolean_operators(p) for p in pattern)
    return 0


def group_test(group: int) -> dict[str, Any]:
    """The test that opens a group: `kind != "g<n>"`, true for every case.

    Distinct tests make distinct alpha nodes under the guard, so each group is its own
    branch; testing `kind`, which every case carries, puts no attribute in the fact.
    """
    return {"$neq": {"kind": f"g{group}"}}


@dataclass(frozen=True)
class Layout:
    """The rulesets to create (as rules by name, and as durable-rules JSON text), what each
    rule name stands for, the group count and each ruleset's worst-case stack."""

    rulesets: list[dict[str, dict[str, Any]]]
    texts: list[str]
    targets: dict[str, tuple[tuple[int, int], ...]]
    groups: int
    bounds: list[int]


class _Tests:
    """Each test's JSON text and alpha-node key, computed once: conjunctions share their test
    objects. Keyed by identity, each entry holding its test so that the id stays its own."""

    def __init__(self) -> None:
        self.texts: dict[int, tuple[dict[str, Any], str]] = {}
        self.nodes: dict[int, tuple[dict[str, Any], tuple[str, str, str]]] = {}

    def text(self, test: dict[str, Any]) -> str:
        found = self.texts.get(id(test))
        if found is None:
            found = self.texts[id(test)] = (test, to_durable_json(test))
        return found[1]

    def node(self, test: dict[str, Any]) -> tuple[str, str, str]:
        found = self.nodes.get(id(test))
        if found is None:
            found = self.nodes[id(test)] = (test, alpha_key(test))
        return found[1]


def _grouped(items: Conjunctions, groups: int, first: int, tests: _Tests) -> tuple[Layout, Node]:
    """Split conjunctions (similar ones together) into groups behind group tests; model the
    network. Rule names are numbers from `first` on: short, since each action carries one."""
    texts = [", ".join(map(tests.text, conjunction)) for conjunction, _ in items]
    order = sorted(range(len(items)), key=texts.__getitem__)
    size = -(-len(order) // groups)
    heads = [f"{to_durable_json(GUARD)}, {to_durable_json(group_test(g))}" for g in range(groups)]
    root = Node(("", "root", ""))
    guard = root.child(alpha_key(GUARD))
    rules: dict[str, dict[str, Any]] = {}
    rule_texts: list[str] = []
    targets: dict[str, tuple[tuple[int, int], ...]] = {}
    for n, item in enumerate(order):
        conjunction, stands_for = items[item]
        flag = group_test(n // size)
        node = guard.child(alpha_key(flag))
        for test in conjunction:  # a part kept whole brings its $or join nodes
            node = add_pattern(node, test) if whole(test) else node.child(tests.node(test))
        name = f"r{first + n}"
        rules[name] = {"all": [{"m": {"$and": [GUARD, flag, *conjunction]}}], "cap": CAP}
        chain = f"{heads[n // size]}, {texts[item]}"
        rule_texts.append(f'"{name}": {{"all": [{{"m": {{"$and": [{chain}]}}}}], "cap": {CAP}}}')
        targets[name] = stands_for
    text = "{" + ", ".join(rule_texts) + "}"
    return Layout([rules], [text], targets, groups, [stack_bound(root)]), root


def _fits_alone(item: tuple[list[dict[str, Any]], Any], budget: int, tests: _Tests) -> bool:
    """Whether one conjunction fits durable-rules' limits in a ruleset of its own."""
    candidate, root = _grouped([item], 1, 0, tests)
    return candidate.bounds[0] <= budget and not limit_problems(root)


def layout(items: Conjunctions, budget: int = STACK_BUDGET) -> Layout:
    """The fewest rulesets, and the fewest groups, whose worst-case stack stays within budget.

    Bounded: at most MAX_RULESETS rulesets are tried, and when the first try fails, a
    conjunction that fits no ruleset even alone (a list of 600 values, say) is named at once
    rather than searched around.
    """
    if not items:  # every rule folded to a constant: nothing for durable-rules to match
        return Layout(rulesets=[], texts=[], targets={}, groups=0, bounds=[])
    tests = _Tests()
    first = -(-len(items) // MAX_ACTIONS) or 1
    for count in range(first, min(first + MAX_RULESETS, len(items) + 1)):
        if count == first + 1:  # the first try failed: is some conjunction impossible anyway?
            alone = [item for item in items if not _fits_alone(item, budget, tests)]
            if alone:
                raise LayoutError(
                    "its condition makes a durable-rules pattern too wide (more than "
                    f"{CHILD_LIMIT} alternatives under one test, or a match stack over {budget})"
                    "; narrow the condition or split the rule",
                    sorted({rule for _, targets in alone for rule, _ in targets}),
                )
        share = -(-len(items) // count)
        chunks = [items[i : i + share] for i in range(0, len(items), share)]
        found: list[Layout] = []
        for n, chunk in enumerate(chunks):
            # about 40 conjunctions fit a group: start near there instead of at one group
            for groups in range(min(max(1, len(chunk) // 44), MAX_GROUPS), MAX_GROUPS + 1):
                candidate, root = _grouped(chunk, groups, n * share, tests)
                if candidate.bounds[0] <= budget and not limit_problems(root):
                    found.append(candidate)
                    break
            else:
                break
        if len(found) == len(chunks):
            return Layout(
                rulesets=[part.rulesets[0] for part in found],
                texts=[part.texts[0] for part in found],
                targets={name: t for part in found for name, t in part.targets.items()},
                groups=max(part.groups for part in found),
                bounds=[part.bounds[0] for part in found],
            )
    per_rule: dict[int, int] = {}
    for _, targets in items:
        for rule, _ in targets:
            per_rule[rule] = per_rule.get(rule, 0) + 1
    heaviest = sorted(per_rule, key=lambda rule: (-per_rule[rule], rule))[:5]
    raise LayoutError(
        f"the rules need {len(items)} durable-rules patterns, more than {MAX_RULESETS} rulesets "
        "hold within durable-rules' limits; this rule is among those with the most patterns: "
        "simplify its condition",
        sorted(heaviest),
    )


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
    if type(value) is int:  # the common cases first: numbers (enums and booleans are cached)
        return str(value)
    if type(value) is float:
        return durable_number(value)
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
    """Serialise patterns and facts (dicts, lists, scalars) for the C engine.

    json.dumps writes the same text, except for floats with an exponent and no fraction
    (`1e-05`), which durable-rules misreads: any text with a digit before an `e` (perhaps
    only in a string) is written the slow way, which spells those `1.0e-05`.
    """
    text = json.dumps(value, ensure_ascii=False)
    if _DIGIT_E.search(text) is None:
        return text
    return _durable_json(value)


_DIGIT_E = re.compile(r"\de")


def _durable_json(value: Any) -> str:
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
            "{" + ", ".join(f"{json.dumps(k)}: {_durable_json(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_durable_json(v) for v in value) + "]"
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


def _when_line(path: str) -> int | None:
    """The line of a rule file's `when:` key (errors only: it reads the file again)."""
    try:
        return read_yaml_file(Path(path)).line_of(("when",))
    except RuleFileError:
        return None


def _blame(ruleset: Ruleset, indices: Sequence[int], message: str) -> RuleFileError:
    """One RuleFileError per rule to blame, at its `when:` line."""
    errors = [
        RuleFileError(message, ruleset.rules[i].path, _when_line(ruleset.rules[i].path), "when")
        for i in indices
    ]
    first, *rest = errors or [RuleFileError(message, ruleset.directory)]
    first.extra = rest
    return first


def check_rule_attributes(ruleset: Ruleset, count: int) -> None:
    """Refuse rules that need more attributes per fact than durable-rules holds (error 302),
    naming the rule files that read the most of them: fields, and ruled-out flags (one per
    set of values a rule tests on a field that constraints narrow)."""
    limit = MAX_FACT_ATTRIBUTES - len(RESERVED_ATTRIBUTES)
    if count <= limit:
        return
    reads: dict[int, int] = {}
    for index, rule in enumerate(ruleset.rules):
        compiler = PatternCompiler(ruleset.constrained_fields)
        for cond in (rule.scope, rule.when):
            if cond is not None:
                compiler.kleene(cond)
        flags = sum(len(sets) for sets in compiler.value_sets.values())
        reads[index] = len(rule.fields) + flags
    heaviest = sorted(reads, key=lambda i: (-reads[i], i))[:5]
    raise _attribute_error(ruleset, heaviest, reads, count, limit)


def _attribute_error(
    ruleset: Ruleset, heaviest: list[int], reads: dict[int, int], count: int, limit: int
) -> RuleFileError:
    errors = [
        RuleFileError(
            f"the rules read {count} attributes per case (fields and ruled-out value sets), "
            f"more than the {limit} durable-rules holds; this rule reads {reads[i]} of them "
            "(among the most): test fewer distinct value sets or fields",
            ruleset.rules[i].path,
            _when_line(ruleset.rules[i].path),
            "when",
        )
        for i in sorted(heaviest)
    ]
    first, *rest = errors
    first.extra = rest
    return first


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


@dataclass(frozen=True)
class HandleSet:
    """The durable-rules rulesets of one ruleset in this process, with the lock that keeps
    their one fixed session to one caller at a time.

    Process-level by durable-rules' nature: a ruleset handle lives in the C extension's one
    global table, building one leaks memory that delete_ruleset never frees (so each is built
    once per process and reused by every evaluator of the same rules), and two threads in one
    handle and session lose firings (docs/durable-rules-notes.md §3). Separate handles per
    thread would be safe but gain nothing: the C code never releases the GIL.
    """

    handles: list[int]
    lock: threading.Lock


# ruleset sha256 -> its handles, built once per process; _REGISTRY guards building them
_HANDLES: dict[str, HandleSet] = {}
_REGISTRY = threading.Lock()
_BROKEN: set[int] = set()  # handles durable-rules failed in: their state cannot be trusted
_MATCH = re.compile(r'\{"m":\{"id":(\d+)')  # a match in an action message: its fact's id
# the outcome table's mark for a mask of two statuses at once (never shared with a real one)
_CONFLICT = RuleOutcome(rule_id="-", status=RuleStatus.not_applicable)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (if it runs) for the block."""
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()


class _Texts(dict[int, str]):
    """Texts by number, each made by `make` the first time it is asked for."""

    def __init__(self, make: Callable[[int], str]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, n: int) -> str:
        text = self[n] = self.make(n)
        return text


class DurableEvaluator:
    """Screens facts with durable-rules; callable from several threads (HandleSet.lock).

    Cases go to durable-rules in batches of up to SLOTS: one `assert_facts` of a JSON array,
    then one action per conjunction that matched any of them (the rules carry `cap`, so an
    action delivers every match of its conjunction, each naming its case by id), then one
    `retract_facts`.
    A case's id is its slot number, so ids never collide (their 32-bit hashes are checked
    distinct) and nothing outlives its batch.
    """

    def __init__(self, ruleset: Ruleset) -> None:
        # building allocates some 100,000 small objects that all stay alive, and the cyclic
        # collector would walk the growing heap again and again for nothing: about 25 ms of
        # a cold `screen` (benchmarks/results.md)
        with _collector_paused():
            self._build(ruleset)

    def _build(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        compiled = compile_rules(ruleset)
        self.compiled = compiled.rules
        self._ready: list[list[RuleOutcome | None]] = []  # per rule, outcome by status mask
        # a rule none of whose patterns matched takes its default outcome, shared by every case
        self._defaults: list[RuleOutcome] = []
        for rule, compiled_rule in zip(ruleset.rules, self.compiled, strict=True):
            status, when = compiled_rule.default
            if when is None and status in EXPLAINED_STATUSES:  # it would need the case
                raise EngineError(f"{rule.id} is unknown when none of its patterns fires")
            self._defaults.append(settled_outcome(rule.id, status))
            self._ready.append(_outcome_table(rule.id, self._defaults[-1]))
        self.fields = sorted(ruleset.fields_read)
        flags = [ruled_out_key(f, v) for f, sets in compiled.value_sets.items() for v in sets]
        # durable-rules gets short attribute names: every match carries the whole fact's text,
        # which the C engine copies and we scan for ids, so its length costs twice per match
        self.aliases = {name: f"_{n:x}" for n, name in enumerate([*self.fields, *flags])}
        # enum and boolean values travel as small integers, except for fields compared with
        # other fields (`$m`), whose values must stay comparable across fields
        conditions = [c for r in ruleset.rules for c in (r.scope, r.when) if c is not None]
        self.codes = value_codes(set(self.fields) - compared_with_fields(conditions))
        # by identity (patterns share their tests), each entry holding its test
        renamed: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

        def short(test: dict[str, Any]) -> dict[str, Any]:
            found = renamed.get(id(test))
            if found is None:
                found = renamed[id(test)] = (test, rename(test, self.aliases, self.codes))
            return found[1]

        check_rule_attributes(ruleset, len(self.aliases))
        try:
            self.layout = layout(conjunctions(ruleset, self.compiled, short))
        except LayoutError as exc:
            raise _blame(ruleset, exc.rules, str(exc)) from None
        check_attributes(list(self.aliases.values()))
        check_slot_ids(SLOTS)
        with _REGISTRY:
            shared = _HANDLES.get(ruleset.sha256)
            if shared is None:
                shared = _HANDLES[ruleset.sha256] = HandleSet(
                    self._create_handles(), threading.Lock()
                )
        self.shared = shared
        self.handles = shared.handles
        alias = self.aliases
        self._prefix = f'"kind":"case","sid":"{SID}"'
        # per constrained field, (value set, flag text) for each set the patterns read
        self._flag_keys = [
            (field, [(values, f',"{alias[ruled_out_key(field, values)]}":true') for values in sets])
            for field, sets in compiled.value_sets.items()
        ]
        self._keys = {name: f',"{alias[name]}":' for name in self.fields}
        # the text of every enumerated and boolean value, ready to splice in
        self._texts: dict[tuple[str, Scalar], str] = {
            (name, value): self._keys[name] + str(self.codes.get((name, value), _scalar(value)))
            for name in self.fields
            for value in FIELDS_BY_NAME[name].domain
        }
        ids = [f'{{"sid": "{SID}", "id": {slot}}}' for slot in range(1, SLOTS + 1)]
        # the text retracting slots 1..n, made when a batch of n first needs it
        self._retract = _Texts(lambda n: "[" + ", ".join(ids[:n]) + "]")
        # each durable-rules rule name -> the (rule index, status bit) pairs it stands for
        self._names = self.layout.targets
        # encode() reads facts back under their own names and values
        self._names_back = {short: name for name, short in self.aliases.items()}
        self._values_back: dict[tuple[str, Scalar], Scalar] = {
            (name, code): value for (name, value), code in self.codes.items()
        }

    def _create_handles(self) -> list[int]:
        handles = []
        for n, text in enumerate(self.layout.texts):
            try:
                handle = dre.create_ruleset(f"miss-{self.ruleset.sha256[:12]}-{n}", text)
            except Exception as exc:  # the C extension raises its own error type
                raise EngineError(f"durable-rules refused ruleset {n}: {exc}") from exc
            handles.append(handle)
        return handles

    def body(self, facts: Facts) -> str:
        """The fact's attributes as durable-rules JSON text (short names), each after a comma."""
        keys, texts = self._keys, self._texts
        parts = []
        for item in facts.values.items():  # (name, value): the key of texts as it comes
            text = texts.get(item)
            if text is None:
                key = keys.get(item[0])
                if key is None:  # a field no rule reads
                    continue
                text = key + _scalar(item[1])
            parts.append(text)
        if facts.possible:
            for field, flags in self._flag_keys:
                possible = facts.possible.get(field)
                if possible is not None:
                    parts.extend(key for values, key in flags if not values & possible)
        return "".join(parts)

    def encode(self, facts: Facts) -> dict[str, Scalar]:
        """The fact's attributes as a dict under their own names (those of body())."""
        names, values = self._names_back, self._values_back
        sent: dict[str, Scalar] = json.loads("{" + self.body(facts).removeprefix(",") + "}")
        decoded = {names[short]: value for short, value in sent.items()}
        return {name: values.get((name, value), value) for name, value in decoded.items()}

    def fired_masks(self, many: Sequence[Facts]) -> list[Mapping[int, int]]:
        """Per case, rule index -> mask of the status bits durable-rules matched.

        Safe from several threads: one thread at a time holds the handles (HandleSet.lock),
        each for a whole batch, so one batch is asserted, drained and retracted unmixed.
        """
        with self.shared.lock:
            return self._fired_masks(many)

    def _fired_masks(self, many: Sequence[Facts]) -> list[Mapping[int, int]]:
        masks: list[Mapping[int, int]] = []
        for start in range(0, len(many), SLOTS):
            batch = many[start : start + SLOTS]
            text = (
                "["
                + ", ".join(
                    f'{{"id":{slot},{self._prefix}{self.body(facts)}}}'
                    for slot, facts in enumerate(batch, 1)
                )
                + "]"
            )
            found: dict[str, dict[int, int]] = {str(slot): {} for slot in range(1, len(batch) + 1)}
            for handle in self.handles:
                for message in self._drain(handle, text, len(batch)):
                    self._read(message, found)
            masks.extend(found.values())  # slots in order: dicts keep insertion order
        return masks

    def _drain(self, handle: int, text: str, count: int) -> list[str]:
        """Assert a batch, collect every action message, retract the batch.

        Only durable-rules calls happen here, and the batch is retracted whatever fails; a
        failure inside durable-rules itself may leave its state locked, so the evaluator
        refuses to go on rather than report nothing fired.
        """
        if handle in _BROKEN:
            raise EngineError("durable-rules failed earlier in this process; results withheld")
        messages = []
        try:
            try:
                code, state = dre.assert_facts(handle, text)
                # 1: a fact no pattern matched. 2 (an id already stored) cannot happen: slot
                # ids hash apart and every batch is retracted
                if code not in (0, 1):
                    raise EngineError(f"durable-rules refused a batch of cases (code {code})")
                result = dre.start_action_for_state(handle, state)
                message = result[1] if result else None
                while message:
                    messages.append(message)
                    message = dre.complete_and_start_action(handle, state)
            finally:
                dre.retract_facts(handle, self._retract[count])
        except Exception as exc:  # the C extension raises its own error type
            _BROKEN.add(handle)
            if isinstance(exc, EngineError):
                raise
            raise EngineError(f"durable-rules failed on a batch of cases: {exc}") from exc
        return messages

    def _read(self, message: str, found: dict[str, dict[int, int]]) -> None:
        """Record one action: its status bits for every case (slot) it matched."""
        name = message[2 : message.index('"', 2)]
        targets = self._names.get(name)
        if targets is None:
            raise EngineError(f"durable-rules ran an action miss-screen did not define: {name}")
        if len(targets) == 1:
            ((index, bit),) = targets
            for slot in _MATCH.findall(message):
                mask = found[slot]
                mask[index] = mask.get(index, 0) | bit
            return
        for slot in _MATCH.findall(message):
            mask = found[slot]
            for index, bit in targets:
                mask[index] = mask.get(index, 0) | bit

    def evaluate(self, facts: Facts) -> list[RuleOutcome]:
        return self.evaluate_many([facts])[0]

    def evaluate_many(self, many: Sequence[Facts]) -> list[list[RuleOutcome]]:
        """Every rule's outcome for each case, in order (durable-rules sees them in batches)."""
        return [
            self.outcomes_from(masks, facts)
            for masks, facts in zip(self.fired_masks(many), many, strict=True)
        ]

    def outcomes_from(self, masks: Mapping[int, int], facts: Facts) -> list[RuleOutcome]:
        """Every rule's outcome from the status bits matched (rules absent from masks: none)."""
        outcomes = list(self._defaults)  # most rules match nothing: scope or condition false
        ready, rules, ruleset = self._ready, self.ruleset.rules, self.ruleset
        for index, mask in masks.items():
            outcome = ready[index][mask]  # None: the outcome names this case's missing data
            if outcome is None:
                outcome = explained_outcome(rules[index], STATUS_BITS[mask][0], facts, ruleset)
            elif outcome is _CONFLICT:
                raise EngineError(f"{rules[index].id} matched two statuses at once: bits {mask}")
            outcomes[index] = outcome
        return outcomes


def rename(
    value: Any,
    aliases: Mapping[str, str],
    codes: Mapping[tuple[str, Scalar], int] | None = None,
    operator: str = "",
) -> Any:
    """Patterns with attribute names replaced by their aliases and, where `codes` gives one,
    the constant an attribute is compared with replaced by its code; operators are kept."""
    if isinstance(value, list):
        return [rename(item, aliases, codes, operator) for item in value]
    if not isinstance(value, dict):
        return value  # a constant: a value, never a name
    renamed = {}
    for key, item in value.items():
        if key == "$m":  # a reference to another attribute of the fact
            renamed[key] = aliases.get(item, item)
        elif key.startswith("$"):  # an operator
            renamed[key] = rename(item, aliases, codes, key)
        else:  # an attribute, and what it is compared with (`$ex`/`$nex` take a dummy 1)
            if codes and operator not in ("$ex", "$nex") and not isinstance(item, dict | list):
                item = codes.get((key, item), item)
            renamed[aliases.get(key, key)] = rename(item, aliases, codes)
    return renamed


def value_codes(fields: Iterable[str]) -> dict[tuple[str, Scalar], int]:
    """Small integers for the values of enumerated and boolean fields (false 0, true 1; an
    enum value its position in the field's list): shorter facts, the same equalities."""
    codes: dict[tuple[str, Scalar], int] = {}
    for name in fields:
        spec = FIELDS_BY_NAME[name]
        if spec.type is FieldType.boolean:
            codes[(name, False)], codes[(name, True)] = 0, 1
        elif spec.type is FieldType.enum:
            codes.update({(name, value): n for n, value in enumerate(spec.values)})
    return codes


def compared_with_fields(rules: Iterable[Cond]) -> set[str]:
    """Fields on either side of a field-to-field comparison (these keep their own values)."""
    found: set[str] = set()
    pending = list(rules)
    while pending:
        cond = pending.pop()
        if isinstance(cond, Compare) and not isinstance(cond.rhs, Const):
            found |= {cond.field} | fields_of(cond.rhs)
        elif isinstance(cond, Not):
            pending.append(cond.item)
        elif isinstance(cond, And | Or):
            pending.extend(cond.items)
    return found


def check_slot_ids(slots: int) -> None:
    """Slot ids must not share a 32-bit hash with each other or with the sid's state fact."""
    names = [f"{SID}", f"sid-{SID}", *(str(slot) for slot in range(1, slots + 1))]
    if len({fnv1a_32(name) for name in names}) != len(names):
        raise EngineError("two slot ids share a 32-bit hash; choose another SLOTS")


def _outcome_table(rule_id: str, default: RuleOutcome) -> list[RuleOutcome | None]:
    """A rule's outcome for each mask of matched status bits: shared where nothing is missing,
    None where it names the case's missing data, _CONFLICT where two statuses matched."""
    table: list[RuleOutcome | None] = [_CONFLICT] * (2 * max(STATUS_BITS))
    table[0] = default
    for bit, (status, when) in STATUS_BITS.items():
        explained = when is None and status in EXPLAINED_STATUSES
        table[bit] = None if explained else settled_outcome(rule_id, status)
    return table
