"""`miss-screen rules sweep`: one constant of one rule moved in a copy of the rules in memory.

Every point is held to what `batch` gives with the rules file edited on disk to that value (the
same verdict counts, the same rows changing, the same ruleset sha256), so the in-memory copy
cannot drift from what a researcher's edit would do; nothing on disk changes.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.research.sweep import MAX_POINTS, _Changes, _Screened, sweep_values
from engine.screener import ENGINES
from tests.conftest import RULES_DIR, RULESET

ROOT = Path(__file__).resolve().parent.parent
COHORT = ROOT / "cases" / "cohort" / "synthetic-500.csv"
RAD_005 = RULES_DIR / "radiation" / "RAD-005-bmi-40-radiation-dose.yaml"
runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["rules", "sweep", *args])


def sweep_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "sweep.json"
    done = invoke(*args, "--cohort", str(COHORT), "--out", str(out))
    assert done.exit_code == 0, done.stderr
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def batch_at(tmp_path: Path, bmi: str) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """`batch` with RAD-005 edited on disk to `bmi >= VALUE`: its summary and output row per
    case."""
    rules = tmp_path / f"rules-{bmi}"
    shutil.copytree(RULES_DIR, rules)
    edited = rules / RAD_005.relative_to(RULES_DIR)
    text = edited.read_text()
    assert "when: bmi >= 40\n" in text
    edited.write_text(text.replace("when: bmi >= 40\n", f"when: bmi >= {bmi}\n"))
    out, summary = tmp_path / f"out-{bmi}.csv", tmp_path / f"summary-{bmi}.json"
    done = runner.invoke(
        app,
        ["batch", str(COHORT), "--out", str(out), "--summary", str(summary), "--rules", str(rules),
         "--workers", "1", "--progress", "none"],
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    with out.open(newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    return json.loads(summary.read_text()), rows


def outcome_of(row: dict[str, str], rule_id: str) -> str:
    """A rule's outcome as a `batch` output row shows it."""
    for column in ("fired_red_flag", "fired_major", "fired_caution", "fired_info",
                   "conditional", "not_evaluable"):  # fmt: skip
        if rule_id in row[column].split(";"):
            return column
    return "none"


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.timeout(300)
def test_each_point_is_what_batch_gives_with_the_rule_edited_on_disk(tmp_path: Path) -> None:
    before = _tree_hash(RULES_DIR)
    report = sweep_json(tmp_path, "RAD-005", "--from", "35", "--to", "40", "--step", "5")
    assert _tree_hash(RULES_DIR) == before  # nothing on disk changes
    assert [p["value"] for p in report["points"]] == [35, 40]
    assert report["ruleset"]["sha256"] == RULESET.sha256
    found, outputs = {}, {}
    for point in report["points"]:
        summary, rows = batch_at(tmp_path, str(point["value"]))
        verdicts = {case_id: row["verdict"] for case_id, row in rows.items()}
        assert point["ruleset_sha256"] == summary["stamp"]["ruleset"]["sha256"]
        assert point["verdicts"] == summary["verdicts"]
        fired = {r["rule_id"]: r["fired"] for r in summary["rules"]}
        assert point["rule_fired"] == fired["RAD-005"]
        assert point["condition"] == f"bmi >= {point['value']}"
        found[point["value"]] = verdicts
        outputs[point["value"]] = rows
    # at the file's own value the copy is the bundled rule set itself, stamp and all
    assert report["points"][1]["ruleset_sha256"] == RULESET.sha256
    assert report["points"][0]["ruleset_sha256"] != RULESET.sha256
    changed = sorted(c for c in found[35] if found[35][c] != found[40][c])
    (step,) = report["changes"]
    assert step["changed"] == len(changed) > 0
    assert step["case_ids"] == changed[: report["examples_per_change"]]
    moves: dict[str, int] = {}
    for case_id in changed:
        key = f"{found[35][case_id]}->{found[40][case_id]}"
        moves[key] = moves.get(key, 0) + 1
    assert step["transitions"] == moves
    # RAD-005's own outcome moves on more rows than any verdict does (a caution among others)
    outcome_moved = [
        c for c in outputs[35]
        if outcome_of(outputs[35][c], "RAD-005") != outcome_of(outputs[40][c], "RAD-005")
    ]  # fmt: skip
    assert step["rule_changed"] == len(outcome_moved) > step["changed"]
    assert report["reconciliation"] == {
        "rows_read": 500, "rows_screened": 495, "rows_rejected": 5, "balanced": True
    }  # fmt: skip


