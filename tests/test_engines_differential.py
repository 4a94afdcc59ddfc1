"""Every engine holds to every other: the same results, field for field (issue 29 item 2).

The engines are those registered in engine.screener.ENGINES, whatever they are: today durable
and reference; the vectorised engine is held to them the moment it registers, with no edit
here. Each is compared with the first, ENGINES[0], on

1. every golden case of every rule and derived attribute, and every case of the anatomy test
   (tests/test_anatomy.py): the full result (the JSON contract), through the single-case path
   (`Screener.screen`) and the cohort paths (`screen_many`, `screen_frame`);
2. values at every numeric threshold of the parsed rules, derived attributes and constraints and
   just either side of it, and the field unknown, each on a synthetic row where the threshold
   decides something (tests/thresholds.py);
3. the real batch command on a 50,000-row differential cohort (the synthetic cohort, a missing
   and a corrupt variant; engine/synth/variants.py) as CSV and Parquet, `--detail ids` and, on
   5,000 rows, `--detail full`: every output file byte for byte, the summary but for its clock
   (benchmarks/differential.py, which `make bench` runs on 1,000,000 rows).

A difference shows its first few cases or rows, with the fields that differ and both values.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from benchmarks.differential import (
    RUNS,
    SEED,
    SHOWN,
    BatchRun,
    compare_runs,
    leaf_differences,
    run_engine,
    short,
    write_inputs,
)
from engine.dictionary import FIELDS_BY_NAME
from engine.errors import CaseInputError
from engine.goldens import golden_cases
from engine.models import Result
from engine.rules.condition import parse_condition, to_text
from engine.rules.ruleset import Ruleset
from engine.screener import ENGINES, FRAME_COLUMNS, Screener
from engine.synth import generate_rows
from engine.synth.variants import corrupt_rows
from tests.conftest import RULES_DIR, RULESET
from tests.test_anatomy import CASES as ANATOMY
from tests.test_anatomy import anatomy_case
from tests.thresholds import Probed, Prober, probe, thresholds, valid_rows, values_around

COHORT_ROWS = 50_000
BASE_ROWS = 2_000  # synthetic rows the threshold cases are drawn from
OTHERS = ENGINES[1:]  # each compared with ENGINES[0]
THRESHOLDS = thresholds(RULESET)

Case = dict[str, Any]
Outputs = Callable[[Screener, list[Case]], list[str]]


@pytest.fixture(scope="module")
def screeners() -> dict[str, Screener]:
    """One Screener per registered engine, on the bundled rules."""
    return {name: Screener.from_ruleset(RULESET, engine=name) for name in ENGINES}


# --- what each path gives for a list of cases --------------------------------------------------


def single_results(screener: Screener, cases: list[Case]) -> list[str]:
    """`Screener.screen` of each case: its result JSON, or its input error."""
    found = []
    for case in cases:
        try:
            found.append(screener.screen(case).model_dump_json())
        except CaseInputError as error:
            found.append(f"input error: {error}")
    return found


def many_results(screener: Screener, cases: list[Case]) -> list[str]:
    """`Screener.screen_many` of the cases: each result JSON, or its input error."""
    return [
        r.model_dump_json() if isinstance(r, Result) else f"input error: {r}"
        for r in screener.screen_many(cases)
    ]


def frame_results(screener: Screener, cases: list[Case]) -> list[str]:
    """`Screener.screen_frame` of the cases as one pandas frame: each output row as JSON."""
    import pandas as pd

    frame = screener.screen_frame(pd.DataFrame.from_records(cases))
    frame = frame[list(FRAME_COLUMNS)].astype(object).where(frame.notna(), None)
    return [
        json.dumps(dict(zip(FRAME_COLUMNS, row, strict=True)))
        for row in frame.itertuples(index=False)
    ]


PATHS: dict[str, Outputs] = {
    "screen": single_results,
    "screen_many": many_results,
    "screen_frame": frame_results,
}


def engine_differences(
    screeners: dict[str, Screener],
    cases: list[Case],
    path: str,
    labels: Sequence[str],
    comparable: Callable[[str], str] = str,
) -> list[str]:
    """The first SHOWN cases on which a screener's output (`comparable` of it) differs from
    the first screener's, each with the fields that differ and both values; empty when every
    screener agrees."""
    (first, reference), *others = screeners.items()
    expected = [comparable(output) for output in PATHS[path](reference, cases)]
    found: list[str] = []
    for other, screener in others:
        got = [comparable(output) for output in PATHS[path](screener, cases)]
        assert len(got) == len(expected), f"{other} gave {len(got)} results for {len(cases)}"
        for label, want, have in zip(labels, expected, got, strict=True):
            if want != have and len(found) < SHOWN:
                found.append(f"{label} ({path}): {_field_differences(want, have, first, other)}")
    return found


def _field_differences(want: str, have: str, first: str, other: str) -> str:
    """The first few places two outputs differ (`findings[0].rule_id: ...`), both values."""
    try:
        a, b = json.loads(want), json.loads(have)
    except json.JSONDecodeError:
        return f"{first} {short(want)} vs {other} {short(have)}"
    places = list(itertools.islice(leaf_differences(a, b, ""), SHOWN))
    return "; ".join(f"{path}: {first} {short(x)} vs {other} {short(y)}" for path, x, y in places)


# --- 1. golden cases and the anatomy test's cases ----------------------------------------------

GOLDENS = golden_cases(RULESET)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", list(PATHS))
def test_every_golden_case_gives_the_same_result_on_every_engine(
    path: str, screeners: dict[str, Screener]
) -> None:
    cases = [{"case_id": g.case_id, **g.case} for g in GOLDENS]
    labels = [f"{g.rule_id}::{g.kind}::{g.name}" for g in GOLDENS]
    found = engine_differences(screeners, cases, path, labels)
    assert not found, "engines differ on golden cases:\n" + "\n".join(found)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", list(PATHS))
def test_every_anatomy_case_gives_the_same_result_on_every_engine(
    path: str, screeners: dict[str, Screener]
) -> None:
    cases = [{"case_id": f"A-{n}", **anatomy_case(*combo)} for n, combo in enumerate(ANATOMY)]
    labels = [f"{level} x{levels} {dx} {procedure}" for level, levels, dx, procedure in ANATOMY]
    found = engine_differences(screeners, cases, path, labels)
    assert not found, "engines differ on anatomy cases:\n" + "\n".join(found)


def test_the_single_case_comparisons_see_what_they_compare() -> None:
    """Not vacuous: the golden cases span every rule and derived attribute and each expected
    outcome; the anatomy cases are the anatomy test's own (thousands)."""
    assert {g.rule_id for g in GOLDENS} >= {r.id for r in RULESET.rules}
    assert {g.rule_id for g in GOLDENS} >= {d.meta.id for d in RULESET.derived}
    assert {g.kind for g in GOLDENS} >= {"fires", "does_not_fire", "not_evaluable", "derived"}
    assert len(ANATOMY) > 3000


