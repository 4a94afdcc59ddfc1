"""A cohort's outputs on the vectorised engine, built column by column (batch, screen_frame).

engine.evaluate.vectorised gives each decided row's rule statuses and outcomes; here they become
the flat output columns (batch.worker.FLAT_COLUMNS), the questions (`--detail ids` JSON lines,
screen_frame's columns) and the chunk's counts, with no Python per row: each list column
(fired rule ids by severity, conditional, not evaluable, open cautions) is a selection of the
chunk's notable cells (_Cells), a list per row joined by Arrow; missing fields are bit words.
The verdict comes from the policy (engine.policy) once per distinct set of (status, severity)
pairs, and the questions once per distinct set of verdict-changing outcomes (both kept across
chunks), so the policy's semantics stays in one place. tests/test_vectorised.py holds every
column and count to the per-row path (screen.conclude, screener.flat_outcomes, worker.record),
tests/test_cohort_columns.py on random outcomes.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.dictionary import SETTING_FIELDS
from engine.evaluate.vectorised import (
    CONDITIONAL,
    FIRED,
    NOT_APPLICABLE,
    NOT_EVALUABLE,
    NOT_FIRED,
    STATUSES,
    CohortDecisions,
)
from engine.models import RuleOutcome, RuleStatus, Severity, Verdict
from engine.policy import Outlook, policy_for
from engine.rules.ruleset import Ruleset

UNKNOWN_VALUE = "(unknown)"  # a subgroup field not given (batch summaries)
_SEVERITIES = tuple(s.value for s in Severity)
_SETTINGS = frozenset(SETTING_FIELDS)
_PLAIN_TEXT = r"^[A-Za-z0-9._-]*$"  # text json.dumps only quotes (every valid case_id)
OUTLOOKS_KEPT = 4096  # distinct sets of present (status, severity) pairs kept per ruleset
ANSWERS_KEPT = 100_000  # distinct sets of verdict-changing outcomes' questions kept per ruleset


@dataclass
class FlatColumns:
    """The flat outputs of a chunk's decided rows (in row order) and what they add up to."""

    case_ids: pa.Array  # text
    columns: list[pa.Array]  # FLAT_COLUMNS after case_id: verdict, ..., open_cautions
    compact: pa.Array | None  # `--detail ids` JSON lines, when asked for
    questions: QuestionSets | None  # when asked for (or compact lines)
    verdicts: Counter[str]
    rule_status: Counter[tuple[str, str]]
    blocks: Counter[str]
    insufficient_only_site: int
    decided_with_cautions_open: int
    subgroups: Counter[tuple[str, str, str]]