@pytest.mark.timeout(300)
def test_every_engine_gives_the_same_sweep(tmp_path: Path) -> None:
    reports = {}
    for engine in ENGINES:
        report = sweep_json(
            tmp_path, "RAD-005", "--from", "38", "--to", "41", "--step", "1.5", "--engine", engine
        )
        assert report["engine"] == engine
        reports[engine] = {**report, "engine": None}
    assert [p["value"] for p in reports[ENGINES[0]]["points"]] == [38, 39.5, 41]
    for engine in ENGINES[1:]:
        assert reports[engine] == reports[ENGINES[0]], engine


def test_the_other_readers_of_the_field_are_named_and_keep_their_thresholds(
    tmp_path: Path,
) -> None:
    report = sweep_json(tmp_path, "RAD-005", "--from", "30", "--to", "30", "--step", "1")
    readers = sorted(r.id for r in RULESET.rules if "bmi" in r.fields and r.id != "RAD-005")
    assert report["other_rules_reading_field"] == readers
    assert {"BEN-002", "RAD-004"} <= set(readers)
    assert report["points"][0]["condition"] == "bmi >= 30"
    assert report["changes"] == []
    # BEN-002 also reads `bmi >= 30`: its own constant did not move with RAD-005's (in-memory
    # copy), so its fired count is the bundled one; RAD-005 now fires on at least as many rows
    assert report["points"][0]["rule_fired"] >= 11


@pytest.mark.timeout(120)
def test_a_rule_with_several_constants_needs_its_number(tmp_path: Path) -> None:
    done = invoke("ACC-003", "--from", "1", "--to", "3", "--step", "1", "--cohort", str(COHORT))
    assert done.exit_code == 2
    assert "ACC-003:N" in done.stderr
    assert "1: levels >= 3" in done.stderr
    assert "2: sva_mm > 95" in done.stderr
    report = sweep_json(tmp_path, "ACC-003:2", "--from", "90", "--to", "100", "--step", "10")
    assert report["rule"]["constant"]["comparison"] == "sva_mm > 95"
    conditions = [p["condition"] for p in report["points"]]
    assert all("levels >= 3" in c for c in conditions)
    assert "sva_mm > 90" in conditions[0]
    assert "sva_mm > 100" in conditions[1]


