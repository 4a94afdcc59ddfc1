"""The vectorised engine gives byte-identical outputs to durable-rules and the reference.

A chunk is screened by engine.batch.worker.screen_chunk on each engine and everything it sends
back is compared: the output records (CSV rows, Parquet batches, `--detail ids` JSON lines), the
error records, every count and the id lines. Whole batch runs compare the files themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.batch.run import CHUNK_ROWS_ENV, BatchOptions, run_batch
from engine.batch.worker import (
    FAULT_ENV,
    ChunkResult,
    Detail,
    OutputFormat,
    WorkerConfig,
    init_worker,
    screen_chunk,
)
from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.evaluate.base import explained_outcome
from engine.evaluate.vectorised import (
    NODE_CLASSES,
    STATUSES,
    CohortDecisions,
    CohortPlan,
    _GapWalks,
)
from engine.goldens import golden_cases
from engine.io.columnar import validate_columns
from engine.io.tables import Chunk
from engine.models import RuleStatus, Scalar
from engine.rules.bundled import bundled_rules_dir
from engine.rules.condition import Compare, Cond, Const, Member, fields_of
from engine.rules.loader import load_ruleset
from engine.screener import Screener
from engine.synth import write_cohort
from tests.test_anatomy import CASES as ANATOMY_CASES

RULES = str(bundled_rules_dir())
RULESET = load_ruleset(RULES)
ENGINES = ("vectorised", "durable", "reference")
_ARROW = {
    FieldType.enum: pa.string(),
    FieldType.string: pa.string(),
    FieldType.boolean: pa.bool_(),
    FieldType.integer: pa.int64(),
    FieldType.number: pa.float64(),
}
SCHEMA = pa.schema([(name, _ARROW[FIELDS_BY_NAME[name].type]) for name in INPUT_FIELDS])
TEACHING = {"mis_equipment_available": True, "navigation_available": True, "surgeon_mis_cases": 50}


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Rows as Parquet would hold them: every dictionary column at its type."""
    typed = [
        {
            k: float(v) if v is not None and SCHEMA.field(k).type == pa.float64() else v
            for k, v in row.items()
        }
        for row in rows
    ]
    return pa.RecordBatch.from_pylist(typed, schema=SCHEMA)


def _screen(
    batch: pa.RecordBatch,
    engine: str,
    output_format: OutputFormat = OutputFormat.jsonl,
    site: dict[str, Any] | None = None,
) -> ChunkResult:
    config = WorkerConfig(
        rules_dir=RULES,
        ruleset_sha256=RULESET.sha256,
        site=site or {},
        output_format=output_format,
        ignored_columns=frozenset(),
        in_process=True,
        detail=Detail.ids,
        engine=engine,
    )
    init_worker(config)
    return screen_chunk(Chunk(0, "<test>", [], batch=batch, first=1))


def _outputs(result: ChunkResult) -> dict[str, Any]:
    """Everything a chunk sends back, comparable (Parquet batches as their rows)."""
    found = dict(vars(result))
    found["records"] = [
        r.to_pylist() if isinstance(r, pa.RecordBatch) else r for r in result.records
    ]
    return found


def _assert_identical(
    rows: list[dict[str, Any]] | pa.RecordBatch,
    formats: Iterable[OutputFormat] = (OutputFormat.jsonl, OutputFormat.parquet),
    site: dict[str, Any] | None = None,
) -> None:
    batch = rows if isinstance(rows, pa.RecordBatch) else _batch(rows)
    for output_format in formats:
        expected = _outputs(_screen(batch, "durable", output_format, site))
        assert expected["screened"] > 0
        for engine in ("vectorised", "reference"):
            found = _outputs(_screen(batch, engine, output_format, site))
            for key, value in expected.items():
                assert found[key] == value, f"{engine} {output_format}: {key} differs"


