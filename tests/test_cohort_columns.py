"""engine.cohort builds a chunk's outputs column by column (no Python per row): here they are
held, on random outcomes, to what the per-row path computes for each row on its own
(screener.flat_outcomes for the flat columns, policy.assess for the questions). The random
tables give ties the bundled rules rarely make: several open rules of one severity missing the
same fields, deciding and listed rules sharing a field, rows with nothing open. And the id lines'
hashes read an Arrow array through its offsets: a slice hashes as its ids do."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from engine.batch.worker import chunk_ids, id_hashes
from engine.cohort import flat_columns, row_verdicts
from engine.evaluate.vectorised import NOT_EVALUABLE, STATUSES, CohortDecisions
from engine.models import RuleOutcome, RuleStatus, settled_outcome
from engine.policy import policy_for
from engine.screen import notable_outcomes
from engine.screener import flat_outcomes
from tests.conftest import RULESET

FIELDS = ["age_years", "bmi", "diagnosis", "levels", "navigation_available", "sva_mm"]


def _random_chunk(seed: int, rows: int) -> CohortDecisions:
    """Random statuses (mostly settled), and for each rule a few not-evaluable outcomes that
    miss random sets of FIELDS (a set, in order, as derive.missing_inputs gives)."""
    random = np.random.default_rng(seed)
    rules = RULESET.rules
    statuses = random.choice(len(STATUSES), size=(rows, len(rules)), p=[0.4, 0.3, 0.05, 0.2, 0.05])
    statuses = statuses.astype(np.int8)
    tables: list[list[RuleOutcome]] = []
    numbers = statuses.astype(np.int32)
    for position, rule in enumerate(rules):
        table = [settled_outcome(rule.id, status) for status in STATUSES]
        for _ in range(random.integers(0, 4)):
            picked = random.choice(FIELDS, size=random.integers(1, 4), replace=False)
            missing = tuple(sorted(str(name) for name in picked))
            table.append(RuleOutcome(rule.id, RuleStatus.not_evaluable, missing))
        open_rows = np.flatnonzero(statuses[:, position] == NOT_EVALUABLE)
        choices = [NOT_EVALUABLE, *range(len(STATUSES), len(table))]
        numbers[open_rows, position] = random.choice(choices, size=len(open_rows))
        tables.append(table)
    return CohortDecisions(
        np.arange(rows), statuses, numbers, tables, {}, RULESET.report_order, None
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_columns_and_questions_are_each_rows_own_on_random_outcomes(seed: int) -> None:
    decided = _random_chunk(seed, 400)
    ids = pa.array([f"c-{n}" for n in range(400)], pa.string())
    flat = flat_columns(decided, ids, RULESET, compact=True)
    assert flat.questions is not None
    assert flat.compact is not None
    possible, ranked, deciding = (column.to_pylist() for column in flat.questions.lists())
    columns = [column.to_pylist() for column in flat.columns]
    outlooks, present_at, _, _ = row_verdicts(decided.statuses, RULESET)
    policy = policy_for(RULESET)
    asked = 0
    for row in range(400):
        outcomes = [
            table[number]
            for table, number in zip(decided.tables, decided.numbers[row].tolist(), strict=True)
        ]
        notable = notable_outcomes(outcomes, RULESET)  # in report order, as screen gives
        outlook = outlooks[present_at[row]]
        expected = flat_outcomes(f"c-{row}", outlook.entry.verdict, notable, RULESET)
        assert tuple([f"c-{row}", *(column[row] for column in columns)]) == expected
        assessment = policy.assess(outlook, notable)
        assert possible[row] == ";".join(assessment.possible)
        assert ranked[row] == ";".join(assessment.next_questions)
        assert deciding[row] == ";".join(assessment.deciding_questions)
        line = json.loads(flat.compact[row].as_py())
        assert line["next_questions"] == list(assessment.next_questions)
        assert line["missing_fields"] == (expected[-2].split(";") if expected[-2] else [])
        asked += len(assessment.next_questions) > 1
    assert asked > 40  # rows whose questions are ranked against each other


@pytest.mark.timeout(30)
def test_id_hashes_read_a_sliced_arrow_array_as_its_ids() -> None:
    ids = ["a", "bb", "A-1", "x" * 64, "case.0001_b", "9"]
    whole = pa.array(["skipped", *ids, "after"], pa.string())
    sliced = whole.slice(1, len(ids))
    assert id_hashes(sliced).tolist() == id_hashes(ids).tolist()
    numbers = np.arange(2, 2 + len(ids))
    assert chunk_ids(numbers, sliced) == chunk_ids(numbers, ids)


@pytest.mark.timeout(60)
def test_threads_sharing_a_rulesets_layout_never_give_two_names_one_number() -> None:
    """The layout lives on the ruleset, so every thread screening with it numbers kinds and
    missing-field bits in one table: under a switch interval of a microsecond, eight threads
    numbering the same names at once give each its own number, and every thread sees it."""
    import sys
    import threading

    from engine.cohort import MissingNames, _Layout

    layout, names = _Layout(RULESET), MissingNames()
    rule = RULESET.rules[0].id
    outcomes = [
        RuleOutcome(rule_id=rule, status=RuleStatus.not_evaluable, missing=(f"f{n}",))
        for n in range(300)
    ]
    seen: list[tuple[list[int], list[int]]] = []
    start = threading.Barrier(8)

    def number() -> None:
        start.wait()
        kinds = [layout.kind_of(o) for o in outcomes]
        masks = [names.mask(o.missing) for o in outcomes]
        seen.append((kinds, masks))

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=number) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sys.setswitchinterval(before)
    assert len(seen) == 8
    kinds, masks = seen[0]
    assert sorted(kinds) == list(range(300))
    assert sorted(masks) == [1 << n for n in range(300)]
    assert all(s == (kinds, masks) for s in seen)
