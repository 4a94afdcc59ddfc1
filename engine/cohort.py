"""A cohort's outputs on the vectorised engine, built column by column (batch, screen_frame).

engine.evaluate.vectorised gives each decided row's rule statuses and outcomes; here they become
the flat output columns (batch.worker.FLAT_COLUMNS), the questions (`--detail ids` JSON lines,
screen_frame's columns) and the chunk's counts. Each list column (fired rule ids by severity,
conditional, not evaluable, missing fields, open cautions) is a set per row: kept as bits, and
joined into text once per distinct set.
The verdict comes from the policy (engine.policy) once per distinct set of (status, severity)
pairs, and the questions once per distinct set of verdict-changing outcomes, so the policy's
semantics stays in one place. tests/test_vectorised.py holds every column and count to the
per-row path (screen.conclude, screener.flat_outcomes, worker.record).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from engine.dictionary import SETTING_FIELDS
from engine.evaluate.vectorised import (
    CONDITIONAL,
    FIRED,
    NOT_APPLICABLE,
    NOT_EVALUABLE,
    NOT_FIRED,
    STATUSES,
    CohortDecisions,
    unique_rows,
)
from engine.models import RuleOutcome, RuleStatus, Severity, Verdict
from engine.policy import Outlook, VerdictPolicy, policy_for
from engine.rules.ruleset import Ruleset

UNKNOWN_VALUE = "(unknown)"  # a subgroup field not given (batch summaries)
_SEVERITIES = tuple(s.value for s in Severity)
_SETTINGS = frozenset(SETTING_FIELDS)


@dataclass
class FlatColumns:
    """The flat outputs of a chunk's decided rows (in row order) and what they add up to."""

    case_ids: list[str]
    columns: list[pa.Array]  # FLAT_COLUMNS after case_id: verdict, ..., open_cautions
    compact: list[str] | None  # `--detail ids` JSON lines, when asked for
    questions: QuestionSets | None  # when asked for (or compact lines)
    verdicts: Counter[str]
    rule_status: Counter[tuple[str, str]]
    blocks: Counter[str]
    insufficient_only_site: int
    decided_with_cautions_open: int
    subgroups: Counter[tuple[str, str, str]]


