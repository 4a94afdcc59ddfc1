"""One run per output set, and a set that proves it is one run's (issue 26 item 5).

Two batches on one set used to both exit 0, the loser overwritten in silence; on slow storage
run B's results could end up beside run A's summary. Now a kernel lock beside each output keeps
the second run out (one line, before it reads anything), a lock whose owner died is taken over
with a note, and `verify` (engine/batch/verify.py) refuses a set whose files are not the ones
its summary's run committed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from engine.batch.lock import OutputLocked, OutputLocks, lock_path, process_start_ticks
from engine.batch.verify import OutputSetMismatch, verify_output_set
from engine.cli import app
from tests.test_faults import (
    PREVIOUS,
    RUN_TIMEOUT_S,
    _batch_args,
    _busy_workers,
    _cli,
    _cohort,
    _env,
    _one_error_line,
    _run,
    _with_previous,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

runner = CliRunner()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough rows that a 2-worker run lasts some seconds on any machine."""
    return _cohort(tmp_path_factory.mktemp("big") / "big.jsonl", 150)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cohort(tmp_path_factory.mktemp("small") / "small.jsonl", 2)


def _start(source: Path, folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cli(*_batch_args(source, folder, 2)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(),
    )  # fmt: skip


def _lock_owner(folder: Path, deadline: float) -> dict[str, Any]:
    """The owner written in out.jsonl's lock file, once a run has written it."""
    lock = lock_path(str(folder / "out.jsonl"))
    while time.monotonic() < deadline:
        try:
            owner: dict[str, Any] = json.loads(lock.read_text())
            return owner
        except (OSError, ValueError):
            time.sleep(0.01)
    raise AssertionError("no run wrote its lock file")


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, err


def _locks(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".lock"))


def test_a_second_run_on_a_set_in_use_refuses_in_one_line_before_any_work(
    big: Path, small: Path, tmp_path: Path
) -> None:
    folder = _with_previous(tmp_path / "outputs")
    first = _start(big, folder)
    try:
        owner = _lock_owner(folder, time.monotonic() + RUN_TIMEOUT_S)
        assert owner["pid"] == first.pid
        assert owner["process_start"] == process_start_ticks(first.pid)
        assert len(owner["run_id"]) == 32
        started = time.monotonic()
        second = _run(_batch_args(small, folder, 2))
        assert first.poll() is None, "the first run ended before the second tried: no test"
    finally:
        code, err = _finish(first)
    assert second.returncode == 2, second.stderr
    line = _one_error_line(second.stderr)
    assert f"is being written by another run (pid {first.pid} on " in line
    assert "out.jsonl" in line
    assert time.monotonic() - started < RUN_TIMEOUT_S
    assert code == 0, err  # the first run was not disturbed
    summary = json.loads((folder / "s.json").read_text())
    assert summary["stamp"]["run_id"] == owner["run_id"]
    assert summary["reconciliation"]["rows_read"] == sum(1 for _ in big.open())
    assert verify_output_set(folder / "s.json", folder / "r.html").run_id == owner["run_id"]
    assert _locks(folder) == []  # removed by the run that held them


