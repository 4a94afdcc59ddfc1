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
import functools
import gc
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import durable_rules_engine as dre

from engine.derive import Facts
from engine.dictionary import FIELDS_BY_NAME, FieldType
from engine.errors import RuleFileError
from engine.evaluate.base import (
    EXPLAINED_STATUSES,
    explained_outcome,
)
from engine.evaluate.cache import cached_layout, cached_outline
from engine.evaluate.layout import (
    FEW_CASES_LIMITS,
    STATUS_BITS,
    Layout,
    Outline,
    _blame,
    _scalar,
    check_attributes,
    check_rule_attributes,
    compile_rules,
    conjunctions,
    fnv1a_32,
    layout,
)
from engine.evaluate.patterns import (
    SID,
    SLOTS,
    EngineError,
    LayoutError,
    ruled_out_key,
)
from engine.models import RuleOutcome, RuleStatus, Scalar, settled_outcome
from engine.rules.condition import (
    And,
    Compare,
    Cond,
    Const,
    Not,
    Or,
    fields_of,
)
from engine.rules.ruleset import Ruleset

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


# ruleset sha256 (and "few" for the few-cases layout) -> its handles, built once per process;
# _REGISTRY guards building them
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

    def __init__(self, ruleset: Ruleset, few_cases: bool = False) -> None:
        """`few_cases`: for a process that screens a handful of cases (the `screen` command):
        durable-rules gets each pattern expanded as little as it takes (FEW_CASES_LIMITS),
        about a third of the rules to build, at some cost per case. The outcomes are the same
        (tests/test_durable.py holds both layouts to each other)."""
        self.few_cases = few_cases
        # building allocates some 100,000 small objects that all stay alive, and the cyclic
        # collector would walk the growing heap again and again for nothing: about 25 ms of
        # a cold `screen` (benchmarks/results.md)
        with _collector_paused():
            self._build(ruleset)

    def _build(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        # the rules' patterns are compiled only when the layout or its outline is not cached
        compiled = functools.cache(lambda: compile_rules(ruleset))
        outline = cached_outline(ruleset.sha256, len(ruleset.rules), lambda: Outline.of(compiled()))
        self._ready: list[list[RuleOutcome | None]] = []  # per rule, outcome by status mask
        # a rule none of whose patterns matched takes its default outcome, shared by every case
        self._defaults: list[RuleOutcome] = []
        for rule, (status, when) in zip(ruleset.rules, outline.defaults, strict=True):
            if when is None and status in EXPLAINED_STATUSES:  # it would need the case
                raise EngineError(f"{rule.id} is unknown when none of its patterns fires")
            self._defaults.append(settled_outcome(rule.id, status))
            self._ready.append(_outcome_table(rule.id, self._defaults[-1]))
        self.fields = sorted(ruleset.fields_read)
        flags = [ruled_out_key(f, v) for f, sets in outline.value_sets.items() for v in sets]
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

        def laid_out() -> Layout:
            if self.few_cases:
                # a rule base the few-cases layout cannot fit gets the expanded one
                with contextlib.suppress(LayoutError, RuleFileError):
                    return layout(conjunctions(ruleset, compiled().rules, short, FEW_CASES_LIMITS))
            try:
                return layout(conjunctions(ruleset, compiled().rules, short))
            except LayoutError as exc:
                raise _blame(ruleset, exc.rules, str(exc)) from None

        # expanding and laying out took about 120 ms of a cold `screen`: kept on disk by the
        # ruleset's content and the compiling code (cache.py)
        statuses = {(index, bit) for index, bits in enumerate(outline.bits) for bit in bits}
        kind = "few" if self.few_cases else ""
        self.layout = cached_layout(ruleset.sha256, statuses, laid_out, kind)
        check_attributes(list(self.aliases.values()))
        check_slot_ids(SLOTS)
        with _REGISTRY:
            shared = _HANDLES.get(f"{ruleset.sha256}{kind}")
            if shared is None:
                shared = _HANDLES[f"{ruleset.sha256}{kind}"] = HandleSet(
                    self._create_handles(), threading.Lock()
                )
        self.shared = shared
        self.handles = shared.handles
        alias = self.aliases
        self._prefix = f'"kind":"case","sid":"{SID}"'
        # per constrained field, (value set, flag text) for each set the patterns read
        self._flag_keys = [
            (field, [(values, f',"{alias[ruled_out_key(field, values)]}":true') for values in sets])
            for field, sets in outline.value_sets.items()
        ]
        self._keys = {name: f',"{alias[name]}":' for name in self.fields}
        # the text of every enumerated and boolean value, ready to splice in; nothing for a
        # field no rule reads; numbers as cases bring them
        read = set(self.fields)
        self._texts = _FactTexts(self._keys)
        self._texts.update(
            {
                (name, value): (
                    self._keys[name] + str(self.codes.get((name, value), _scalar(value)))
                    if name in read
                    else ""
                )
                for name in FIELDS_BY_NAME
                for value in FIELDS_BY_NAME[name].domain
            }
        )
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
                kind = "few-" if self.few_cases else ""
                name = f"miss-{kind}{self.ruleset.sha256[:12]}-{n}"
                handle = dre.create_ruleset(name, text)
            except Exception as exc:  # the C extension raises its own error type
                raise EngineError(f"durable-rules refused ruleset {n}: {exc}") from exc
            handles.append(handle)
        return handles

    def body(self, facts: Facts) -> str:
        """The fact's attributes as durable-rules JSON text (short names), each after a comma."""
        text = "".join(map(self._texts.__getitem__, facts.values.items()))  # (name, value) keys
        if not facts.possible:
            return text
        parts = [text]
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


FACT_TEXTS = 100_000  # (field, value) texts kept, at most: numbers repeat across a cohort


class _FactTexts(dict[tuple[str, Scalar], str]):
    """(field, value) -> its text in a fact: `,"<alias>":<value>`, or "" for a field no rule
    reads. Enumerated and boolean values are filled in at start; a number is made the first
    time a case brings it and kept (up to FACT_TEXTS), so that body() is one C-level pass."""

    def __init__(self, keys: dict[str, str]) -> None:
        super().__init__()
        self.field_keys = keys

    def __missing__(self, item: tuple[str, Scalar]) -> str:
        name, value = item
        key = self.field_keys.get(name)
        text = "" if key is None else key + _scalar(value)
        # -0.0 and 0.0 are one key with two texts: a zero is made each time, keeping its sign
        if len(self) < FACT_TEXTS and not (value == 0 and type(value) is float):
            self[item] = text  # two threads may both store it: the same text
        return text


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