class _Layout:
    """What flat_columns reads of a ruleset, worked out once per ruleset rather than per chunk.

    Rules are taken in report order, which sorts by severity first (Ruleset.report_order): the
    rules of each severity are a slice of it (`spans`, by severity index), so a per-severity
    column or count reads a slice, not a gathered copy."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.policy = policy = policy_for(ruleset)
        rules = ruleset.rules
        self.order = np.asarray(ruleset.report_positions, dtype=np.intp)
        self.ids = [rules[p].id for p in ruleset.report_positions]
        self.id_texts = _texts(self.ids)
        self.id_json = _texts(json.dumps(i) for i in self.ids)  # a JSON list's items
        self.rule_ids = [rule.id for rule in rules]
        levels = [_SEVERITIES.index(ruleset.severity_of[rule.id]) for rule in rules]
        self.rule_level = np.asarray(levels, dtype=np.intp)  # per rule, ruleset order
        in_order = self.rule_level[self.order]
        self.spans = [
            slice(int(np.searchsorted(in_order, n)), int(np.searchsorted(in_order, n + 1)))
            for n in range(len(_SEVERITIES))
        ]
        listed = [s in policy.listed for s in _SEVERITIES]
        self.level = in_order  # per rule in report order, its severity index
        self.listed_levels = np.asarray(listed, dtype=bool)
        self.listed_rules = self.listed_levels[in_order]
        # a row's (status, severity) pairs as bits, status * severities + severity (row_verdicts):
        # per severity, its statuses' bits (1 << status) to the pairs' bits; with a policy that
        # ignores not-fired and not-applicable outcomes (no entry names them), those pairs cannot
        # change its outlook: left out, fewer sets are looked up
        inert = (NOT_FIRED, NOT_APPLICABLE) if policy.ignores_inert else ()
        kept = [s for s in range(len(STATUSES)) if s not in inert]
        self.spread = [
            np.asarray(
                [
                    sum(1 << (s * len(_SEVERITIES) + level) for s in kept if flags >> s & 1)
                    for flags in range(1 << len(STATUSES))
                ],
                dtype=np.int64,
            )
            for level in range(len(_SEVERITIES))
        ]
        self.outlooks: dict[int, Outlook] = {}  # present bits -> the policy's outlook
        self.missing = MissingNames()
        self.kinds: dict[tuple[str, tuple[str, ...]], int] = {}  # (rule id, missing) -> kind
        self.kind_outcomes: list[RuleOutcome] = []  # an outcome of each kind
        # kept on the ruleset, so shared by every thread screening with it: a kind is numbered
        # under a lock, or two threads could give two kinds one number
        self._numbering = threading.Lock()
        # (separator, a set of kinds) -> its next and deciding questions, joined by separator
        self.answers: dict[tuple[str, bytes], tuple[str, str]] = {}

    def kind_of(self, outcome: RuleOutcome) -> int:
        """The kind of a not-evaluable outcome, as far as policy.questions reads it."""
        key = (outcome.rule_id, outcome.missing)
        found = self.kinds.get(key)
        if found is None:
            with self._numbering:
                found = self.kinds.get(key)
                if found is None:
                    self.kind_outcomes.append(outcome)
                    found = self.kinds[key] = len(self.kind_outcomes) - 1
        return found

    def asked(self, kinds: bytes, separator: str) -> tuple[str, str]:
        """The next and the deciding questions of a set of verdict-changing outcomes (their
        kinds, as int32 bytes), joined by `separator` (_items)."""
        found = self.answers.get((separator, kinds))
        if found is None:
            changing = [self.kind_outcomes[n] for n in np.frombuffer(kinds, np.int32).tolist()]
            ranked, deciding = self.policy.questions(changing)
            found = (_items(ranked, separator), _items(deciding, separator))
            if len(self.answers) < ANSWERS_KEPT:
                self.answers[(separator, kinds)] = found
        return found


def _texts(texts: Iterable[str]) -> pa.Array:
    return pa.array(list(texts), pa.string())


def _layout(ruleset: Ruleset) -> _Layout:
    """The ruleset's layout, built once and kept by the ruleset itself (as policy_for)."""
    found = ruleset.__dict__.get("_flat_layout")
    if not isinstance(found, _Layout):
        found = ruleset.__dict__["_flat_layout"] = _Layout(ruleset)
    return found