def _decided_share(
    rows: list[dict[str, Any]] | pa.RecordBatch, site: dict[str, Any] | None = None
) -> float:
    """The share of plainly valid rows the vectorised engine decides itself."""
    screener = Screener.from_ruleset(RULESET, "vectorised", site=site)
    batch = rows if isinstance(rows, pa.RecordBatch) else _batch(rows)
    _, decided = _decide(screener, batch)
    plain = validate_columns(batch).plain.to_numpy(zero_copy_only=False)
    return len(decided.rows) / max(1, int(plain.sum()))


def _read(path: Path) -> pa.RecordBatch:
    return pq.read_table(path).combine_chunks().to_batches()[0]


GOLDEN_ROWS = [{**g.case, "case_id": f"G-{n}"} for n, g in enumerate(golden_cases(RULESET))]


@pytest.mark.timeout(300)
def test_every_golden_case_is_identical_on_every_engine() -> None:
    _assert_identical(GOLDEN_ROWS, (OutputFormat.jsonl, OutputFormat.parquet, OutputFormat.csv))


@pytest.mark.timeout(300)
def test_every_golden_case_is_identical_with_a_site_profile() -> None:
    _assert_identical(GOLDEN_ROWS, site=TEACHING)


@pytest.mark.timeout(300)
def test_a_site_profile_fills_settings_an_input_has_no_column_for() -> None:
    batch = _batch(GOLDEN_ROWS).drop_columns(list(TEACHING))
    _assert_identical(batch, site=TEACHING)
    assert _decided_share(batch, TEACHING) > 0.9


@pytest.mark.timeout(300)
def test_a_per_technique_site_setting_screens_row_by_row_identically() -> None:
    site = {"surgeon_mis_cases": {"mis_tlif": 10, "llif": 200}}
    _assert_identical(GOLDEN_ROWS, (OutputFormat.jsonl,), site=site)
    assert _decided_share(GOLDEN_ROWS, site) == 0  # chosen after constraints: per row


@pytest.mark.timeout(600)
def test_every_anatomy_case_is_identical_on_every_engine() -> None:
    rows = [
        {
            "case_id": f"A-{n}",
            "age_years": 50,
            "sex": "female",
            "diagnosis": diagnosis,
            "lowest_level": level,
            "levels": levels,
            "planned_procedure": procedure,
        }
        for n, (level, levels, diagnosis, procedure) in enumerate(ANATOMY_CASES)
    ]
    _assert_identical(rows)
    assert _decided_share(rows) == 1
    only_these = pa.RecordBatch.from_pylist(rows)  # no column for any other field
    assert only_these.num_columns == 7
    _assert_identical(only_these, (OutputFormat.parquet,))


def _constants(cond: Cond) -> Iterable[tuple[str, float]]:
    if isinstance(cond, Compare) and isinstance(cond.rhs, Const):
        if FIELDS_BY_NAME[cond.field].is_numeric and cond.field in SCHEMA.names:
            yield cond.field, float(cond.rhs.value)  # type: ignore[arg-type]  # numeric
    elif isinstance(cond, Member):
        if FIELDS_BY_NAME[cond.field].is_numeric and cond.field in SCHEMA.names:
            yield from ((cond.field, float(v)) for v in cond.values)  # type: ignore[arg-type]
    elif hasattr(cond, "items"):
        for item in cond.items:
            yield from _constants(item)
    elif hasattr(cond, "item"):
        yield from _constants(cond.item)


def _threshold_rows() -> list[dict[str, Any]]:
    """Every golden case of a rule (or derived band) reading a numeric field, with that field
    set at each threshold any condition compares it with, and just either side of it."""
    conds: list[Cond] = [c for r in RULESET.rules for c in (r.scope, r.when) if c is not None]
    conds += [c for d in RULESET.derived for c, _ in d.bands]
    conds += [d.condition for d in RULESET.derived if d.condition is not None]
    thresholds: dict[str, set[float]] = {}
    for cond in conds:
        for name, value in _constants(cond):
            thresholds.setdefault(name, set()).add(value)
    rows = []
    for golden in golden_cases(RULESET):
        for name in sorted(set(golden.case) & set(thresholds)):
            spec = FIELDS_BY_NAME[name]
            step = 1.0 if spec.type is FieldType.integer else 0.1
            for cut in sorted(thresholds[name]):
                for value in (cut - step, cut, cut + step):
                    low = spec.minimum if spec.minimum is not None else -np.inf
                    high = spec.maximum if spec.maximum is not None else np.inf
                    if low <= value <= high:
                        number = int(value) if spec.type is FieldType.integer else value
                        rows.append({**golden.case, name: number, "case_id": f"T-{len(rows)}"})
    return rows