# --- 2. values at, and either side of, every threshold -----------------------------------------


@cache
def _base_rows() -> list[Case]:
    rows = generate_rows(BASE_ROWS, SEED, missing=0.05, corrupt=0.0)
    return valid_rows(RULESET, [dict(row) for row in rows])


@cache
def _prober() -> Prober:
    return Prober(RULESET)


@cache
def _probed(index: int) -> Probed:
    """The cases of THRESHOLDS[index], drawn once per session."""
    return probe(THRESHOLDS[index], f"T{index:03d}", _prober(), _base_rows())


def _threshold_id(index: int) -> str:
    t = THRESHOLDS[index]
    return f"{index:03d}-{t.owner}-{t.part}-{t.field}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("index", range(len(THRESHOLDS)), ids=_threshold_id)
def test_values_at_and_beside_each_threshold_give_the_same_result_on_every_engine(
    index: int, screeners: dict[str, Screener]
) -> None:
    probed = _probed(index)
    assert probed.cases, f"no synthetic row reaches {probed.threshold.label}"
    cases = [case.values for case in probed.cases]
    labels = [f"{case.name} {json.dumps(case.change)}" for case in probed.cases]
    found = [line for path in PATHS for line in engine_differences(screeners, cases, path, labels)]
    assert not found, f"engines differ at {probed.threshold.label}:\n" + "\n".join(found)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("index", range(len(THRESHOLDS)), ids=_threshold_id)