def flat_columns(
    decided: CohortDecisions,
    case_ids: pa.Array,
    ruleset: Ruleset,
    *,
    compact: bool,
    questions: bool = False,
) -> FlatColumns:
    """The outputs of the decided rows (`case_ids`: their ids, as text), as the per-row path
    would write them."""
    if not len(case_ids):
        empty = [pa.array([], pa.string()) for _ in range(9)]
        none: Counter[Any] = Counter()
        return FlatColumns(
            case_ids,
            empty,
            empty[0] if compact else None,
            QuestionSets.none(),
            none,
            none.copy(),
            none.copy(),
            0,
            0,
            none.copy(),
        )
    layout = _layout(ruleset)
    statuses = decided.statuses
    in_order = np.take(statuses, layout.order, axis=1)  # report order: by severity
    outlooks, present_at, named, verdict_at = _verdicts(in_order, layout)
    counted = np.bincount(verdict_at, minlength=len(named)).tolist()
    verdicts = Counter({named[n]: hits for n, hits in enumerate(counted) if hits})
    cells = _Cells(in_order)
    status, level = cells.status, layout.level[cells.columns]
    ids = layout.id_texts
    columns = [pa.array(named, pa.string()).take(pa.array(verdict_at))]
    fired = status == FIRED
    columns += [cells.joined(fired & (level == n), ids) for n in range(len(_SEVERITIES))]
    conditional = status == CONDITIONAL
    columns.append(cells.joined(conditional, ids))
    open_cells = status == NOT_EVALUABLE
    columns.append(cells.joined(open_cells, ids))
    names = layout.missing
    outcomes, outcome_at = _cell_outcomes(decided, layout, cells)
    missing = _missing_words(outcomes, layout)[outcome_at]
    missing_fields = cells.union(open_cells, missing)
    columns.append(names.joined(missing_fields))
    cautions = open_cells & layout.listed_rules[cells.columns]
    columns.append(cells.joined(cautions, ids))
    insufficient = np.asarray([o.entry.verdict is Verdict.insufficient_data for o in outlooks])
    insufficient = insufficient[present_at]
    # what blocks an insufficient verdict: the missing fields of the rules that can change it
    can_change = np.asarray([[s in o.changing for s in _SEVERITIES] for o in outlooks])
    blocking = open_cells & insufficient[cells.rows] & can_change[present_at[cells.rows], level]
    stuck = cells.union(blocking, missing)[insufficient]
    blocks: Counter[str] = Counter()
    for name, hits in names.counts(stuck):
        blocks[name] += hits
    some = (stuck != 0).any(axis=1)
    only_site = some & ~(stuck & ~names.settings(stuck.shape[1])).any(axis=1)
    has_cautions = np.zeros(len(statuses), dtype=bool)
    has_cautions[cells.rows[cautions]] = True
    decided_open = int(np.count_nonzero(has_cautions & ~insufficient))
    rule_status = _rule_status(statuses, cells, layout)
    subgroups: Counter[tuple[str, str, str]] = Counter()
    for name, (codes, values) in decided.probed.items():
        shown = [UNKNOWN_VALUE if v is None else str(v) for v in values]
        pairs = np.bincount(codes * len(named) + verdict_at).tolist()
        for pair, hit in enumerate(pairs):
            if hit:
                subgroups[(name, shown[pair // len(named)], named[pair % len(named)])] += hit
    asked = None
    if compact or questions:
        changing = open_cells & can_change[present_at[cells.rows], level]
        asked = _questions(cells, changing, outcomes, outcome_at, layout, outlooks, present_at)
    lines = None
    if compact and asked is not None:  # each list as its JSON items, in the key order
        quoted = layout.id_json
        lists = [
            cells.joined(fired, quoted, ","),  # report order: by severity, as the columns
            cells.joined(conditional, quoted, ","),
            cells.joined(open_cells, quoted, ","),
            names.joined(missing_fields, ","),
            *asked.lists(","),
            cells.joined(cautions, quoted, ","),
        ]
        verdict = _texts(json.dumps(v) for v in named).take(pa.array(verdict_at))
        lines = _compact(case_ids, verdict, lists)
    return FlatColumns(
        case_ids,
        columns,
        lines,
        asked,
        verdicts,
        rule_status,
        blocks,
        int(only_site.sum()),
        decided_open,
        subgroups,
    )


class _Cells:
    """A chunk's notable outcomes (conditional, not evaluable, fired; the others are in no list
    column), a cell each: its row, its rule (a column of the report order) and its status, in row
    order and report order within a row. Each list column is a selection of the cells: a list
    per row, joined by Arrow, with no Python per row or per distinct set."""

    def __init__(self, in_order: np.ndarray) -> None:
        self.size, width = in_order.shape
        found = np.flatnonzero(in_order >= CONDITIONAL)
        self.status = in_order.reshape(-1)[found]
        self.rows, self.columns = np.divmod(found, width)

    def joined(self, chosen: np.ndarray, names: pa.Array, separator: str = ";") -> pa.Array:
        """Per row, the names (by column) of its chosen cells, joined by `separator`."""
        picked = np.flatnonzero(chosen)
        return _joined(self.size, self.rows[picked], self.columns[picked], names, separator)

    def union(self, chosen: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Per row, the bitwise or of the `words` (a row of them per cell) of its chosen cells."""
        picked = np.flatnonzero(chosen)
        found = np.zeros((self.size, words.shape[1]), dtype=words.dtype)
        if len(picked):
            rows = self.rows[picked]
            starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
            found[rows[starts]] = np.bitwise_or.reduceat(words[picked], starts, axis=0)
        return found


def row_verdicts(
    statuses: np.ndarray, ruleset: Ruleset
) -> tuple[list[Outlook], np.ndarray, list[str], np.ndarray]:
    """Rows x rules statuses to each row's verdict: the policy's outlooks (one per distinct set
    of present outcomes), each row's outlook, the verdict names and each row's verdict among
    them. Used by flat_columns and by `rules sweep`, which re-decides only the swept rule."""
    layout = _layout(ruleset)
    return _verdicts(statuses[:, layout.order], layout)


def _verdicts(
    in_order: np.ndarray, layout: _Layout
) -> tuple[list[Outlook], np.ndarray, list[str], np.ndarray]:
    """row_verdicts of statuses in report order."""
    # the verdict, once per set of present (status, severity) pairs (policy.decide), a set as
    # bits: per severity, the statuses its rules have (a bit each, one byte per row), spread to
    # the pairs' bits: never a rows x rules table of 64-bit words
    flags = np.left_shift(np.int8(1), in_order)
    present = np.zeros(len(in_order), dtype=np.int64)
    for level, span in enumerate(layout.spans):
        if span.stop > span.start:
            present |= layout.spread[level][np.bitwise_or.reduce(flags[:, span], axis=1)]
    sets, present_at = _distinct(present)
    outlooks = [_outlook(bits, layout) for bits in sets.tolist()]
    verdict_of = [o.entry.verdict for o in outlooks]
    named = list(dict.fromkeys(v._value_ for v in verdict_of))
    verdict_at = np.asarray([named.index(v._value_) for v in verdict_of])[present_at]
    return outlooks, present_at, named, verdict_at


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values, ascending, and each value's index among them (np.unique's, by an
    Arrow hash table: a few distinct values among many rows need no sort of the rows)."""
    encoded = pc.dictionary_encode(pa.array(values))
    found = encoded.dictionary.to_numpy()
    order = np.argsort(found)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return found[order], rank[encoded.indices.to_numpy()]


def _outlook(bits: int, layout: _Layout) -> Outlook:
    """The policy's outlook of a set of present pairs, kept by the layout: a policy that reads
    every outcome (not ignores_inert) has no cache of its own (policy.decide)."""
    found = layout.outlooks.get(bits)
    if found is None:
        policy = layout.policy
        present = _present(bits)
        found = policy.outlook(present) if policy.ignores_inert else policy._outlook(present)
        if len(layout.outlooks) < OUTLOOKS_KEPT:
            layout.outlooks[bits] = found
    return found


def _present(bits: int) -> frozenset[tuple[RuleStatus, str]]:
    return frozenset(
        (STATUSES[n // len(_SEVERITIES)], _SEVERITIES[n % len(_SEVERITIES)])
        for n in range(bits.bit_length())
        if bits >> n & 1
    )


def _rule_status(statuses: np.ndarray, cells: _Cells, layout: _Layout) -> Counter[tuple[str, str]]:
    """How many rows had each (rule, status), in ruleset order: the notable ones from the cells,
    not fired from one count per rule, not applicable the rest."""
    width = len(STATUSES)
    found = np.zeros((len(layout.rule_ids), width), dtype=np.int64)
    notable = np.bincount(cells.columns * width + cells.status, minlength=found.size)
    found[layout.order] = notable.reshape(-1, width)
    found[:, NOT_FIRED] = np.count_nonzero(statuses == NOT_FIRED, axis=0)
    found[:, NOT_APPLICABLE] = len(statuses) - found.sum(axis=1)
    counts: Counter[tuple[str, str]] = Counter()
    for cell, hits in enumerate(found.reshape(-1).tolist()):
        if hits:
            counts[(layout.rule_ids[cell // width], STATUSES[cell % width])] += hits
    return counts


def _joined(
    size: int, rows: np.ndarray, columns: np.ndarray, names: pa.Array, separator: str
) -> pa.Array:
    """Per row of `size`, the names of `columns` listed at it (`rows`, ascending), joined."""
    offsets = np.zeros(size + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=size), out=offsets[1:])
    listed = names.take(pa.array(columns))
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), listed), separator)


class MissingNames:
    """The fields not-evaluable outcomes miss, each given a bit (in order of first sight) and
    kept across chunks; per chunk, the rows' sets of them are rows of uint64 words."""

    def __init__(self) -> None:
        self.bit: dict[str, int] = {}
        self.masks: dict[tuple[str, ...], int] = {}  # an outcome's missing fields, as bits
        self._sorted: tuple[int, np.ndarray, dict[str, pa.Array]] | None = None
        self._numbering = threading.Lock()  # threads share it: one bit per name, never two

    def mask(self, missing: tuple[str, ...]) -> int:
        found = self.masks.get(missing)
        if found is None:
            with self._numbering:
                found = 0
                for name in missing:
                    found |= 1 << self.bit.setdefault(name, len(self.bit))
                self.masks[missing] = found
        return found

    def width(self) -> int:
        """Words per row for the bits given so far."""
        return max(1, -(-len(self.bit) // 64))

    def _by_name(self) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """The bits in name order, and the names: by separator, as the list they join into
        (";": the text column; ",": a JSON list's items)."""
        found = self._sorted
        if found is None or found[0] != len(self.bit):
            with self._numbering:  # not while another thread gives a name its bit
                names = sorted(self.bit)
                bits = np.asarray([self.bit[name] for name in names], dtype=np.intp)
            texts = {";": _texts(names), ",": _texts(json.dumps(name) for name in names)}
            found = self._sorted = (len(names), bits, texts)
        return found[1], found[2]

    def flags(self, words: np.ndarray) -> np.ndarray:
        """Rows of words as rows of booleans, one per name, in name order."""
        bits, _ = self._by_name()
        every = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
        found: np.ndarray = every[:, bits].view(bool)
        return found

    def joined(self, words: np.ndarray, separator: str = ";") -> pa.Array:
        """Per row, its names in name order joined by ";" (or as JSON items, by ",")."""
        _, names = self._by_name()
        flags = self.flags(words)
        rows, columns = np.divmod(np.flatnonzero(flags), flags.shape[1])
        return _joined(len(words), rows, columns, names[separator], separator)

    def counts(self, words: np.ndarray) -> list[tuple[str, int]]:
        """(name, rows with it) of every name some row has, in name order."""
        _, names = self._by_name()
        hits = np.count_nonzero(self.flags(words), axis=0).tolist()
        return [(name, n) for name, n in zip(names[";"].to_pylist(), hits, strict=True) if n]

    def settings(self, width: int) -> np.ndarray:
        """The bits of the site settings among the names, as a row of `width` words."""
        found = sum(1 << bit for name, bit in self.bit.items() if name in _SETTINGS)
        words: np.ndarray = _words([found], width)[0]
        return words


def _words(masks: list[int], width: int) -> np.ndarray:
    """Python integers as rows of `width` uint64 words, lowest word first."""
    if width == 1:
        return np.asarray(masks, dtype=np.uint64).reshape(-1, 1)
    full = (1 << 64) - 1
    return np.asarray(
        [[mask >> (64 * n) & full for n in range(width)] for mask in masks], dtype=np.uint64
    ).reshape(-1, width)


def _cell_outcomes(
    decided: CohortDecisions, layout: _Layout, cells: _Cells
) -> tuple[list[RuleOutcome], np.ndarray]:
    """The outcomes of the chunk's tables (rules in report order), and each cell's among them."""
    tables = [decided.tables[p] for p in layout.order.tolist()]
    starts = np.zeros(len(tables), dtype=np.int64)
    np.cumsum([len(table) for table in tables[:-1]], out=starts[1:])
    numbers = decided.numbers
    at = cells.rows * numbers.shape[1] + layout.order[cells.columns]
    return [o for table in tables for o in table], starts[cells.columns] + numbers.reshape(-1)[at]


def _missing_words(outcomes: list[RuleOutcome], layout: _Layout) -> np.ndarray:
    """Per outcome, the fields it misses if it is not evaluable, as a row of words
    (MissingNames); an outcome of another status misses none here."""
    names = layout.missing
    masks = [
        names.mask(o.missing) if o.missing and o.status is RuleStatus.not_evaluable else 0
        for o in outcomes
    ]
    return _words(masks, names.width())


COMPACT_KEYS = (
    "case_id",
    "verdict",
    "fired",
    "conditional",
    "not_evaluable",
    "missing_fields",
    "possible_verdicts",
    "next_questions",
    "deciding_questions",
    "open_cautions",
)


@dataclass(frozen=True)
class QuestionSets:
    """Per row, its possible verdicts (its outlook's: `possible` per outlook, `at` each row's)
    and its next and deciding questions (once per distinct set of verdict-changing outcome
    kinds: `kinds`, each as bytes, `kinds_at`, each row's set; asked of `layout`)."""

    possible: list[tuple[str, ...]]
    at: np.ndarray
    kinds: list[bytes]
    kinds_at: np.ndarray
    layout: _Layout | None

    @classmethod
    def none(cls) -> QuestionSets:
        empty = np.zeros(0, dtype=np.int64)
        return cls([], empty, [], empty, None)

    def lists(self, separator: str = ";") -> list[pa.Array]:
        """Per row, its possible verdicts, next questions and deciding questions, each joined
        by `separator`: ";", the text columns (screen_frame); ",", a JSON list's items."""
        asked = [self.layout.asked(k, separator) for k in self.kinds] if self.layout else []
        at, kinds_at = pa.array(self.at, pa.int64()), pa.array(self.kinds_at, pa.int64())
        return [
            _texts(_items(p, separator) for p in self.possible).take(at),
            _texts(ranked for ranked, _ in asked).take(kinds_at),
            _texts(deciding for _, deciding in asked).take(kinds_at),
        ]


def _items(names: tuple[str, ...], separator: str) -> str:
    """Names joined by ";", or as a JSON list's items (separator ",")."""
    return ",".join(json.dumps(n) for n in names) if separator == "," else ";".join(names)


def _questions(
    cells: _Cells,
    changing: np.ndarray,
    outcomes: list[RuleOutcome],
    outcome_at: np.ndarray,
    layout: _Layout,
    outlooks: list[Outlook],
    present_at: np.ndarray,
) -> QuestionSets:
    """Per row, its possible verdicts, next and deciding questions (as policy.assess), from its
    outlook and, once per distinct set of its verdict-changing outcomes (`changing` cells), from
    policy.questions. Outcomes of one rule that miss the same fields count as one kind (they
    differ only in values questions never read): a row's set is its kinds, in report order, as
    bytes, told apart by an Arrow hash table, and the answers are kept across chunks."""
    picked = np.flatnonzero(changing)
    used = outcome_at[picked]
    kind = np.zeros(len(outcomes), dtype=np.int32)
    for n in np.unique(used).tolist():
        kind[n] = layout.kind_of(outcomes[n])
    rows = cells.rows[picked]
    offsets = np.zeros(cells.size + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=cells.size) * 4, out=offsets[1:])
    keys = pa.Array.from_buffers(
        pa.binary(), cells.size, [None, pa.py_buffer(offsets), pa.py_buffer(kind[used])]
    )
    encoded = pc.dictionary_encode(keys)
    return QuestionSets(
        [tuple(v._value_ for v in o.possible) for o in outlooks],
        present_at,
        encoded.dictionary.to_pylist(),
        encoded.indices.to_numpy(),
        layout,
    )


def _compact(case_ids: pa.Array, verdicts: pa.Array, lists: list[pa.Array]) -> pa.Array:
    """`--detail ids` JSON lines, as worker.compact_record writes them (json.dumps with
    separators "," and ":"), column by column: the keys' text between each row's values
    (`lists`: each list's items, COMPACT_KEYS order)."""
    plain = bool(pc.all(pc.match_substring_regex(case_ids, _PLAIN_TEXT)).as_py())
    quoted = (
        pc.binary_join_element_wise('"', case_ids, '"', "")
        if plain
        else _texts(json.dumps(case_id) for case_id in case_ids.to_pylist())
    )
    pieces: list[Any] = [f"{{{json.dumps(COMPACT_KEYS[0])}:", quoted]
    pieces += [f",{json.dumps(COMPACT_KEYS[1])}:", verdicts]
    for key, items in zip(COMPACT_KEYS[2:], lists, strict=True):
        pieces += [f",{json.dumps(key)}:[", items, "]"]
    return pc.binary_join_element_wise(*pieces, "}", "")
