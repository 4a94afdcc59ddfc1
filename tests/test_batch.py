"""Batch screening: nothing lost, order kept, identical across workers, identifiers refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.dictionary import SETTING_FIELDS
from engine.io.cases import validate_case
from engine.screen import screen_values
from tests.conftest import EVALUATORS, ROOT, RULESET

runner = CliRunner()

GOOD = [
    {
        "case_id": "B-001",
        "age_years": 45,
        "sex": "male",
        "diagnosis": "disc_herniation",
        "region": "lumbar",
        "levels": 1,
        "lowest_level": "L5-S1",
        "planned_procedure": "discectomy",
        "cauda_equina_syndrome": False,
        "progressive_neuro_deficit": False,
        "myelopathy": False,
    },
    {
        "case_id": "B-002",
        "age_years": 70,
        "sex": "female",
        "diagnosis": "spondylolisthesis",
        "slip_percent": 60,
        "region": "lumbar",
        "levels": 1,
        "lowest_level": "L5-S1",
    },
    {"case_id": "B-003", "cauda_equina_syndrome": True},
    {"case_id": "B-004", "age_years": 30, "sex": "female", "bmi": 41.5},
]
BAD = [
    ({"case_id": "B-005", "bmi": "thirty"}, "bmi"),
    ({"case_id": "B-006", "sva_mm": 900}, "sva_mm"),
    ({"case_id": "B-007", "sex": "male", "pregnant": True}, "pregnant"),
]


def cohort(n_good: int = 4) -> list[dict[str, Any]]:
    rows = [dict(r) for r in GOOD[:n_good]] + [dict(r) for r, _ in BAD]
    rows += [{**GOOD[i % len(GOOD)], "case_id": f"B-1{i:03d}"} for i in range(40)]
    return rows


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = sorted({k for r in rows for k in r}, key=lambda c: (c != "case_id", c))
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        lines = [",".join(columns)]
        for r in rows:
            cells = [
                ""
                if r.get(c) is None
                else str(r[c]).lower()
                if isinstance(r.get(c), bool)
                else str(r[c])
                for c in columns
            ]
            lines.append(",".join(cells))
        path.write_text("\n".join(lines) + "\n")
    else:
        table = pa.Table.from_pylist(
            [{c: (None if r.get(c) is None else str(r[c])) for c in columns} for r in rows]
        )
        pq.write_table(table, path)
    return path


def batch(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["batch", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_every_row_is_screened_or_rejected(tmp_path: Path, suffix: str) -> None:
    rows = cohort()
    source = write(tmp_path / f"cohort{suffix}", rows)
    out, errors, summary = tmp_path / "out.jsonl", tmp_path / "errors.jsonl", tmp_path / "s.json"
    code, _, err = batch(
        str(source),
        "--out",
        str(out),
        "--errors",
        str(errors),
        "--summary",
        str(summary),
        "--workers",
        "1",
        "--progress",
        "none",
    )
    assert code == 0, err
    report = json.loads(summary.read_text())
    rec = report["reconciliation"]
    assert rec == {
        "rows_read": len(rows),
        "rows_screened": len(rows) - len(BAD),
        "rows_rejected": len(BAD),
        "balanced": True,
    }
    assert f"rows read {len(rows)} = screened {len(rows) - 3} + rejected 3 (balanced)" in err
    problems = [json.loads(line) for line in errors.read_text().splitlines()]
    assert sorted({(p["row"], p["case_id"], p["field"]) for p in problems}) == [
        (5, "B-005", "bmi"),
        (6, "B-006", "sva_mm"),
        (7, "B-007", "pregnant"),
    ]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    good_rows = [r for r in rows if r["case_id"] not in {"B-005", "B-006", "B-007"}]
    assert [r["case_id"] for r in results] == [r["case_id"] for r in good_rows]


def test_jsonl_output_is_the_full_single_case_result(tmp_path: Path) -> None:
    rows = cohort()
    source = write(tmp_path / "cohort.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, _, _ = batch(
        str(source), "--out", str(out), "--workers", "1", "--progress", "none", "--detail", "full"
    )
    assert code == 0
    first = json.loads(out.read_text().splitlines()[1])
    case_id, values = validate_case(rows[1], "x")
    expected = screen_values(case_id, values, RULESET, EVALUATORS["reference"]).result
    assert first == json.loads(expected.model_dump_json())


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_output_is_identical_for_one_and_two_workers(tmp_path: Path, fmt: str) -> None:
    source = write(tmp_path / "cohort.jsonl", cohort() * 30)
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out-{workers}.{fmt}"
        code, _, err = batch(
            str(source),
            "--out",
            str(out),
            "--workers",
            workers,
            "--progress",
            "none",
            "--errors",
            str(tmp_path / f"e{workers}.jsonl"),
        )
        assert code == 0, err
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert (tmp_path / "e1.jsonl").read_bytes() == (tmp_path / "e2.jsonl").read_bytes()


def test_flattened_csv_has_the_documented_columns(tmp_path: Path) -> None:
    source = write(tmp_path / "cohort.jsonl", cohort())
    out = tmp_path / "out.csv"
    assert batch(str(source), "--out", str(out), "--workers", "1")[0] == 0
    header, first, *_ = out.read_text().splitlines()
    assert header == (
        "case_id,verdict,fired_red_flag,fired_major,fired_caution,fired_info,"
        "conditional,not_evaluable,missing_fields,open_cautions"
    )
    assert first.startswith("B-001,")
    b003 = next(line for line in out.read_text().splitlines() if line.startswith("B-003,"))
    assert b003.startswith("B-003,urgent_review,RED-001,")


def test_summary_counts_rules_verdicts_attrition_and_missingness(tmp_path: Path) -> None:
    source = write(tmp_path / "cohort.jsonl", cohort())
    summary = tmp_path / "s.json"
    assert (
        batch(
            str(source),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--summary",
            str(summary),
            "--workers",
            "1",
        )[0]
        == 0
    )
    report = json.loads(summary.read_text())
    screened = report["reconciliation"]["rows_screened"]
    assert sum(report["verdicts"].values()) == screened
    assert [a["verdict"] for a in report["attrition"]] == list(report["verdicts"])
    assert report["attrition"][-1]["remaining"] == 0
    red = next(r for r in report["rules"] if r["rule_id"] == "RED-001")
    assert red["fired"] == 1 + sum(1 for i in range(40) if i % 4 == 2)
    for rule in report["rules"]:
        statuses = ("fired", "not_fired", "not_applicable", "conditional", "not_evaluable")
        assert sum(rule[s] for s in statuses) == screened
    bmi = next(m for m in report["missingness"] if m["field"] == "bmi")
    assert bmi["missing"] == screened - sum(
        1 for r in cohort() if "bmi" in r and r["case_id"] not in {"B-005"}
    )
    stamp = report["stamp"]
    assert stamp["ruleset"]["sha256"] == RULESET.sha256
    assert len(stamp["inputs"][0]["sha256"]) == 64
    assert stamp["inputs"][0]["rows"] == report["reconciliation"]["rows_read"]


def test_duplicate_case_ids_are_reported(tmp_path: Path) -> None:
    rows = [*cohort(), dict(GOOD[0])]
    source = write(tmp_path / "cohort.jsonl", rows)
    summary = tmp_path / "s.json"
    code, _, err = batch(
        str(source), "--out", str(tmp_path / "o.jsonl"), "--summary", str(summary), "--workers", "1"
    )
    assert code == 0
    assert json.loads(summary.read_text())["duplicates"] == [
        {"case_id": "B-001", "rows": [1, len(rows)], "inputs": [0, 0]}
    ]
    assert "1 case_ids occur more than once" in err


def test_a_case_id_repeated_across_inputs_names_each_rows_input(tmp_path: Path) -> None:
    """Row numbers count within each input: a repeat across two inputs says which input each
    row is in, in the summary and in the report."""
    first = write(tmp_path / "first.jsonl", [GOOD[0], GOOD[1]])
    second = write(tmp_path / "second.jsonl", [GOOD[1], GOOD[0]])
    summary, report = tmp_path / "s.json", tmp_path / "r.html"
    code, _, err = batch(
        str(first), str(second), "--out", str(tmp_path / "o.jsonl"), "--summary", str(summary),
        "--report", str(report), "--workers", "1",
    )  # fmt: skip
    assert code == 0, err
    ids = [GOOD[0]["case_id"], GOOD[1]["case_id"]]
    assert json.loads(summary.read_text())["duplicates"] == [
        {"case_id": ids[0], "rows": [1, 2], "inputs": [0, 1]},
        {"case_id": ids[1], "rows": [2, 1], "inputs": [0, 1]},
    ]
    html = report.read_text()
    assert f"{first} row 1, {second} row 2" in html
    assert f"{first} row 2, {second} row 1" in html


@pytest.mark.parametrize("workers", ["1", "2"])
def test_one_file_given_twice_is_two_inputs(tmp_path: Path, workers: str) -> None:
    """The same path twice is read twice: each reading counts its own rows, and each repeated
    id is listed under both places (by name alone, both fell under the first, with twice the
    rows), in the summary and in the report."""
    source = write(tmp_path / "cohort.jsonl", [GOOD[0], GOOD[1]])
    summary, report = tmp_path / "s.json", tmp_path / "r.html"
    code, _, err = batch(
        str(source), str(source), "--out", str(tmp_path / "o.jsonl"), "--summary", str(summary),
        "--report", str(report), "--workers", workers,
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(summary.read_text())
    assert [i["rows"] for i in found["stamp"]["inputs"]] == [2, 2]
    assert found["reconciliation"]["rows_read"] == 4
    assert found["duplicates"] == [
        {"case_id": GOOD[0]["case_id"], "rows": [1, 1], "inputs": [0, 1]},
        {"case_id": GOOD[1]["case_id"], "rows": [2, 2], "inputs": [0, 1]},
    ]
    assert f"{source} (input 1) row 1, {source} (input 2) row 1" in report.read_text()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"patient_name": "Jane Roe"}, "patient_name"),
        ({"dob": "1961-03-12"}, "dob"),
        ({"contact": "jane.roe@example.org"}, "contact"),
        ({"contact": "+1 (555) 123-4567"}, "contact"),
    ],
    ids=["name-column", "dob-column", "email-values", "phone-values"],
)
def test_identifiers_are_refused_without_echoing_values(
    tmp_path: Path, extra: dict[str, str], named: str
) -> None:
    rows = [{**r, **extra} for r in cohort()]
    source = write(tmp_path / "cohort.jsonl", rows)
    out = tmp_path / "o.jsonl"
    code, stdout, err = batch(
        str(source), "--out", str(out), "--workers", "1", "--ignore-unknown-columns"
    )
    assert code == 2
    assert f"column '{named}' looks like a direct identifier" in err
    assert all(value not in err for value in extra.values())
    assert not out.exists()
    assert stdout == ""


def test_allow_column_passes_a_false_positive(tmp_path: Path) -> None:
    rows = [{**r, "dob": "1961-03-12"} for r in cohort()]
    source = write(tmp_path / "cohort.jsonl", rows)
    code, _, err = batch(
        str(source),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--workers",
        "1",
        "--allow-column",
        "dob",
        "--ignore-unknown-columns",
    )
    assert code == 0, err


def test_unknown_columns_are_ignored_unless_strict(tmp_path: Path) -> None:
    """Issue 27: an extra column is listed once and skipped by default; --strict-columns
    refuses it; --ignore-unknown-columns (the old switch) stays accepted."""
    rows = [{**r, "favourite_colour": "blue"} for r in cohort()]
    source = write(tmp_path / "cohort.jsonl", rows)
    code, _, err = batch(
        str(source), "--out", str(tmp_path / "o.jsonl"), "--workers", "1", "--strict-columns"
    )
    assert code == 2
    assert "columns not in the data dictionary: favourite_colour" in err
    code, _, err = batch(str(source), "--out", str(tmp_path / "o.jsonl"), "--workers", "1")
    assert code == 0, err
    assert err.count("favourite_colour") == 1
    assert "blue" not in err
    summary = tmp_path / "s.json"
    code, _, err = batch(
        str(source),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--workers",
        "1",
        "--ignore-unknown-columns",
        "--summary",
        str(summary),
    )
    assert code == 0, err
    assert json.loads(summary.read_text())["ignored_columns"] == ["favourite_colour"]


def test_derived_columns_are_refused(tmp_path: Path) -> None:
    rows = [{**r, "meyerding_grade": 1} for r in cohort()]
    source = write(tmp_path / "cohort.jsonl", rows)
    code, _, err = batch(str(source), "--out", str(tmp_path / "o.jsonl"), "--workers", "1")
    assert code == 2
    assert "column 'meyerding_grade' is a derived attribute" in err


def test_malformed_rows_are_rejected_with_their_row_number(tmp_path: Path) -> None:
    source = tmp_path / "cohort.csv"
    source.write_text("case_id,bmi\nA-1,25\nA-2,26,extra\nA-3,27\n")
    errors = tmp_path / "e.jsonl"
    code, _, _ = batch(
        str(source), "--out", str(tmp_path / "o.jsonl"), "--errors", str(errors), "--workers", "1"
    )
    assert code == 0
    (problem,) = [json.loads(line) for line in errors.read_text().splitlines()]
    assert problem["row"] == 2
    assert "expected 2 fields, found 3" in problem["reason"]
    jsonl = tmp_path / "cohort.jsonl"
    jsonl.write_text('{"case_id": "J-1"}\n{not json\n[1, 2]\n{"case_id": "J-4"}\n')
    code, _, _ = batch(
        str(jsonl), "--out", str(tmp_path / "o2.jsonl"), "--errors", str(errors), "--workers", "1"
    )
    assert code == 0
    assert [json.loads(line)["row"] for line in errors.read_text().splitlines()] == [2, 3]


def test_stdin_in_and_stdout_out(tmp_path: Path) -> None:
    text = "".join(json.dumps(r) + "\n" for r in cohort())
    result = runner.invoke(app, ["batch", "-", "--out", "-", "--workers", "1"], input=text)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(cohort()) - len(BAD)
    assert json.loads(lines[0])["case_id"] == "B-001"
    assert "error: <stdin>: row 5 (case_id B-005): bmi:" in result.stderr


def test_an_interrupted_run_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.batch.run as run_module

    calls = {"n": 0}
    real = run_module.screen_chunk

    def failing(chunk: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(chunk)

    monkeypatch.setattr(run_module, "screen_chunk", failing)
    source = write(tmp_path / "cohort.jsonl", cohort() * 60)
    out = tmp_path / "o.jsonl"
    runner.invoke(app, ["batch", str(source), "--out", str(out), "--workers", "1"])
    assert calls["n"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.jsonl"]


def _run_cli(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_a_row_that_kills_its_worker_is_rejected_and_nothing_else_is_lost(tmp_path: Path) -> None:
    rows = [dict(r) for r in cohort() * 20]
    for i, row in enumerate(rows):
        row["case_id"] = f"K-{i:05d}"
    source = write(tmp_path / "cohort.jsonl", rows)
    clean, crashed = tmp_path / "clean.jsonl", tmp_path / "crashed.jsonl"
    assert _run_cli(["batch", str(source), "--out", str(clean), "--workers", "2"]).returncode == 0
    done = _run_cli(
        [
            "batch",
            str(source),
            "--out",
            str(crashed),
            "--workers",
            "2",
            "--summary",
            str(tmp_path / "s.json"),
        ],
        env={"MISS_SCREEN_FAULT_CASE_ID": "K-00101"},
    )
    assert done.returncode == 0, done.stderr
    rec = json.loads((tmp_path / "s.json").read_text())["reconciliation"]
    assert rec["balanced"]
    assert rec["rows_rejected"] == 3 * 20 + 1
    lost = [line for line in clean.read_text().splitlines() if '"case_id":"K-00101"' in line]
    assert len(lost) == 1
    assert crashed.read_text().splitlines() == [
        line for line in clean.read_text().splitlines() if line != lost[0]
    ]
    crash_errors = (tmp_path / "crashed.jsonl.errors.jsonl").read_text()
    assert '"case_id": "K-00101"' in crash_errors
    assert "worker process died" in crash_errors


def test_killing_a_worker_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rows = [dict(r) for r in cohort() * 150]
    for i, row in enumerate(rows):
        row["case_id"] = f"M-{i:06d}"
    source = write(tmp_path / "cohort.jsonl", rows)
    clean, killed = tmp_path / "clean.jsonl", tmp_path / "killed.jsonl"
    assert _run_cli(["batch", str(source), "--out", str(clean), "--workers", "2"]).returncode == 0
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "batch",
            str(source),
            "--out",
            str(killed),
            "--workers",
            "2",
            "--summary",
            str(tmp_path / "s.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent = psutil.Process(process.pid)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and process.poll() is None:
        servers = [c for c in parent.children() if "forkserver" in " ".join(c.cmdline())]
        workers = [w for s in servers for w in s.children() if w.cpu_times().user > 0.3]
        victim = workers[0] if workers else None
        time.sleep(0.05)
    assert victim is not None, "no busy worker to kill"
    os.kill(victim.pid, signal.SIGKILL)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reconciliation"]["balanced"]
    assert summary["stamp"]["worker_restarts"] >= 1, "the kill came too late to test recovery"
    assert "a worker process died" in err
    assert killed.read_bytes() == clean.read_bytes()


def test_flattened_rows_match_the_full_result(evaluators: dict[str, Any]) -> None:
    """The batch fast path (no report objects) says exactly what the full result says."""
    from engine.batch.worker import flatten
    from engine.io.cases import read_case
    from engine.screen import decide

    for example in sorted((ROOT / "cases" / "examples").glob("*.yaml")):
        case_id, values = read_case(str(example))
        decision = decide(case_id, values, RULESET, evaluators["durable"])
        full = screen_values(case_id, values, RULESET, evaluators["durable"]).result
        by = {
            s: [f.rule_id for f in full.findings if f.severity == s]
            for s in ("red_flag", "major", "caution", "info")
        }
        expected = (
            full.case_id,
            full.verdict.value,
            *(";".join(by[s]) for s in by),
            ";".join(c.rule_id for c in full.conditional),
            ";".join(n.rule_id for n in full.not_evaluable),
            ";".join(sorted({m for n in full.not_evaluable for m in n.missing})),
            ";".join(c.rule_id for c in full.open_cautions),
        )
        assert flatten(case_id, decision.policy.verdict, decision.outcomes, RULESET) == expected


def test_rule_counts_match_every_outcome_counted_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers count only each case's notable outcomes and add the baselines per chunk;
    the summary must equal counting every rule's outcome of every case (reference evaluator)."""
    import csv
    from collections import Counter

    from engine.errors import CaseInputError
    from engine.io import tables
    from engine.screen import decide

    monkeypatch.setattr(tables, "CHUNK_ROWS", 97)  # several chunks, each counted apart
    source = ROOT / "cases" / "cohort" / "synthetic-500.csv"
    summary = tmp_path / "s.json"
    batch(str(source), "--out", str(tmp_path / "o.csv"), "--summary", str(summary))
    counted = {
        (r["rule_id"], s): r[s]
        for r in json.loads(summary.read_text())["rules"]
        for s in ("fired", "not_fired", "not_applicable", "conditional", "not_evaluable")
    }
    by_hand: Counter[tuple[str, str]] = Counter()
    with source.open(newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), 1):
            try:
                case_id, values = validate_case({k: v or None for k, v in row.items()}, "t", number)
                decision = decide(case_id, values, RULESET, EVALUATORS["reference"])
            except CaseInputError:
                continue
            by_hand.update((o.rule_id, o.status.value) for o in decision.outcomes)
    assert (
        sum(by_hand.values())
        == len(RULESET.rules) * json.loads(summary.read_text())["reconciliation"]["rows_screened"]
    )
    assert counted == {key: by_hand[key] for key in counted}