def test_each_threshold_is_probed_on_a_row_where_it_decides(index: int) -> None:
    """The synthetic cohort puts every threshold where it changes what its owner decides (a
    rule's status, a derived value); else the cases above would compare the engines on rows
    where the threshold does not matter. A new threshold the generator never reaches there
    fails here: extend engine/synth (issue 29 item 6)."""
    probed = _probed(index)
    assert probed.bites, (
        f"{probed.threshold.label}: no row of {BASE_ROWS} synthetic rows makes it decide"
    )


def test_thresholds_are_read_from_the_parsed_rules() -> None:
    """The walk finds thresholds of each kind: rule conditions, derived bands and conditions,
    constraints, and those on derived fields."""
    labels = {t.label for t in THRESHOLDS}
    assert {
        "RAD-005 when: bmi vs 40",
        "ACC-003 when: sva_mm vs 95",
        "ACC-007 when: meyerding_grade vs 3",
        "ACC-004 when: pi_ll_mismatch_deg vs 20",
        "DER-002 band: slip_percent vs 50",
        "DER-010 condition: dexa_t_score vs -2.5",
        "DER-005 band: tlics_score_derived vs 4",
        "CON-001 constraint: age_years vs 55",
    } <= labels
    assert len(THRESHOLDS) >= 60


def test_values_around_a_threshold_follow_the_field_type() -> None:
    assert values_around(FIELDS_BY_NAME["surgeon_mis_cases"], 44) == [43, 44, 45]
    bmi = values_around(FIELDS_BY_NAME["bmi"], 40)
    assert len(bmi) == 5
    assert (bmi[0], bmi[2], bmi[4]) == (39.9, 40, 40.1)
    assert bmi[1] < 40 < bmi[3]  # the floats next to 40
    assert min(values_around(FIELDS_BY_NAME["slip_percent"], 0)) == 0  # kept in range


@pytest.mark.parametrize(
    ("owner", "field", "derived", "reached"),
    [
        ("ACC-007", "meyerding_grade", "meyerding_grade", {0, 1, 2, 3, 4, 5}),
        ("ACC-004", "pi_ll_mismatch_deg", "pi_ll_mismatch_deg", {19.9, 20, 20.1}),
        ("DER-005", "tlics_score_derived", "tlics_score_derived", {2, 3, 4}),
    ],
)
def test_a_threshold_on_a_derived_field_is_reached_through_its_inputs(
    owner: str, field: str, derived: str, reached: set[float], screeners: dict[str, Screener]
) -> None:
    """The derived value itself takes the values at and beside the threshold (exactly: 20.0
    for PI-LL 20, not 19.999999999999996), so the comparison is probed where it turns."""
    index = next(i for i, t in enumerate(THRESHOLDS) if t.owner == owner and t.field == field)
    screener = screeners[ENGINES[0]]
    seen = set()
    for case in _probed(index).cases:
        result = screener.screen(case.values)
        seen.add(result.derived.get(derived))
    assert reached <= seen


# the harness can fail: an engine that moved one boundary is caught at it ----------------------


def _moved_boundary(ruleset: Ruleset, rule_id: str, old: str, new: str) -> Ruleset:
    """The ruleset with one comparison of one rule's condition rewritten (a mutant engine)."""
    rules = []
    for rule in ruleset.rules:
        if rule.id == rule_id:
            text = to_text(rule.when)
            assert old in text
            when = parse_condition(text.replace(old, new), FIELDS_BY_NAME)
            rule = dataclasses.replace(rule, when=when)
        rules.append(rule)
    return dataclasses.replace(ruleset, rules=tuple(rules))


@pytest.mark.timeout(300)
def test_the_threshold_cases_catch_an_engine_off_by_one_at_a_boundary(
    screeners: dict[str, Screener],
) -> None:
    """An engine that read RAD-005's `bmi >= 40` as `bmi > 40` differs from the others on the
    case at exactly 40 and on no case beside it."""
    moved = _moved_boundary(RULESET, "RAD-005", "bmi >= 40", "bmi > 40")
    mutant = Screener.from_ruleset(moved, engine="reference")
    index = THRESHOLDS.index(next(t for t in THRESHOLDS if t.label == "RAD-005 when: bmi vs 40"))
    probed = _probed(index)
    cases = [case.values for case in probed.cases]
    labels = [case.name for case in probed.cases]
    held = {ENGINES[0]: screeners[ENGINES[0]], "mutant": mutant}
    found = engine_differences(held, cases, "screen_many", labels, _unstamped)
    assert found, "the threshold cases did not tell bmi >= 40 from bmi > 40"
    differing = {line.split(" ", 1)[0] for line in found}
    at_40 = {c.name for c in probed.cases if c.values.get("bmi") == 40}
    assert differing
    assert differing <= at_40
    for case in probed.cases:  # what differs is RAD-005's finding, and only where bmi is 40
        fired = [
            {f.rule_id for f in screener.screen(case.values).findings} for screener in held.values()
        ]
        assert fired[0] ^ fired[1] == ({"RAD-005"} if case.name in at_40 else set())