@pytest.mark.timeout(600)
def test_values_at_and_either_side_of_every_threshold_are_identical() -> None:
    rows = _threshold_rows()
    assert len(rows) > 1000
    _assert_identical(rows)


@pytest.mark.slow  # CI holds 50k rows through tests/test_engines_differential.py's batch runs
@pytest.mark.timeout(900)
def test_a_synthetic_cohort_of_50k_rows_gives_identical_files(tmp_path: Path) -> None:
    """Missing and corrupt values included; every output file byte for byte, as batch writes
    them (Parquet and CSV against durable-rules, JSONL against the reference)."""
    cohort = tmp_path / "cohort.parquet"
    write_cohort(cohort, 50_000, seed=29, missing=0.1, corrupt=0.02)
    outputs: dict[tuple[str, str], list[bytes]] = {}
    for engine, output_format in (
        ("vectorised", "parquet"),
        ("durable", "parquet"),
        ("vectorised", "jsonl"),
        ("reference", "jsonl"),
    ):
        out = tmp_path / f"{engine}.{output_format}"
        errors, summary = tmp_path / f"{engine}-{output_format}.errors", tmp_path / "s.json"
        run_batch(
            BatchOptions(
                inputs=[str(cohort)],
                out=str(out),
                output_format=OutputFormat(output_format),
                rules_dir=RULES,
                errors=str(errors),
                workers=1,
                detail=Detail.ids,
                summary=str(summary),
                engine=engine,
            ),
            RULESET,
        )
        text = summary.read_text()
        stamped = ('"duration_s"', '"run_id"', '"path"', '"started"', '"engine"')
        kept = [line for line in text.splitlines() if not line.strip().startswith(stamped)]
        outputs[(engine, output_format)] = [
            out.read_bytes(),
            errors.read_bytes(),
            "\n".join(kept).encode(),
        ]
    assert outputs[("vectorised", "parquet")] == outputs[("durable", "parquet")]
    assert outputs[("vectorised", "jsonl")] == outputs[("reference", "jsonl")]
    assert outputs[("durable", "parquet")][1].count(b"\n") > 500  # the corrupt rows