def flat_columns(
    decided: CohortDecisions,
    case_ids: list[str],
    ruleset: Ruleset,
    *,
    compact: bool,
    questions: bool = False,
) -> FlatColumns:
    """The outputs of the decided rows, as the per-row path would write them."""
    if not case_ids:
        empty = [pa.array([], pa.string()) for _ in range(9)]
        none: Counter[Any] = Counter()
        return FlatColumns(
            [],
            empty,
            [] if compact else None,
            QuestionSets([], np.zeros(0, np.int64)),
            none,
            none.copy(),
            none.copy(),
            0,
            0,
            none.copy(),
        )
    policy = policy_for(ruleset)
    rules = ruleset.rules
    order = ruleset.report_positions
    statuses = decided.statuses
    severity = [ruleset.severity_of[rule.id] for rule in rules]
    outlooks, present_at, named, verdict_at = row_verdicts(statuses, ruleset)
    verdict_of = [o.entry.verdict for o in outlooks]
    verdicts = Counter(
        {named[n]: hits for n, hits in enumerate(np.bincount(verdict_at).tolist()) if hits}
    )
    ids = [rules[p].id for p in order]
    in_order = statuses[:, list(order)]
    severities = [severity[p] for p in order]
    columns = [pa.array(named, pa.string()).take(pa.array(verdict_at))]
    for level in _SEVERITIES:
        chosen = [s == level for s in severities]
        columns.append(_joined((in_order == FIRED) & np.asarray(chosen), ids))
    columns.append(_joined(in_order == CONDITIONAL, ids))
    open_rules = in_order == NOT_EVALUABLE
    columns.append(_joined(open_rules, ids))
    names, misses = _missing_tables(decided)
    columns.append(_joined(_missing_bits(decided, misses, statuses == NOT_EVALUABLE), names))
    listed = np.asarray([s in policy.listed for s in severities])
    cautions = open_rules & listed
    columns.append(_joined(cautions, ids))
    insufficient = np.asarray([v is Verdict.insufficient_data for v in verdict_of])[present_at]
    # what blocks an insufficient verdict: the missing fields of the rules that can change it
    rule_level = np.asarray([_SEVERITIES.index(s) for s in severity])
    can_change = np.asarray([[s in o.changing for s in _SEVERITIES] for o in outlooks])
    changing_rules = can_change[present_at][:, rule_level]
    changing = (statuses == NOT_EVALUABLE) & changing_rules
    stuck = _missing_bits(decided, misses, changing & insufficient[:, None])[insufficient]
    blocks: Counter[str] = Counter()
    for n, name in enumerate(names):
        hits = int(stuck[:, n].sum())
        if hits:
            blocks[name] += hits
    site_only = np.asarray([name in _SETTINGS for name in names], dtype=bool)
    some = stuck.any(axis=1)
    only_site = some & ~(stuck & ~site_only).any(axis=1)
    decided_open = int((~insufficient & cautions.any(axis=1)).sum())
    rule_status: Counter[tuple[str, str]] = Counter()
    for position, rule in enumerate(rules):
        found = np.bincount(statuses[:, position], minlength=len(STATUSES))
        for index, hits in enumerate(found.tolist()):
            if hits:
                rule_status[(rule.id, STATUSES[index])] += hits
    subgroups: Counter[tuple[str, str, str]] = Counter()
    for name, (codes, values) in decided.probed.items():
        shown = [UNKNOWN_VALUE if v is None else str(v) for v in values]
        pairs = codes * len(named) + verdict_at
        seen, counts = np.unique(pairs, return_counts=True)
        for pair, hit in zip(seen.tolist(), counts.tolist(), strict=True):
            subgroups[(name, shown[pair // len(named)], named[pair % len(named)])] += hit
    asked = (
        _questions(decided, outlooks, present_at, changing, policy)
        if compact or questions
        else None
    )
    lines = _compact(case_ids, columns, asked) if compact and asked is not None else None
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


def row_verdicts(
    statuses: np.ndarray, ruleset: Ruleset
) -> tuple[list[Outlook], np.ndarray, list[str], np.ndarray]:
    """Rows x rules statuses to each row's verdict: the policy's outlooks (one per distinct set
    of present outcomes), each row's outlook, the verdict names and each row's verdict among
    them. Used by flat_columns and by `rules sweep`, which re-decides only the swept rule."""
    policy = policy_for(ruleset)
    severity = [ruleset.severity_of[rule.id] for rule in ruleset.rules]
    # the verdict, once per set of present (status, severity) pairs (policy.decide), a set
    # as bits (status * severities + severity), built a (status, severity) pair at a time:
    # never a rows x rules table of 64-bit words
    # with a policy that ignores not-fired and not-applicable outcomes (no entry names them),
    # those pairs cannot change its outlook: left out, fewer sets are looked up
    inert = (NOT_FIRED, NOT_APPLICABLE) if policy.ignores_inert else ()
    levels = np.asarray([_SEVERITIES.index(s) for s in severity])
    present = np.zeros(len(statuses), dtype=np.int64)
    for level in range(len(_SEVERITIES)):
        of_level = statuses[:, levels == level]
        if not of_level.shape[1]:
            continue
        for status in range(len(STATUSES)):
            if status not in inert:
                hit = (of_level == status).any(axis=1)
                present |= hit.astype(np.int64) << (status * len(_SEVERITIES) + level)
    sets, present_at = np.unique(present, return_inverse=True)
    outlooks = [policy.outlook(_present(int(bits))) for bits in sets]
    if not policy.ignores_inert:  # read every outcome, not cached (policy.decide)
        outlooks = [policy._outlook(_present(int(bits))) for bits in sets]
    present_at = present_at.reshape(-1)
    verdict_of = [o.entry.verdict for o in outlooks]
    named = list(dict.fromkeys(v._value_ for v in verdict_of))
    verdict_at = np.asarray([named.index(v._value_) for v in verdict_of])[present_at]
    return outlooks, present_at, named, verdict_at


def _present(bits: int) -> frozenset[tuple[RuleStatus, str]]:
    return frozenset(
        (STATUSES[n // len(_SEVERITIES)], _SEVERITIES[n % len(_SEVERITIES)])
        for n in range(bits.bit_length())
        if bits >> n & 1
    )


def _joined(chosen: np.ndarray, names: Sequence[str]) -> pa.Array:
    """Per row, the chosen names in order joined by ";": once per distinct row of `chosen`."""
    if not len(chosen):
        return pa.array([], pa.string())
    keep = np.flatnonzero(chosen.any(axis=0))  # names no row chose need no bit
    if not len(keep):
        return pa.array([""] * len(chosen), pa.string())
    chosen = chosen[:, keep]
    names = [names[n] for n in keep.tolist()]
    _, first, inverse = unique_rows(_bit_words(chosen))
    rows, picked = np.nonzero(chosen[first])
    named = [names[n] for n in picked.tolist()]
    bounds = np.searchsorted(rows, np.arange(len(first) + 1)).tolist()
    texts = [";".join(named[bounds[n] : bounds[n + 1]]) for n in range(len(first))]
    return pa.array(texts, pa.string()).take(pa.array(inverse))


def _bit_words(chosen: np.ndarray) -> np.ndarray:
    """Rows of booleans as rows of uint64 words, a bit per column (np.packbits: one pass, not
    a shift per column; over rows padded to whole words and laid end to end, which packs
    several times faster than packbits along axis 1)."""
    rows, width = chosen.shape
    padded = np.zeros((rows, -(-width // 64) * 64), dtype=bool)
    padded[:, :width] = chosen
    words = np.packbits(padded.reshape(-1), bitorder="little").view(np.uint64)
    return words.reshape(rows, padded.shape[1] // 64)


def _missing_tables(decided: CohortDecisions) -> tuple[list[str], list[np.ndarray]]:
    """The names any not-evaluable outcome misses, sorted, and per rule, per outcome number,
    which of them it misses (an outcome of another status misses none here)."""
    names = sorted({m for table in decided.tables for o in table for m in o.missing})
    index = {name: n for n, name in enumerate(names)}
    tables = []
    for table in decided.tables:
        misses = np.zeros((len(table), len(names)), dtype=bool)
        for number, outcome in enumerate(table):
            if outcome.missing and outcome.status is RuleStatus.not_evaluable:
                misses[number, [index[m] for m in outcome.missing]] = True
        tables.append(misses)
    return names, tables


def _missing_bits(
    decided: CohortDecisions, misses: list[np.ndarray], picked: np.ndarray
) -> np.ndarray:
    """Per row, which names the not-evaluable outcomes `picked` (rows x rules) miss."""
    width = misses[0].shape[1] if misses else 0
    found = np.zeros((len(picked), width), dtype=bool)
    if not width:
        return found
    for position, table in enumerate(misses):
        rows = np.flatnonzero(picked[:, position])
        if len(rows):
            found[rows] |= table[decided.numbers[rows, position]]
    return found


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


Questions = tuple[list[str], list[str], list[str]]  # possible verdicts, next, deciding


@dataclass(frozen=True)
class QuestionSets:
    """The rows' questions, once per distinct set (`distinct`) and each row's set (`at`)."""

    distinct: list[Questions]
    at: np.ndarray

    def per_row(self) -> list[Questions]:
        return [self.distinct[n] for n in self.at.tolist()]


def _questions(
    decided: CohortDecisions,
    outlooks: list[Outlook],
    present_at: np.ndarray,
    changing: np.ndarray,
    policy: VerdictPolicy,
) -> QuestionSets:
    """Per row, its possible verdicts, next and deciding questions (as policy.assess), once per
    distinct set of what assess reads: the outlook's possible verdicts and, of each
    verdict-changing outcome, its rule and missing fields (outcomes of one rule that miss the
    same fields count once: they differ only in values assess never reads). Each set is
    assessed with the outlook of its first row, whose changing severities are the set's."""
    possible: dict[tuple[Verdict, ...], int] = {}  # outlooks with one possible set alike
    key = np.asarray([possible.setdefault(o.possible, n) for n, o in enumerate(outlooks)])
    key, size = key[present_at].astype(np.int64), len(outlooks)
    rules = np.flatnonzero(changing.any(axis=0)).tolist()
    for position in rules:  # the key grows by one digit per rule: its open outcome's kind
        table = decided.tables[position]
        seen: dict[tuple[RuleStatus, tuple[str, ...]], int] = {}
        kind = np.asarray([seen.setdefault((o.status, o.missing), n) for n, o in enumerate(table)])
        open_here = changing[:, position]
        number = np.where(open_here, decided.numbers[:, position], 0)
        key = key * (len(table) + 1) + np.where(open_here, kind[number] + 1, 0)
        size *= len(table) + 1
        if size > 2**40:  # kept far from overflow: renumbered densely
            _, key = np.unique(key, return_inverse=True)
            key, size = key.reshape(-1).astype(np.int64), int(key.max()) + 1
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    found: list[Questions] = []
    order = decided.report_order
    tables = [decided.tables[p] for p in rules]
    opened = np.where(changing[first][:, rules], decided.numbers[first][:, rules], -1).tolist()
    for numbers, outlook in zip(opened, present_at[first].tolist(), strict=True):
        open_outcomes: list[RuleOutcome] = [
            table[n] for table, n in zip(tables, numbers, strict=True) if n >= 0
        ]
        open_outcomes.sort(key=lambda o: order[o.rule_id])
        its = outlooks[outlook]
        ranked, deciding = policy.questions(policy.changing(its, open_outcomes))
        found.append(([v._value_ for v in its.possible], list(ranked), list(deciding)))
    return QuestionSets(found, inverse.reshape(-1))


def _compact(case_ids: list[str], columns: list[pa.Array], questions: QuestionSets) -> list[str]:
    """`--detail ids` JSON lines, as worker.compact_record writes them."""
    texts = [column.to_pylist() for column in columns]
    lines = []
    asked_per_row = questions.per_row()
    for case_id, asked, verdict, *rest in zip(case_ids, asked_per_row, *texts, strict=True):
        *severities, conditional, not_evaluable, missing, cautions = rest
        possible, next_questions, deciding = asked
        values = (
            case_id,
            verdict,
            [i for ids in severities if ids for i in ids.split(";")],
            conditional.split(";") if conditional else [],
            not_evaluable.split(";") if not_evaluable else [],
            missing.split(";") if missing else [],
            possible,
            next_questions,
            deciding,
            cautions.split(";") if cautions else [],
        )
        lines.append(
            json.dumps(dict(zip(COMPACT_KEYS, values, strict=True)), separators=(",", ":"))
        )
    return lines