def _unstamped(result: str) -> str:
    """A result but for its ruleset stamp (a moved boundary is another ruleset)."""
    found = json.loads(result)
    found.pop("ruleset")
    return json.dumps(found)


# --- 3. the cohort through the batch command ---------------------------------------------------


@pytest.fixture(scope="module")
def cohort_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The differential cohort, written once, and every run of it on every engine."""
    folder = tmp_path_factory.mktemp("differential")
    inputs = write_inputs(folder, COHORT_ROWS)
    for run in RUNS:
        for engine in ENGINES:
            run_engine(engine, run, inputs, folder, RULES_DIR)
    return folder, inputs


def _run_id(run: BatchRun) -> str:
    return run.name


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("engine", OTHERS)
@pytest.mark.parametrize("run", RUNS, ids=_run_id)
def test_batch_outputs_are_byte_identical_on_every_engine(
    run: BatchRun, engine: str, cohort_runs: tuple[Path, dict[str, Path]]
) -> None:
    folder, _ = cohort_runs
    first = ENGINES[0]
    found = compare_runs(
        folder / first / run.name, folder / engine / run.name, run, (first, engine)
    )
    assert not found, f"batch {run.name}: {engine} differs from {first}:\n" + "\n".join(found)


@pytest.mark.timeout(1800)
def test_the_batch_cohort_holds_every_variant(
    cohort_runs: tuple[Path, dict[str, Path]],
) -> None:
    """Not vacuous: every row is read, every planted corruption is rejected (the error file
    names each), and the missing variant leaves verdicts open."""
    folder, _ = cohort_runs
    run = RUNS[0]
    summary = json.loads((folder / ENGINES[0] / run.name / "summary.json").read_text())
    planted = corrupt_rows(COHORT_ROWS, SEED)
    assert summary["reconciliation"]["rows_read"] == COHORT_ROWS
    assert summary["reconciliation"]["rows_rejected"] == len(planted) > COHORT_ROWS // 20
    errors = (folder / ENGINES[0] / run.name / f"{run.out}.errors.jsonl").read_text()
    rejected = {int(json.loads(line)["case_id"][4:]) for line in errors.splitlines()}
    assert rejected == planted
    assert summary["verdicts"]["insufficient_data"] > 0
    assert all(summary["verdicts"][v] > 0 for v in summary["verdicts"])


@pytest.mark.timeout(600)
def test_the_batch_comparison_finds_a_moved_threshold(tmp_path: Path) -> None:
    """The harness can fail: batch with RAD-005 at BMI 41 instead of 40 (a rules copy) differs
    from the bundled rules, and the difference is shown as its first rows, field and values."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules)
    [path] = rules.glob("*/RAD-005-*.yaml")
    path.write_text(path.read_text().replace("bmi >= 40", "bmi >= 41"))
    inputs = write_inputs(tmp_path, 3_000)
    run = RUNS[0]
    run_engine(ENGINES[0], run, inputs, tmp_path / "bundled", RULES_DIR)
    run_engine(ENGINES[-1], run, inputs, tmp_path / "moved", rules)
    found = compare_runs(
        tmp_path / "bundled" / ENGINES[0] / run.name,
        tmp_path / "moved" / ENGINES[-1] / run.name,
        run,
        ("bundled", "moved"),
    )
    assert found[0] == f"{run.out}: the files differ"
    rows = list(itertools.takewhile(lambda line: line.startswith("  "), found[1:]))
    assert len(rows) == SHOWN
    assert all("bundled" in row and "moved" in row for row in rows)
    assert any("RAD-005" in row for row in rows)