@pytest.mark.timeout(600)
def test_a_synthetic_cohort_as_csv_is_identical(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort.parquet"
    write_cohort(cohort, 5_000, seed=30, missing=0.2, corrupt=0.02)
    _assert_identical(_read(cohort), (OutputFormat.csv,), site=TEACHING)


@pytest.mark.timeout(300)
def test_a_chunk_sliced_off_a_bitmap_byte_boundary_is_identical(tmp_path: Path) -> None:
    """Known masks and boolean values are read from Arrow's bitmaps: a batch that starts
    mid-byte (a slice of a larger one, as chunks are) must be read from its own first row."""
    cohort = tmp_path / "cohort.parquet"
    write_cohort(cohort, 700, seed=32, missing=0.3, corrupt=0.0)
    whole = _read(cohort)
    for start in (3, 13):
        sliced = whole.slice(start, 500)
        assert sliced.column("pregnant").offset == start
        _assert_identical(sliced, (OutputFormat.parquet,))
        assert _decided_share(sliced) > 0.99


@pytest.mark.timeout(300)
def test_the_vectorised_engine_decides_nearly_every_row_itself(tmp_path: Path) -> None:
    """Identity alone would pass if every row fell back to the per-row path."""
    cohort = tmp_path / "cohort.parquet"
    write_cohort(cohort, 5_000, seed=31, missing=0.05, corrupt=0.0)
    assert _decided_share(_read(cohort)) > 0.99


@pytest.mark.timeout(120)
def test_contradictory_facts_are_refused_with_the_same_error() -> None:
    rows = [
        {"case_id": "C-1", "sex": "male", "age_years": 40, "pregnant": True},
        {"case_id": "C-2", "lowest_level": "L4-L5", "region": "cervical"},
        {
            "case_id": "C-3",
            "tlics_morphology": "burst",
            "tlics_plc": "intact",
            "tlics_neuro": "intact",
            "tlics_score": 9,
        },
        {"case_id": "C-4", "diagnosis": "disc_herniation"},
    ]
    result = _screen(_batch(rows), "vectorised")
    assert [e["case_id"] for e in result.errors] == ["C-1", "C-2", "C-3"]
    _assert_identical(rows)


def _decide(
    screener: Screener, batch: pa.RecordBatch
) -> tuple[list[dict[str, Scalar]], CohortDecisions]:
    """What the screener's plan decided for a chunk, and the values of the rows it decided."""
    columns = validate_columns(batch)
    plain = columns.plain.to_numpy(zero_copy_only=False)
    decided = screener.cohort_plan.decide(
        columns.values,
        plain,
        screener.cohort_prepare,
        lambda picked: [values for _, values in columns.row_values(picked)],
    )
    values = [v for _, v in columns.row_values(decided.rows.tolist())]
    return values, decided


def _gap_cohort(tmp_path: Path) -> pa.RecordBatch:
    """Rows with much missing: many rules not evaluable, on many different sets of fields."""
    cohort = tmp_path / "gaps.parquet"
    write_cohort(cohort, 2_000, seed=32, missing=0.3, corrupt=0.0)
    return _read(cohort)


@pytest.mark.timeout(300)
def test_a_not_evaluable_outcome_is_the_one_its_own_row_explains(tmp_path: Path) -> None:
    """The engine explains one row per rule and set of fields named, and gives that outcome
    to every row with the same set: were the set coarser than what base.explained_outcome
    depends on, some row would get another row's fields. Each row is explained here itself."""
    screener = Screener.from_ruleset(RULESET, "vectorised")
    values, decided = _decide(screener, _gap_cohort(tmp_path))
    status = RuleStatus.not_evaluable
    checked, sets = 0, set()
    for row, facts in enumerate(map(screener.cohort_prepare, values)):
        for position, rule in enumerate(RULESET.rules):
            found = decided.tables[position][decided.numbers[row, position]]
            if STATUSES[decided.statuses[row, position]] is status:
                assert found == explained_outcome(rule, status, facts, RULESET), rule.id
                checked += 1
                sets.add((rule.id, found.missing))
            else:
                assert found.missing == ()
    assert checked > 5_000
    assert len(sets) > 200
    derived = set(RULESET.derived_by_field)
    assert any(set(m) - fields_of(RULESET.by_id[r].when) for r, m in sets)  # expanded
    assert any(set(fields_of(RULESET.by_id[r].when)) & derived for r, m in sets if m)


def _assert_keys_decode_to_their_outcomes(plan: CohortPlan) -> int:
    """Each kept key holds the rule (its lowest bits) and one bit per field named: it decodes
    to exactly the outcome kept for it, and no two keys of a rule name the same fields."""
    layout = plan._gap_bits
    seen = set()
    for key, outcome in plan._explained.items():
        words = np.frombuffer(key, np.uint64) if isinstance(key, bytes) else np.uint64([key])
        assert len(words) == layout.words
        rule = RULESET.rules[int(words[0]) & ((1 << layout.first) - 1)]
        named = tuple(sorted(n for n, bit in layout.bit.items() if (words & bit).any()))
        assert (outcome.rule_id, outcome.status, outcome.missing) == (
            rule.id,
            RuleStatus.not_evaluable,
            named,
        )
        seen.add((rule.id, named))
    assert len(seen) == len(plan._explained)
    return len(seen)


@pytest.mark.timeout(300)
def test_each_cached_explanation_is_exactly_its_key(tmp_path: Path) -> None:
    screener = Screener.from_ruleset(RULESET, "vectorised")
    _decide(screener, _gap_cohort(tmp_path))
    _decide(screener, _batch(GOLDEN_ROWS))
    assert _assert_keys_decode_to_their_outcomes(screener.cohort_plan) > 200


@pytest.mark.timeout(300)
def test_a_key_of_several_words_gives_the_same_outcomes(tmp_path: Path) -> None:
    """A ruleset whose explanations name more input fields than one 64-bit word holds beside
    the rule number keys several words: the bundled rules' fields spread over many words."""
    batch = _gap_cohort(tmp_path)
    narrow = Screener.from_ruleset(RULESET, "vectorised")
    wide = Screener.from_ruleset(RULESET, "vectorised")
    plan = wide.cohort_plan
    layout = plan._gap_bits
    assert layout.words == 1
    layout.words = (layout.first + 37 * len(layout.bit)) // 64 + 1
    for n, name in enumerate(sorted(layout.bit)):
        word, shift = divmod(layout.first + 37 * n, 64)
        layout.bit[name] = np.zeros(layout.words, dtype=np.uint64)
        layout.bit[name][word] = np.uint64(1) << np.uint64(shift)
    assert layout.words > 10
    plan._gap_walks = _GapWalks(RULESET, layout)  # compiled with the new layout
    _, expected = _decide(narrow, batch)
    _, found = _decide(wide, batch)
    assert np.array_equal(found.statuses, expected.statuses)
    rows, rules = np.indices(expected.numbers.shape)
    for row, position in zip(rows.ravel().tolist(), rules.ravel().tolist(), strict=True):
        assert (
            found.tables[position][found.numbers[row, position]]
            == expected.tables[position][expected.numbers[row, position]]
        )
    assert _assert_keys_decode_to_their_outcomes(plan) > 200


def test_every_condition_node_class_has_a_column_compilation() -> None:
    assert set(NODE_CLASSES) == set(typing.get_args(Cond))


def test_the_plan_refuses_what_it_cannot_follow() -> None:
    plan = CohortPlan(RULESET, site={"surgeon_mis_cases": {"llif": 10}})
    assert not plan.runs
    assert CohortPlan(RULESET, site=TEACHING).runs


# --- fault guarantees on the vectorised path (tests/test_faults.py runs JSONL cohorts, which
# go row by row; these run Parquet and CSV chunks, which the vectorised engine decides) -----

ROOT = Path(__file__).resolve().parent.parent


def _faulty_run(
    cohort: Path, folder: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, bytes]]:
    folder.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MISS_SCREEN_FAULT")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "batch", str(cohort), "--out",
         str(folder / "o.parquet"), "--summary", str(folder / "s.json"), "--workers", "2",
         "--progress", "none", "--detail", "ids"],
        capture_output=True, text=True, check=False, timeout=300,
        env={**clean, CHUNK_ROWS_ENV: "2000", **env},
    )  # fmt: skip
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "s.json"}
    return done, files