def test_notable_outcomes_keep_everything_but_baseline_objects() -> None:
    """Every fired, conditional and not-evaluable outcome is notable, in report order; an
    outcome equal to a baseline but not the shared object is kept, never dropped."""
    from engine.io.cases import read_case
    from engine.models import RuleOutcome
    from engine.screen import decide, notable_outcomes

    inert = {"not_fired", "not_applicable"}
    for example in sorted((ROOT / "cases" / "examples").glob("*.yaml")):
        decision = decide(*read_case(str(example)), RULESET, EVALUATORS["durable"])
        ordered = [decision.outcomes[p] for p in RULESET.report_positions]
        notable = notable_outcomes(decision.outcomes, RULESET)
        assert [o for o in ordered if o.status not in inert] == [
            o for o in notable if o.status not in inert
        ]
        assert notable == [o for o in ordered if o in notable]  # report order, no extras
        copies = [RuleOutcome(o.rule_id, o.status, o.missing) for o in decision.outcomes]
        assert notable_outcomes(copies, RULESET) == ordered


def test_the_verdict_reads_every_outcome_when_the_policy_reads_baseline_statuses() -> None:
    """The verdict from notable outcomes only is exact because no policy entry is selected
    by a not-fired or not-applicable rule; were one so selected, every outcome is read."""
    import copy

    from engine.io.cases import read_case
    from engine.screen import conclude, prepare

    assert RULESET.policy_ignores_inert
    altered = copy.copy(RULESET)
    first, _ = altered.policy_triggers[0]
    altered.__dict__["policy_triggers"] = [
        (first, frozenset({("not_applicable", s) for s in ("red_flag", "major")})),
        *altered.policy_triggers[1:],
    ]
    altered.__dict__.pop("policy_ignores_inert", None)
    altered.__dict__.pop("_verdict_policy", None)  # engine.policy.policy_for's, built anew
    assert not altered.policy_ignores_inert
    case_id, values = read_case(str(ROOT / "cases" / "examples" / "disc-herniation-l4-l5.yaml"))
    facts, assumed = prepare(case_id, values, RULESET)
    outcomes = EVALUATORS["durable"].evaluate(facts)
    assert conclude(facts, outcomes, assumed, RULESET).policy != first
    assert conclude(facts, outcomes, assumed, altered).policy == first