def test_the_batch_comparison_shows_at_most_a_few_rows(tmp_path: Path) -> None:
    """A difference in every row is shown as SHOWN rows; summaries that differ only in their
    clock (or engine name) are equal, any other field is not; a file one engine wrote alone is
    named."""
    run = RUNS[0]
    a, b = tmp_path / "a", tmp_path / "b"
    sides = ((a, "worth_discussing", "10:00"), (b, "not_favoured", "11:00"))
    for folder, verdict, started in sides:
        folder.mkdir()
        rows = [{"case_id": f"SYN-{n:07d}", "verdict": verdict} for n in range(1, 40)]
        (folder / run.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
        stamp = {"started": started, "duration_s": 1.0, "run_id": started, "engine": verdict}
        summary = {"stamp": stamp, "engine": verdict, "n": 1}
        (folder / "summary.json").write_text(json.dumps(summary))
    (a / f"{run.out}.errors.jsonl").write_text("")
    found = compare_runs(a, b, run, ("x", "y"))
    assert found[0] == f"{run.out}: the files differ"
    assert found[1] == (
        '  output row 1 (case_id SYN-0000001): verdict: x "worth_discussing" vs y "not_favoured"'
    )
    assert len([line for line in found if "output row" in line]) == SHOWN
    assert f"{run.out}.errors.jsonl: written by x only" in found
    assert not any("summary" in line for line in found)
    summary = json.loads((b / "summary.json").read_text())
    summary["n"] = 2
    (b / "summary.json").write_text(json.dumps(summary))
    found = compare_runs(a, b, run, ("x", "y"))
    assert found[-2:] == ["summary.json: the summaries differ", "  n: x 1 vs y 2"]


# the identifier guard and the input errors come before any engine --------------------------

ROW_IDENTIFIERS = ["5558675309", "19610312", "4010232137", "JohnSmith", "MRN0012345"]


def _cohort_with(path: Path, rows: int, extra: dict[str, str] | None = None) -> Path:
    """A small synthetic cohort as CSV whose first rows carry identifiers as case ids, and
    `extra` columns (name: value on every row)."""
    import csv

    cases = list(generate_rows(rows, SEED, missing=0.05, corrupt=0.05))
    for case, identifier in zip(cases, ROW_IDENTIFIERS, strict=False):
        case["case_id"] = identifier
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, [*cases[0], *(extra or {})])
        writer.writeheader()
        for case in cases:
            writer.writerow({**case, **(extra or {})})
    return path


@pytest.mark.hostile
@pytest.mark.timeout(600)
def test_identifier_case_ids_and_bad_rows_are_rejected_alike_on_every_engine(
    tmp_path: Path,
) -> None:
    """Rows whose case id is an identifier (and corrupt rows) go to the error file with the
    same records whatever the engine; the results around them are the same too."""
    source = _cohort_with(tmp_path / "cohort.csv", 400)
    run = BatchRun("identifiers", "ids", "results.jsonl", ("--detail", "ids"))
    for engine in ENGINES:
        run_engine(engine, run, {"ids": source}, tmp_path, RULES_DIR)
    first = tmp_path / ENGINES[0] / run.name
    errors = [json.loads(line) for line in (first / f"{run.out}.errors.jsonl").open()]
    assert sum(e["field"] == "case_id" for e in errors) == len(ROW_IDENTIFIERS)
    assert len(errors) > len(ROW_IDENTIFIERS)  # the corrupt rows too
    for engine in OTHERS:
        found = compare_runs(first, tmp_path / engine / run.name, run, (ENGINES[0], engine))
        assert not found, "\n".join(found)


@pytest.mark.hostile
@pytest.mark.timeout(600)
def test_an_identifier_column_refuses_the_input_alike_on_every_engine(tmp_path: Path) -> None:
    """A column that names patients refuses the whole input before screening: the same exit
    code and message on every engine, no value shown, nothing written."""
    from typer.testing import CliRunner

    from engine.cli import app

    source = _cohort_with(tmp_path / "cohort.csv", 50, {"patient_name": "Jane Doe"})
    refusals = {}
    for engine in ENGINES:
        out = tmp_path / engine / "results.jsonl"
        out.parent.mkdir()
        args = ["batch", str(source), "--out", str(out), "--workers", "1", "--progress", "none"]
        result = CliRunner().invoke(app, [*args, "--engine", engine])
        refusals[engine] = (result.exit_code, result.stderr.replace(str(out.parent), "OUT"))
        assert not list(out.parent.iterdir())
    code, message = refusals[ENGINES[0]]
    assert code == 2
    assert "patient_name" in message
    assert "Jane" not in message
    assert all(refusal == (code, message) for refusal in refusals.values()), refusals


