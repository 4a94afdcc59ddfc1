"""From compiled rules to durable-rules rulesets: one pattern per status, written as plain
conjunctions, laid out in rulesets whose match stack is bounded (network.py), and the other
fixed limits of durable-rules checked before any case is seen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from engine.errors import RuleFileError
from engine.evaluate.conjunctions import Key, alternatives, whole
from engine.evaluate.network import (
    CHILD_LIMIT,
    Node,
    add_pattern,
    alpha_key,
    limit_problems,
    stack_bound,
)
from engine.evaluate.patterns import (
    CAP,
    GUARD,
    MAX_ACTIONS,
    MAX_ALTERNATIVES,
    MAX_GROUPS,
    MAX_PATTERN_OPERATORS,
    MAX_RULESETS,
    STACK_BUDGET,
    EngineError,
    KleenePatterns,
    LayoutError,
    Pattern,
    PatternCompiler,
    _all,
    ruled_out_key,
)
from engine.models import RuleStatus, Scalar
from engine.rules.loader import read_yaml_file
from engine.rules.ruleset import Ruleset

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


class Outline:
    """What screening needs of the compiled rules once their layout is known: each rule's
    status bits that have a pattern, its status and value when none matches, and the value sets
    whose ruled-out flags facts carry. Kept on disk beside the layout (cache.py): computing it
    compiles every rule's patterns again, about 2 % of a cold `screen`."""

    __slots__ = ("bits", "defaults", "value_sets")

    def __init__(
        self,
        bits: list[tuple[int, ...]],
        defaults: list[tuple[RuleStatus, bool | None]],
        value_sets: dict[str, list[frozenset[Scalar]]],
    ) -> None:
        self.bits = bits
        self.defaults = defaults
        self.value_sets = value_sets

    @classmethod
    def of(cls, compiled: Compiled) -> Outline:
        rules = compiled.rules
        return cls(
            [tuple(r.patterns) for r in rules], [r.default for r in rules], compiled.value_sets
        )


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
    compiler = PatternCompiler(ruleset.constrained_fields, ruleset.bounded_fields)
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


# expansion limits tried in turn for the few-cases layout: each pattern expanded as little as
# durable-rules takes (MAX_PATTERN_OPERATORS), so about a third as many rules to build
FEW_CASES_LIMITS = tuple(2**n for n in range(MAX_ALTERNATIVES.bit_length()))


def conjunctions(
    ruleset: Ruleset,
    compiled: list[CompiledRule],
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    limits: Sequence[int] = (MAX_ALTERNATIVES,),
) -> Conjunctions:
    """Every status pattern as conjunctions; one shared by several statuses only once.

    A part too wide to expand (more alternatives than the limit) stays whole inside its
    conjunctions, with its `$or`s, as long as durable-rules takes the result
    (MAX_PATTERN_OPERATORS); such a conjunction may match a case once per true branch, which
    sets the same status bit. Each pattern takes the first of `limits` whose conjunctions
    durable-rules takes: MAX_ALTERNATIVES alone expands as far as it goes (fastest per case,
    slowest to build), FEW_CASES_LIMITS as little as it may (the same outcomes: every
    alternative of a pattern sets the same bit). `convert` rewrites each test (the evaluator
    gives attributes their short names).
    """
    found: dict[frozenset[Key], tuple[list[dict[str, Any]], list[tuple[int, int]]]] = {}
    for rule in compiled:
        for bit, pattern in rule.patterns.items():
            for limit in limits:
                options = alternatives(pattern, limit, convert)
                operators = max(
                    (sum(map(boolean_operators, tests.values())) for tests in options), default=0
                )
                if operators <= MAX_PATTERN_OPERATORS:
                    break
            else:
                raise RuleFileError(
                    f"scope and condition together need {operators} and/or operators in "
                    f"one durable-rules pattern (at most {MAX_PATTERN_OPERATORS}), even "
                    f"split into up to {limits[-1]} alternatives; simplify the "
                    "condition or split the rule",
                    ruleset.rules[rule.index].path,
                    key="when",
                )
            for tests in options:
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
    """The rulesets to create (as durable-rules JSON text), what each rule name stands for,
    the group count and each ruleset's worst-case stack."""

    texts: list[str]
    targets: dict[str, tuple[tuple[int, int], ...]]
    groups: int
    bounds: list[int]

    @cached_property
    def rulesets(self) -> list[dict[str, dict[str, Any]]]:
        """The rulesets as rules by name, read from the texts durable-rules gets (for tests and
        benchmarks: reading them takes tens of milliseconds, which screening never spends)."""
        return [json.loads(text) for text in self.texts]


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
    texts = [",".join(map(tests.text, conjunction)) for conjunction, _ in items]
    order = sorted(range(len(items)), key=texts.__getitem__)
    size = -(-len(order) // groups)
    heads = [f"{to_durable_json(GUARD)},{to_durable_json(group_test(g))}" for g in range(groups)]
    root = Node(("", "root", ""))
    guard = root.child(alpha_key(GUARD))
    rule_texts: list[str] = []
    targets: dict[str, tuple[tuple[int, int], ...]] = {}
    for n, item in enumerate(order):
        conjunction, stands_for = items[item]
        flag = group_test(n // size)
        node = guard.child(alpha_key(flag))
        for test in conjunction:  # a part kept whole brings its $or join nodes
            node = add_pattern(node, test) if whole(test) else node.child(tests.node(test))
        name = f"r{first + n}"
        chain = f"{heads[n // size]},{texts[item]}"
        rule_texts.append(f'"{name}":{{"all":[{{"m":{{"$and":[{chain}]}}}}],"cap":{CAP}}}')
        targets[name] = stands_for
    text = "{" + ",".join(rule_texts) + "}"
    return Layout([text], targets, groups, [stack_bound(root)]), root


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
        return Layout(texts=[], targets={}, groups=0, bounds=[])
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
    """Serialise patterns and facts (dicts, lists, scalars) for the C engine, with no spaces
    (durable-rules parses the ruleset's text again at every level it walks into: fewer bytes,
    a cheaper create_ruleset at each start).

    json.dumps writes the same text, except for floats with an exponent and no fraction
    (`1e-05`), which durable-rules misreads: any text with a digit before an `e` (perhaps
    only in a string) is written the slow way, which spells those `1.0e-05`.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
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
        return "{" + ",".join(f"{json.dumps(k)}:{_durable_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_durable_json(v) for v in value) + "]"
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
        compiler = PatternCompiler(ruleset.constrained_fields, ruleset.bounded_fields)
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