@pytest.mark.timeout(120)
def test_html_has_the_chart_and_the_counts(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "sweep.html"
    done = invoke("RAD-005", "--from", "39", "--to", "41", "--step", "1", "--cohort",
                  str(COHORT), "--out", str(out))  # fmt: skip
    assert done.exit_code == 0, done.stderr
    page = out.read_text()
    assert "<svg" in page
    assert 'aria-label="Cases by verdict as bmi moves"' in page
    assert 'id="rows-screened">495<' in page
    assert 'id="step-0-rule-changed">1<' in page  # RAD-005 moved on one row, no verdict did
    assert 'id="step-0-changed">0<' in page
    assert "RAD-005 outcome changed" in page
    assert "BEN-002" in page


def test_values_are_counted_in_decimal() -> None:
    assert sweep_values("0.1", "0.5", "0.1") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert sweep_values("35", "45", "2.5") == [35, 37.5, 40, 42.5, 45]
    assert sweep_values("25", "50", "10") == [25, 35, 45]  # the last step does not reach 50
    assert len(sweep_values("0", "100", "1")) == MAX_POINTS


def test_an_id_the_guard_withholds_is_counted_not_shown() -> None:
    """Case ids of the changed rows pass through the identifier guard (deid.shown_case_id), and
    the first `keep` changed rows are listed across the parts of the cohort, in order."""
    changes = _Changes(1, keep=3)
    for ids in (["S-1", "1984-03-02", "S-3"], ["S-4", "S-5", "S-6"]):
        before = _Screened(np.array([0, 1, 2], np.uint8), np.array([0, 3, 3], np.int8), ids,
                           collections.Counter(), 0, 3, 0)  # fmt: skip
        after = _Screened(np.array([1, 2, 2], np.uint8), np.array([3, 3, 0], np.int8), ids,
                          before.verdicts, 0, 3, 0)  # fmt: skip
        changes.add(0, before, after)
    (step,) = changes.steps([1, 2])
    assert step.changed == 4
    assert step.case_ids == ["S-1", "S-4"]
    assert step.ids_withheld == 1
    assert step.transitions == {"urgent_review->not_favoured": 2,
                                "not_favoured->insufficient_data": 2}  # fmt: skip
    assert step.rule_changed == 4  # S-3 and S-6: the rule's outcome moved, not their verdict


# --- hostile input --------------------------------------------------------------------------------

BAD_ARGUMENTS = {
    "rule-id-spelled-as-a-path": (
        ["../../etc/passwd", "--from", "1", "--to", "2", "--step", "1"], "no rule"
    ),
    "rule-file-path": (
        [str(RAD_005), "--from", "1", "--to", "2", "--step", "1"], "no rule"
    ),
    "rule-id-of-100k-characters": (
        ["RAD-005" * 15_000, "--from", "1", "--to", "2", "--step", "1"], "no rule 'RAD-005RAD"
    ),
    "misspelt-rule": (["RAD-05", "--from", "1", "--to", "2", "--step", "1"], "no rule"),
    "no-numeric-constant": (
        ["ACC-013", "--from", "1", "--to", "2", "--step", "1"], "no numeric constant"
    ),
    "constant-number-out-of-range": (
        ["RAD-005:2", "--from", "1", "--to", "2", "--step", "1"], "1: bmi >= 40"
    ),
    "constant-number-zero": (
        ["RAD-005:0", "--from", "1", "--to", "2", "--step", "1"], "numbered from 1"
    ),
    "constant-number-not-a-number": (
        ["RAD-005:../x", "--from", "1", "--to", "2", "--step", "1"], "numbered from 1"
    ),
    "step-zero": (["RAD-005", "--from", "1", "--to", "2", "--step", "0"], "more than 0"),
    "step-negative": (["RAD-005", "--from", "1", "--to", "2", "--step", "-1"], "more than 0"),
    "too-many-points": (
        ["RAD-005", "--from", "0", "--to", "101", "--step", "1"], "102 values; at most 101"
    ),
    "huge-range": (
        ["RAD-005", "--from", "-1e308", "--to", "1e308", "--step", "1e-300"], "at most 101"
    ),
    "beyond-a-float": (["RAD-005", "--from", "1", "--to", "1e400", "--step", "1"], "finite"),
    "nan-bound": (["RAD-005", "--from", "nan", "--to", "2", "--step", "1"], "finite"),
    "inf-bound": (["RAD-005", "--from", "1", "--to", "inf", "--step", "1"], "finite"),
    "nan-step": (["RAD-005", "--from", "1", "--to", "2", "--step", "NaN"], "finite"),
    "not-a-number": (["RAD-005", "--from", "forty", "--to", "2", "--step", "1"], "not a number"),
    "reversed-range": (["RAD-005", "--from", "45", "--to", "35", "--step", "1"], "below"),
    "unknown-engine": (
        ["RAD-005", "--from", "1", "--to", "2", "--step", "1", "--engine", "fast"], "--engine"
    ),
}  # fmt: skip


@pytest.mark.hostile
@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
def test_bad_arguments_are_one_clear_usage_error(tmp_path: Path, name: str) -> None:
    args, expected = BAD_ARGUMENTS[name]
    out = tmp_path / "sweep.txt"
    done = invoke(*args, "--cohort", str(COHORT), "--out", str(out))
    assert done.exit_code == 2, done.stdout
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert "root:" not in done.stderr  # a rule id is looked up, never opened
    assert not out.exists()


@pytest.mark.hostile
@pytest.mark.timeout(60)
def test_an_identifier_column_in_the_cohort_is_refused_and_its_values_never_shown(
    tmp_path: Path,
) -> None:
    cohort = tmp_path / "cohort.csv"
    with COHORT.open(newline="") as source, cohort.open("w", newline="") as target:
        reader = csv.DictReader(source)
        assert reader.fieldnames is not None
        writer = csv.DictWriter(target, [*reader.fieldnames, "patient_name"])
        writer.writeheader()
        for number, row in enumerate(reader):
            writer.writerow({**row, "patient_name": f"Maria Lopez{number}"})
    out = tmp_path / "sweep.txt"
    done = invoke("RAD-005", "--from", "35", "--to", "45", "--step", "1", "--cohort", str(cohort),
                  "--out", str(out))  # fmt: skip
    assert done.exit_code == 2
    assert "patient_name" in done.stderr
    assert "Lopez" not in done.stderr + done.stdout
    assert not out.exists()


@pytest.mark.timeout(120)
def test_each_value_is_screened_in_a_process_that_ends_with_it() -> None:
    """durable-rules never frees a ruleset it built (about 50 MB each): a sweep that built one
    per value in this process would grow with every value; none of them is built here."""
    from engine.batch.run import BatchOptions
    from engine.batch.worker import OutputFormat
    from engine.evaluate import durable
    from engine.research.sweep import sweep_cohort

    options = BatchOptions([str(COHORT)], "-", OutputFormat.csv, str(RULES_DIR), engine="durable")
    report = sweep_cohort(RULESET, "RAD-005", [38, 39], options)
    built_here = set(durable._HANDLES)
    assert [p.ruleset_sha256 in built_here for p in report.points] == [False, False]
    assert report.points[0].rule_fired > report.points[1].rule_fired > 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("cohort", ["bundled", "synthetic-6k-corrupt", "synthetic-20k-missing"])
def test_the_in_process_vectorised_sweep_equals_the_per_process_one(
    cohort: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectorised sweep decides the cohort once and re-evaluates only the swept rule per
    value, in one process (no durable-rules ruleset; rows left to the per-row path go to the
    reference evaluator): its report must be the one a process per value gives, on a cohort
    with missing values and corrupt rows too, where chunks with rows screened one by one take
    the per-value path (counted: both paths run)."""
    from engine.batch.run import BatchOptions
    from engine.batch.worker import OutputFormat
    from engine.research import sweep
    from engine.research.sweep import sweep_cohort

    built = []
    original = sweep._vectorised

    def counted(ruleset: Any, site: Any) -> Any:
        built.append(ruleset.sha256)
        return original(ruleset, site)

    monkeypatch.setattr(sweep, "_vectorised", counted)
    from engine.synth import write_cohort

    path = COHORT
    if cohort == "synthetic-6k-corrupt":  # rows screened one by one in every chunk
        path = tmp_path / "cohort.csv"
        write_cohort(path, 6_000, 11, missing=0.15, corrupt=0.02)
        padded(path, "age_years", every=50)
    elif cohort == "synthetic-20k-missing":  # every row decided by the vectorised engine
        path = tmp_path / "cohort.parquet"
        write_cohort(path, 20_000, 12, missing=0.15, corrupt=0.0)
    options = BatchOptions([str(path)], "-", OutputFormat.csv, str(RULES_DIR))
    fast = sweep_cohort(RULESET, "RAD-005", [30, 37.5, 40, 45], options)
    slow = sweep_cohort(RULESET, "RAD-005", [30, 37.5, 40, 45], options, per_process=True)
    assert fast.engine == slow.engine == "vectorised"
    # the first value's screener, and one per value where a chunk has rows screened one by one
    assert len(built) == (1 + 4 if cohort == "synthetic-6k-corrupt" else 1), built
    assert json.dumps(fast.as_json()) == json.dumps(slow.as_json())
    assert sum(s.changed for s in fast.steps) > 0


def padded(path: Path, field: str, every: int) -> None:
    """Write a whole number of every n-th row with a leading zero ("045"): the normaliser reads
    it, the column reader leaves it to the per-row path (engine.io.columnar)."""
    import csv

    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    at = rows[0].index(field)
    for row in rows[1::every]:
        if row[at].isdigit():
            row[at] = "0" + row[at]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.timeout(300)
def test_the_vectorised_sweep_streams_the_cohort_holding_one_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory does not grow with the cohort: the in-process sweep reads the cohort chunk by
    chunk and lets each go before the next is read (a sweep that kept the chunks, as it once
    did, held a 1M-row cohort: 607 MB). Checked by weak references to every chunk read."""
    import gc
    import weakref

    from engine.batch.run import BatchOptions
    from engine.batch.worker import OutputFormat
    from engine.research import sweep
    from engine.synth import write_cohort

    path = tmp_path / "cohort.parquet"
    write_cohort(path, 16_000, 13, missing=0.1, corrupt=0.01)
    read: list[weakref.ref[Any]] = []
    alive_at_read: list[int] = []
    original = sweep.all_chunks

    def watched(*args: Any, **kwargs: Any) -> Any:
        for chunk in original(*args, **kwargs):
            gc.collect()
            alive_at_read.append(sum(ref() is not None for ref in read))
            read.append(weakref.ref(chunk))
            yield chunk

    monkeypatch.setattr(sweep, "all_chunks", watched)
    options = BatchOptions([str(path)], "-", OutputFormat.csv, str(RULES_DIR))
    report = sweep.sweep_cohort(RULESET, "RAD-005", [38, 40, 42], options)
    gc.collect()
    assert len(read) >= 4  # several chunks, or the test proves nothing
    assert max(alive_at_read) <= 1, alive_at_read  # the one being finished, at most
    assert not any(ref() is not None for ref in read)  # the report keeps none
    assert report.rows_read == 16_000
    assert sum(s.rule_changed for s in report.steps) > 0


@pytest.mark.timeout(60)
def test_a_screener_takes_a_cohort_plan_of_its_own_rules_only() -> None:
    """The sweep hands its plan (with the swept rule's copies as variants) to the batch path
    through Screener.with_cohort_plan; a plan of other rules would screen with them."""
    from engine.evaluate.vectorised import CohortPlan
    from engine.research.sweep import pick_constant, with_constant
    from engine.screener import Screener

    screener = Screener.from_ruleset(RULESET, "reference")
    rule, constant = pick_constant(RULESET, "RAD-005")
    edited = with_constant(RULESET, rule, constant, 35)
    plan = CohortPlan(RULESET, variants=[edited.by_id["RAD-005"]])
    assert screener.with_cohort_plan(plan).cohort_plan is plan
    assert screener.cohort_plan is not plan  # the original keeps its own
    with pytest.raises(ValueError, match="own ruleset"):
        screener.with_cohort_plan(CohortPlan(edited))


@pytest.mark.hostile
@pytest.mark.timeout(120)
def test_a_chunk_whose_rows_are_all_rejected_adds_nothing(tmp_path: Path) -> None:
    """A first chunk of 5,000 rows that all fail validation: the sweep counts them rejected and
    compares the rows it screened, as on the cohort without them."""
    with COHORT.open(newline="") as handle:
        rows = list(csv.reader(handle))
    age, case_id = rows[0].index("age_years"), rows[0].index("case_id")
    bad = []
    for n in range(5_000):
        row = list(rows[1 + n % 400])
        row[age], row[case_id] = "banana", f"BAD-{n:05d}"
        bad.append(row)
    cohort = tmp_path / "cohort.csv"
    with cohort.open("w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *bad, *rows[1:]])
    args = ["RAD-005", "--from", "38", "--to", "40", "--step", "1", "--format", "json"]
    with_bad, plain = (tmp_path / "bad.json"), (tmp_path / "plain.json")
    for source, out in ((cohort, with_bad), (COHORT, plain)):
        done = invoke(*args, "--cohort", str(source), "--out", str(out))
        assert done.exit_code == 0, done.stderr
    found, expected = json.loads(with_bad.read_text()), json.loads(plain.read_text())
    assert found["reconciliation"] == {
        "rows_read": 5_500, "rows_screened": 495, "rows_rejected": 5_005, "balanced": True
    }  # fmt: skip
    assert found["points"] == expected["points"]
    assert found["changes"] == expected["changes"]