# --- regressions found in review -----------------------------------------------------------


def test_duplicate_columns_and_overwriting_an_input_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "dup.csv"
    source.write_text("case_id,age_years,age_years\nD1,50,10\n")
    code, _, err = batch(str(source), "--out", str(tmp_path / "o.jsonl"), "--workers", "1")
    assert code == 2
    assert "columns named more than once: age_years" in err
    good = write(tmp_path / "cohort.jsonl", cohort())
    before = good.read_bytes()
    code, _, err = batch(str(good), "--out", str(good), "--workers", "1")
    assert code == 2
    assert "is also an input" in err
    assert good.read_bytes() == before
    code, _, err = batch(str(good), "--out", str(tmp_path / "missing" / "o.jsonl"))
    assert code == 2
    assert "does not exist" in err


def test_bad_bytes_and_odd_values_become_row_errors_not_crashes(tmp_path: Path) -> None:
    source = tmp_path / "latin.csv"
    source.write_bytes(b"case_id,bmi\nL-1,25\nL-2,2\xe96\nL-3,27\n")
    errors = tmp_path / "e.jsonl"
    code, _, err = batch(
        str(source), "--out", str(tmp_path / "o.jsonl"), "--errors", str(errors), "--workers", "1"
    )
    assert code == 0, err
    assert err.count("is not UTF-8 text; read as cp1252") == 1  # said once
    (problem,) = [json.loads(line) for line in errors.read_text().splitlines()]
    assert (problem["row"], problem["field"]) == (2, "bmi")  # 2é6 is no number
    code, _, err = batch(
        str(source),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--errors",
        str(errors),
        "--workers",
        "1",
        "--encoding",
        "utf-8",
    )
    assert code == 0, err
    (problem,) = [json.loads(line) for line in errors.read_text().splitlines()]
    assert (problem["row"], problem["reason"]) == (2, "not UTF-8 text")
    table = pa.table({"case_id": ["N-1", "N-2"], "bmi": [float("nan"), float("inf")]})
    pq.write_table(table, tmp_path / "nan.parquet")
    code, _, _ = batch(
        str(tmp_path / "nan.parquet"),
        "--out",
        str(tmp_path / "n.jsonl"),
        "--errors",
        str(errors),
        "--workers",
        "1",
    )
    assert code == 0
    for line in errors.read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


