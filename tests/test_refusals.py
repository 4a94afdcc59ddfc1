"""Refused inputs end the process with exit 2, every time, and nothing can dump core (issue 26
item 2).

The CSV refusal path used to abort in about 3 % of runs (exit 134, "terminate called without
an active exception"): Arrow's read-ahead thread freed the reader's invalid-row handler while the
interpreter shut down. Each refusal path runs here as a real process, again and again (20 times;
200 under `-m slow`), with and without the pool's fork server starting alongside.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine.io.tables as tables
from engine.batch.startup import forbid_core_dumps
from tests.conftest import ROOT
from tests.test_faults import RUN_TIMEOUT_S, _busy_workers, _cohort, _env, _pool_processes

pytestmark = pytest.mark.faults

PR_GET_DUMPABLE = 3
ROWS = 40_000  # about 1.7 MB of CSV: the reader stops at the guard's sample mid-read-ahead


def _csv(path: Path, header: str, row: Callable[[int], str], malformed: bool = True) -> Path:
    lines = [header]
    for i in range(ROWS):
        lines.append(row(i))
        if malformed and i % 97 == 0:
            lines.append("a,malformed,row,with,too,many,fields")  # the handler is called
    path.write_text("\n".join(lines) + "\n")
    return path


def _jsonl(path: Path) -> Path:
    rows = [
        {"case_id": f"C-{i:05d}", "patient_name": f"Name {i}", "age_years": 50} for i in range(3000)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path: Path) -> Path:
    ids = [f"C-{i:05d}" for i in range(3000)]
    table = pa.table({"case_id": ids, "patient_name": ["x"] * 3000, "age_years": [50] * 3000})
    pq.write_table(table, path)
    return path


REFUSALS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "csv-identifier-column": (
        lambda d: _csv(d / "a.csv", "case_id,patient_name,age_years,diagnosis",
                       lambda i: f"C-{i:06d},John Smith{i},{40 + i % 40},spinal_stenosis"),
        "looks like a direct identifier",
    ),
    "csv-identifier-values": (
        lambda d: _csv(d / "b.csv", "case_id,age_years",
                       lambda i: f"person{i}@example.com,{40 + i % 40}"),
        "look like email addresses",
    ),
    "csv-no-case-id": (
        lambda d: _csv(d / "c.csv", "age_years,diagnosis",
                       lambda i: f"{40 + i % 40},spinal_stenosis"),
        "no case_id column",
    ),
    "csv-first-line-is-data": (
        lambda d: _csv(d / "d.csv", "C-000000,50", lambda i: f"C-{i:06d},{40 + i % 40}",
                       malformed=False),
        "looks like a row of data",
    ),
    "jsonl-identifier-column": (lambda d: _jsonl(d / "e.jsonl"), "looks like a direct identifier"),
    "parquet-identifier-column": (
        lambda d: _parquet(d / "f.parquet"), "looks like a direct identifier"
    ),
}  # fmt: skip


def _refuse(source: Path, out: Path, workers: int) -> tuple[int, str]:
    args = ["batch", str(source), "--out", str(out), "--workers", str(workers),
            "--progress", "none"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
        check=False, env=_env(), timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    "runs", [pytest.param(20, id="20"), pytest.param(200, id="200", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("path", sorted(REFUSALS))
@pytest.mark.hostile
@pytest.mark.timeout(1800)
def test_every_refusal_path_exits_2_every_time(tmp_path: Path, path: str, runs: int) -> None:
    """Half the runs start the pool's fork server first (--workers 2), which then dies with us."""
    make, said = REFUSALS[path]
    source = make(tmp_path)
    with ThreadPoolExecutor(2) as pool:  # two at once: the noise of a busy machine
        found = list(
            pool.map(lambda n: _refuse(source, tmp_path / f"o{n}.jsonl", 1 + n % 2), range(runs))
        )
    codes = [code for code, _ in found]
    odd = [(code, err) for code, err in found if code != 2]
    assert not odd, f"{len(odd)} of {runs} runs exited otherwise: {odd[:3]}"
    assert codes.count(2) == runs
    for _, err in found:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert said in lines[0], err
    assert not list(tmp_path.glob("o*")), "a refused run wrote an output"


@pytest.mark.timeout(120)
def test_the_csv_reader_lets_go_of_its_handler_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler is freed (on whichever thread) before the reader is done with: no Arrow
    thread is left holding it for interpreter shutdown. Without the bounded wait in
    tables._CsvStream.close, some readers stopped early leave it to the read-ahead thread."""
    source = REFUSALS["csv-identifier-column"][0](tmp_path)
    pending: list[bool] = []  # one per handler made; True once it is freed

    class Watched(tables._InvalidRows):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            index = len(pending)
            pending.append(False)
            weakref.finalize(self, pending.__setitem__, index, True)

    monkeypatch.setattr(tables, "_InvalidRows", Watched)
    late = 0
    for _ in range(150):
        reader = tables.TableReader(str(source), tables.InputFormat.csv)
        reader.sample(100)  # stops early: read-ahead still in flight
        late += not all(pending)
        del reader
    assert len(pending) == 150
    assert late == 0, f"{late} of 150 readers returned with Arrow still holding the handler"


@pytest.mark.timeout(60)
def test_a_process_that_forbids_core_dumps_cannot_dump() -> None:
    """RLIMIT_CORE 0 (no core file) and not dumpable (no core to a pipe handler either)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: forbid, then report what the kernel says
        try:
            forbid_core_dumps()
            dumpable = ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
            os.write(
                write, json.dumps([dumpable, resource.getrlimit(resource.RLIMIT_CORE)]).encode()
            )
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        dumpable, limit = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert dumpable == 0
    assert limit == [0, 0]


@pytest.mark.timeout(300)
def test_the_batch_process_its_fork_server_and_workers_have_no_core_limit(
    tmp_path: Path,
) -> None:
    """Seen from outside: a core size limit of 0 for every process of a running batch, started
    with core dumps allowed (as far as the hard limit lets us)."""
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    if hard == 0:
        pytest.skip("core dumps are off for good here: nothing to switch off")
    source = _cohort(tmp_path / "big.jsonl", 150)
    args = ["batch", str(source), "--out", str(tmp_path / "o.jsonl"), "--workers", "2",
            "--progress", "none", "--detail", "full"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *args], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=_env(),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (hard, hard)),
    )  # fmt: skip
    try:
        parent = psutil.Process(process.pid)
        workers = _busy_workers(parent, time.monotonic() + RUN_TIMEOUT_S)
        servers, _ = _pool_processes(parent)
        assert workers
        assert servers
        limits = {p.pid: p.rlimit(psutil.RLIMIT_CORE) for p in [parent, *servers, *workers]}
    finally:
        process.kill()
        process.communicate(timeout=RUN_TIMEOUT_S)
    assert set(limits.values()) == {(0, 0)}, limits