@pytest.fixture(scope="module", params=["parquet", "csv"])
def fault_cohort(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Parquet chunks, and CSV chunks that travel as Arrow text columns (issue 29)."""
    path = tmp_path_factory.mktemp("faults") / f"cohort.{request.param}"
    write_cohort(path, 10_000, seed=32, missing=0.1, corrupt=0.01)
    return path


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_a_worker_killed_once_on_the_vectorised_path_loses_nothing(
    fault_cohort: Path, tmp_path: Path
) -> None:
    clean, expected = _faulty_run(fault_cohort, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    marks = tmp_path / "marks"
    marks.mkdir()
    killed, found = _faulty_run(
        fault_cohort, tmp_path / "killed", **{FAULT_ENV: f"SYN-0000007@{marks}"}
    )
    assert killed.returncode == 0, killed.stderr
    assert found == expected
    summary = json.loads((tmp_path / "killed" / "s.json").read_text())
    assert summary["stamp"]["worker_restarts"] >= 1


@pytest.mark.faults
@pytest.mark.timeout(600)
def test_a_row_that_kills_every_vectorised_worker_is_isolated_and_rejected(
    fault_cohort: Path, tmp_path: Path
) -> None:
    clean, expected = _faulty_run(fault_cohort, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    done, found = _faulty_run(fault_cohort, tmp_path / "killed", **{FAULT_ENV: "SYN-0004500"})
    assert done.returncode == 0, done.stderr
    table = pq.read_table(pa.BufferReader(found["o.parquet"]))
    wanted = pq.read_table(pa.BufferReader(expected["o.parquet"]))
    keep = [n for n, i in enumerate(wanted["case_id"].to_pylist()) if i != "SYN-0004500"]
    assert table.num_rows == len(keep) == wanted.num_rows - 1
    assert table.equals(wanted.take(keep))
    errors = found["o.parquet.errors.jsonl"].decode()
    assert '"case_id": "SYN-0004500"' in errors
    assert "worker process died" in errors


@pytest.mark.timeout(600)
def test_screen_frame_is_identical_on_the_vectorised_engine(tmp_path: Path) -> None:
    import pandas as pd
    import polars

    cohort = tmp_path / "cohort.parquet"
    write_cohort(cohort, 5_000, seed=33, missing=0.1, corrupt=0.02)
    frames = [
        pd.read_parquet(cohort),
        pd.DataFrame(GOLDEN_ROWS),
        pd.DataFrame(GOLDEN_ROWS).drop(columns=["case_id"]).assign(case_id=range(len(GOLDEN_ROWS))),
    ]
    vectorised = Screener.from_ruleset(RULESET, "vectorised")
    for frame in frames:
        expected = Screener.from_ruleset(RULESET, "durable").screen_frame(frame)
        found = vectorised.screen_frame(frame)
        assert found.equals(expected)
        assert found.attrs == expected.attrs
    assert (found["rejected"].notna()).sum() == 0  # integer ids are read as text
    as_polars = polars.from_pandas(frames[0])
    assert vectorised.screen_frame(as_polars).equals(
        Screener.from_ruleset(RULESET, "durable").screen_frame(as_polars)
    )
    assert _decided_share(_read(cohort)) > 0.95


@pytest.mark.timeout(300)
@pytest.mark.parametrize("emptied", ["diabetes", "herniation_location", "bmi", "levels"])
def test_a_column_with_no_value_at_all_is_unknown_as_on_every_engine(emptied: str) -> None:
    """Parquet types a column that holds no value as `null` (pandas writes an all-None column
    so); every engine reads it as unknown, none stops (a crash of the vectorised engine once)."""
    typed = _batch(GOLDEN_ROWS)
    at = typed.schema.get_field_index(emptied)
    batch = typed.set_column(at, pa.field(emptied, pa.null()), pa.nulls(typed.num_rows))
    assert batch.schema.field(emptied).type == pa.null()
    _assert_identical(batch)
    assert _decided_share(batch) > 0.99


def test_equal_nodes_spelt_alike_are_shared_and_equal_ones_spelt_apart_are_not() -> None:
    """Equal nodes of different rules are evaluated once a chunk; `Const(True) == Const(1)`
    in Python, so equality alone would merge a boolean test with a numeric one wherever the
    parser let both through: they are shared only when also spelt alike."""
    from engine.rules.condition import Compare, Const

    plan = Screener.from_ruleset(RULESET, "vectorised").cohort_plan
    flag, one, other_one = (
        Compare("==", "diabetes", Const(True)),
        Compare("==", "diabetes", Const(1)),
        Compare("==", "diabetes", Const(1)),
    )
    assert flag == one  # what the dataclasses say
    assert plan._shared(one) is plan._shared(other_one) is one
    assert plan._shared(flag) is flag