RESPELT = {"male": "Male", "female": "F", "true": "Y", "false": "no", "L4-L5": "L4/5"}


@pytest.mark.hostile
@pytest.mark.timeout(600)
def test_respelt_csv_values_are_counted_and_screened_alike_on_every_engine(
    tmp_path: Path,
) -> None:
    """A CSV cohort as an export writes it (a BOM, `Male`, `Y`, `31,5`, `L4/5`, a span, a
    malformed record, quoted and empty cells): the vectorised engine reads its text columns
    once per distinct value, and gives the same outputs, error file and summary (the
    normalised counts and their first example) as durable-rules reading it row by row."""
    cases = list(generate_rows(600, SEED, missing=0.05, corrupt=0.02))
    lines = [",".join(cases[0])]
    for n, case in enumerate(cases):
        cells = ["" if v is None else str(v) for v in case.values()]
        if n % 3:  # most rows respelt, some as the dictionary spells them
            cells = [RESPELT.get(cell, cell) for cell in cells]
            cells = [f'"{c.replace(".", ",")}"' if c[-2:] == ".5" else c for c in cells]
        if n == 7:
            cells.append("surplus")  # malformed: the reader refuses it
        if n == 9 and case.get("lowest_level") == "L4-L5":
            cells[list(case).index("lowest_level")] = "L3-L5"  # a span: levels must agree
        lines.append(",".join(cells))
    source = tmp_path / "export.csv"
    source.write_bytes("\ufeff".encode() + ("\r\n".join(lines) + "\r\n").encode())
    run = BatchRun("respelt", "respelt", "results.jsonl", ("--detail", "ids"))
    for engine in ENGINES:
        run_engine(engine, run, {"respelt": source}, tmp_path, RULES_DIR)
    first = tmp_path / ENGINES[0] / run.name
    summary = json.loads((first / "summary.json").read_text())
    normalised = summary["normalised_values"]
    assert {"sex", "diabetes", "bmi", "lowest_level"} <= set(normalised), normalised
    assert all(entry["example"] for entry in normalised.values())
    assert summary["reconciliation"]["rows_rejected"] > 0
    for engine in OTHERS:
        found = compare_runs(first, tmp_path / engine / run.name, run, (ENGINES[0], engine))
        assert not found, "\n".join(found)


@pytest.mark.timeout(600)
def test_a_frame_read_with_pandas_is_screened_alike_on_every_engine(
    tmp_path: Path, screeners: dict[str, Screener]
) -> None:
    """pd.read_csv as a researcher calls it: integer columns with gaps as floats, booleans
    with gaps as objects, a typo that mixes text into a number column (Arrow cannot type it),
    respelt values, a categorical column. The vectorised engine decides most rows itself and
    gives the same frame as durable-rules row by row."""
    import pandas as pd

    cases = list(generate_rows(3_000, SEED, missing=0.05, corrupt=0.02))
    frame = pd.DataFrame(cases)
    frame["sex"] = frame["sex"].replace({"male": "Male", "female": "F"}).astype("category")
    frame["age_years"] = frame["age_years"].astype(object)
    frame.loc[5, "age_years"] = "forty"  # text among numbers: the column is mixed
    source = tmp_path / "cohort.csv"
    frame.to_csv(source, index=False)
    read = pd.read_csv(source)
    assert read["tlics_score"].dtype == "float64"
    assert read["diabetes"].dtype == object
    for given in (frame, read):
        frames = [screener.screen_frame(given) for screener in screeners.values()]
        assert all(found.equals(frames[0]) for found in frames[1:])
        assert frames[0]["rejected"].notna().sum() > 0
    plan = screeners["vectorised"]
    decided = plan._frame_decided(pa.Table.from_pandas(read.drop(columns="age_years")))
    # the columnar path, not row by row
    assert sum(len(part.rows) for part in decided) > len(read) * 0.8