def test_identifier_values_past_the_sample_are_withheld_from_errors(tmp_path: Path) -> None:
    rows = [{"case_id": f"W-{i:05d}", "bmi": 25} for i in range(1001)]
    rows.append({"case_id": "W-99999", "sex": "jane.doe@example.org"})
    source = write(tmp_path / "cohort.jsonl", rows)
    errors = tmp_path / "e.jsonl"
    code, _, err = batch(
        str(source), "--out", str(tmp_path / "o.jsonl"), "--errors", str(errors), "--workers", "1"
    )
    assert code == 0, err
    text = errors.read_text()
    assert "jane.doe" not in text
    assert "value withheld" in text


def test_stdin_loses_no_row_around_the_sample_boundary(tmp_path: Path) -> None:
    lines = [json.dumps({"case_id": f"S{i}", "bmi": 25}) for i in range(1, 1201)]
    lines[999] = ""  # line 1000 blank
    result = runner.invoke(
        app, ["batch", "-", "--out", "-", "--workers", "1"], input="\n".join(lines) + "\n"
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1199
    assert "rows read 1199 = screened 1199 + rejected 0" in result.stderr
    csv_stdin = runner.invoke(
        app, ["batch", "-", "--input-format", "csv", "--out", "-"], input="case_id\nA\n"
    )
    assert csv_stdin.exit_code == 2
    assert "read as JSONL only" in csv_stdin.stderr


def test_a_case_id_with_a_newline_is_rejected_and_the_summary_still_written(tmp_path: Path) -> None:
    source = tmp_path / "nl.jsonl"
    source.write_text('{"case_id": "A\\nxyz", "bmi": 25}\n{"case_id": "B-1", "bmi": 25}\n')
    summary = tmp_path / "s.json"
    code, _, err = batch(
        str(source), "--out", str(tmp_path / "o.jsonl"), "--summary", str(summary), "--workers", "1"
    )
    assert code == 0, err
    assert json.loads(summary.read_text())["reconciliation"]["rows_rejected"] == 1


def test_fields_blocking_a_verdict_are_counted_alike_for_every_output_format(
    tmp_path: Path,
) -> None:
    """blocks_verdict counts, per field, the insufficient_data cases in which a rule whose answer
    can change the verdict could not be evaluated for want of it: the same from full results
    (JSONL) as from flattened rows (CSV), and as counted by hand from the results; so is
    insufficient_only_site (every verdict-changing question a site setting)."""
    source = ROOT / "cases" / "cohort" / "synthetic-500.csv"
    blocks = {}
    only_site = {}
    for fmt in ("jsonl", "csv"):
        summary = tmp_path / f"{fmt}.json"
        out = tmp_path / f"o.{fmt}"
        detail = ["--detail", "full"] if fmt == "jsonl" else []
        batch(str(source), "--out", str(out), "--summary", str(summary), "--workers", "1", *detail)
        report = json.loads(summary.read_text())
        blocks[fmt] = {m["field"]: m["blocks_verdict"] for m in report["missingness"]}
        only_site[fmt] = report["insufficient_only_site"]
    by_hand: dict[str, int] = {}
    site_by_hand = 0
    for line in (tmp_path / "o.jsonl").read_text().splitlines():
        result = json.loads(line)
        if result["verdict"] == "insufficient_data":
            changing = {
                m for n in result["not_evaluable"] if n["can_change_verdict"] for m in n["missing"]
            }
            assert changing == set(result["next_questions"])
            for field in changing:
                by_hand[field] = by_hand.get(field, 0) + 1
            site_by_hand += changing <= set(SETTING_FIELDS)
    assert blocks["jsonl"] == blocks["csv"]
    assert {f: n for f, n in blocks["csv"].items() if n} == by_hand
    assert only_site["jsonl"] == only_site["csv"] == site_by_hand
    assert site_by_hand  # the cohort has cases that only a site profile leaves open
    assert by_hand  # the synthetic cohort has insufficient_data cases
