"""The batch watchdog (issue 26 item 3): a worker that stops making progress never hangs a run.

A stopped worker (SIGSTOP) and a row that never finishes (the FAULT_STALL_ENV hook) are each
killed after their chunk's bound; the chunk is redone as for a death, halved down to the row;
a row that keeps stalling is rejected with that reason and counted, so the run reconciles.
Every run is a real process bounded by a timeout: without the watchdog these runs never end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from engine.batch.dask_executor import PartitionBound
from engine.batch.pool import STALL_FACTOR, Job, Slot, WorkerPool
from engine.batch.run import CHUNK_ROWS_ENV
from engine.batch.worker import FAULT_STALL_ENV, OutputFormat, WorkerConfig
from engine.io.tables import Chunk
from tests.test_batch import cohort, write
from tests.test_faults import (
    RUN_TIMEOUT_S,
    _batch_args,
    _busy_workers,
    _cli,
    _cohort,
    _env,
    _one_error_line,
    _outputs,
    _previous_intact,
    _run,
    _with_previous,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

STALL_S = "3"  # the floor the tests set: seconds a chunk may go without a result


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cohort(tmp_path_factory.mktemp("cohort") / "cohort.jsonl", 21)


@pytest.fixture(scope="module")
def clean(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("clean")
    done = _run(_batch_args(source, folder, 1))
    assert done.returncode == 0, done.stderr
    return _outputs(folder)


def test_a_stopped_worker_is_killed_and_its_chunk_screened_again(
    source: Path, clean: dict[str, bytes], tmp_path: Path
) -> None:
    """SIGSTOP on a busy worker used to hang the run until SIGCONT, with no line at all."""
    args = [*_batch_args(source, tmp_path, 2), "--stall-timeout", STALL_S]
    process = subprocess.Popen(
        _cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    victim = None
    try:
        busy = _busy_workers(psutil.Process(process.pid), time.monotonic() + RUN_TIMEOUT_S)
        assert busy, "no worker got busy"
        victim = busy[0]
        os.kill(victim.pid, signal.SIGSTOP)
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)  # no watchdog: never returns
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if victim is not None:
            with contextlib.suppress(psutil.Error):
                victim.kill()
    assert process.returncode == 0, err
    assert _outputs(tmp_path) == clean  # byte-identical: the stalled chunk was redone
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reconciliation"]["balanced"]
    assert summary["stamp"]["worker_stalls"] >= 1
    assert summary["stamp"]["worker_restarts"] >= summary["stamp"]["worker_stalls"]
    assert "warning: a worker made no progress for" in err  # said as it happened
    assert "for stalling, nothing lost" in err


@pytest.mark.parametrize("workers", [2, 1])
def test_a_row_that_never_finishes_is_isolated_and_rejected_as_stalled(
    source: Path, clean: dict[str, bytes], tmp_path: Path, workers: int
) -> None:
    """Halved down to the row, which is rejected naming the stall; the rest is the clean run's.
    With one worker, --stall-timeout screens on a pool of one, which the watchdog can kill."""
    args = [*_batch_args(source, tmp_path, workers), "--stall-timeout", STALL_S]
    done = _run(args, **{FAULT_STALL_ENV: "F-000500", CHUNK_ROWS_ENV: "8"})
    assert done.returncode == 0, done.stderr
    kept = [line for line in clean["out.jsonl"].splitlines(keepends=True)
            if b'"case_id":"F-000500"' not in line]  # fmt: skip
    assert len(kept) == clean["out.jsonl"].count(b"\n") - 1
    assert (tmp_path / "out.jsonl").read_bytes() == b"".join(kept)
    errors = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").open()]
    stalled = [e for e in errors if e["case_id"] == "F-000500"]
    assert len(stalled) == 1
    assert stalled[0]["field"] is None
    assert re.search(r"made no progress for \d+ s", stalled[0]["reason"]), stalled
    assert "stalled" in stalled[0]["reason"]
    summary = json.loads((tmp_path / "s.json").read_text())
    clean_errors = clean["out.jsonl.errors.jsonl"].decode().splitlines()
    rec = summary["reconciliation"]
    assert rec["balanced"]
    assert rec["rows_rejected"] == len({json.loads(e)["row"] for e in clean_errors}) + 1
    # 8 rows -> 4 -> 2 -> 1, each stalled twice before it is halved or rejected
    assert summary["stamp"]["worker_stalls"] >= 8
    assert "warning: a worker made no progress for" in done.stderr


def _config() -> WorkerConfig:
    return WorkerConfig("rules", "0" * 64, {}, OutputFormat.jsonl, frozenset())


def _job(rows: int) -> Job:
    return Job(Chunk(0, "c.jsonl", [(n, {}) for n in range(1, rows + 1)]), Slot())


def test_the_bound_is_the_floor_until_rows_prove_slow() -> None:
    """No result yet, or fast rows: the floor. Slow rows: STALL_FACTOR times their mean cost,
    so a legitimately slow chunk is never taken for a stalled one."""
    pool = WorkerPool(_config(), 2, stall_floor_s=5.0)
    assert pool.bound_s(_job(1000)) == 5.0
    pool.row_cost_s = 0.0001  # 0.1 s per 1000 rows
    assert pool.bound_s(_job(1000)) == 5.0
    pool.row_cost_s = 0.01  # 10 s per 1000 rows
    assert pool.bound_s(_job(1000)) == pytest.approx(STALL_FACTOR * 10.0)
    assert pool.bound_s(_job(1)) == 5.0


def test_a_dask_partition_that_never_finishes_ends_the_run_in_one_line(tmp_path: Path) -> None:
    """Dask would wait for ever; the partition's bound ends the run, no output kept."""
    pytest.importorskip("distributed")
    rows = [dict(r) for r in cohort() * 5]
    for i, row in enumerate(rows):
        row["case_id"] = f"D-{i:05d}"
    source = write(tmp_path / "c.parquet", rows)
    folder = _with_previous(tmp_path / "outputs")
    args = [*_batch_args(source, folder, 2), "--executor", "dask", "--stall-timeout", STALL_S]
    done = _run(args, **{FAULT_STALL_ENV: "D-00100"})
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert re.search(r"partition \d+ \(rows \d+-\d+\) made no progress for \d+ s", line), line
    _previous_intact(folder)


def test_a_dask_partition_is_bounded_by_its_rows_before_any_result() -> None:
    """A partition of a million rows is not stalled at the floor: rows are assumed slow until
    results say otherwise."""
    bound = PartitionBound(5.0)
    assert bound.bound_s(10) == 5.0
    assert bound.bound_s(1_000_000) > 1_000
    bound.observe(1.0, 10_000)  # 0.1 ms per row
    assert bound.bound_s(1_000_000) == pytest.approx(STALL_FACTOR * 100.0)