def test_two_batches_started_together_on_one_set_one_refuses(big: Path, tmp_path: Path) -> None:
    folder = _with_previous(tmp_path / "outputs")
    runs = [_start(big, folder), _start(big, folder)]
    results = [_finish(run) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is being written by another run" in _one_error_line(refused)
    assert verify_output_set(folder / "s.json", folder / "r.html")
    assert _locks(folder) == []


def test_the_lock_of_a_killed_run_is_taken_over_with_a_note(
    big: Path, small: Path, tmp_path: Path
) -> None:
    """kill -9 leaves the lock file, not the lock: the kernel dropped it with the process."""
    folder = _with_previous(tmp_path / "outputs")
    first = _start(big, folder)
    try:
        assert _busy_workers(psutil.Process(first.pid), time.monotonic() + RUN_TIMEOUT_S)
        owner = _lock_owner(folder, time.monotonic() + RUN_TIMEOUT_S)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        _finish(first)
    assert ".out.jsonl.lock" in _locks(folder)  # left behind, naming the dead run
    assert {n: (folder / n).read_text() for n in PREVIOUS} == PREVIOUS  # nothing committed
    second = _run(_batch_args(small, folder, 2))
    assert second.returncode == 0, second.stderr
    notes = [line for line in second.stderr.splitlines() if "took over the lock" in line]
    assert notes, second.stderr
    assert f"left by a run that is gone (pid {owner['pid']} on " in notes[0]
    assert "out.jsonl" in notes[0]
    assert _locks(folder) == []
    assert verify_output_set(folder / "s.json", folder / "r.html")


def _set(source: Path, folder: Path) -> Path:
    folder.mkdir()
    # CSV results: a format with no room for a run id, bound to the run by its hash
    done = _run(["batch", str(source), "--out", str(folder / "out.csv"), "--summary",
                 str(folder / "s.json"), "--report", str(folder / "r.html"), "--workers", "1",
                 "--progress", "none"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def two_sets(big: Path, small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sets")
    return _set(small, root / "a"), _set(_cohort(root / "other.jsonl", 1), root / "b")


def _verify(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["verify", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_whole_set_verifies_and_renders_its_report(
    two_sets: tuple[Path, Path], tmp_path: Path
) -> None:
    a, _ = two_sets
    summary = json.loads((a / "s.json").read_text())
    assert [o["option"] for o in summary["outputs"]] == ["--out", "--errors"]
    code, out, err = _verify(str(a / "s.json"), "--report", str(a / "r.html"),
                             "--html", str(tmp_path / "again.html"))  # fmt: skip
    assert code == 0, err
    assert summary["stamp"]["run_id"] in out
    assert summary["stamp"]["run_id"] in (tmp_path / "again.html").read_text()


@pytest.mark.parametrize("swapped", ["out.csv", "out.csv.errors.jsonl"])
def test_a_set_holding_a_file_of_another_run_is_refused(
    two_sets: tuple[Path, Path], tmp_path: Path, swapped: str
) -> None:
    a, b = two_sets
    mixed = tmp_path / "mixed"
    shutil.copytree(a, mixed)
    shutil.copy(b / swapped, mixed / swapped)  # as a slow rename on network storage leaves it
    code, out, err = _verify(str(mixed / "s.json"), "--html", str(tmp_path / "r.html"))
    assert code == 2
    line = _one_error_line(err)
    assert swapped in line
    assert "is not the file run" in line
    assert "mixes runs" in line
    assert out == ""
    assert not (tmp_path / "r.html").exists()  # no report of a mixed set
    with pytest.raises(OutputSetMismatch):
        verify_output_set(mixed / "s.json")


def test_a_report_of_another_run_is_refused(two_sets: tuple[Path, Path]) -> None:
    a, b = two_sets
    code, _, err = _verify(str(a / "s.json"), "--report", str(b / "r.html"))
    assert code == 2
    run_b = json.loads((b / "s.json").read_text())["stamp"]["run_id"]
    assert f"is the report of run {run_b}" in _one_error_line(err)


def test_a_file_system_that_cannot_lock_lets_the_run_go_on_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some network file systems refuse flock (ENOLCK): the run is not stopped, the user is
    told that nothing keeps a second run out, and verify is what remains."""
    import errno
    import fcntl

    def refuse(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    notes: list[str] = []
    locks = OutputLocks("0" * 32, "2026-01-01T00:00:00+00:00", notes.append)
    target = str(tmp_path / "out.jsonl")
    locks.take([target])
    assert len(notes) == 1
    assert "cannot lock" in notes[0]
    assert "miss-screen verify" in notes[0]
    assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
    locks.release()
    assert not lock_path(target).exists()


def test_a_lock_held_in_this_process_keeps_a_second_taker_out(tmp_path: Path) -> None:
    """flock locks belong to the open file: a second open, even here, is refused."""
    target = str(tmp_path / "out.jsonl")
    first = OutputLocks("1" * 32, "2026-01-01T00:00:00+00:00", None)
    first.take([target, str(tmp_path / "s.json")])
    second = OutputLocks("2" * 32, "2026-01-01T00:00:01+00:00", None)
    with pytest.raises(OutputLocked, match=f"pid {os.getpid()} on "):
        second.take([str(tmp_path / "s.json")])
    first.release()
    second.take([str(tmp_path / "s.json")])  # free once released
    second.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
