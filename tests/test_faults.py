"""The batch fault matrix: each fault at its worst moment, and nothing lost, nothing half-written,
no hang, no process left behind. Run alone with `pytest -m faults`.

Every run is a real process (signals, kills and process trees are what is tested), bounded by a
timeout; the clean run it is compared with uses the same input and chunk size.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine.batch.run import CHUNK_ROWS_ENV
from engine.batch.worker import FAULT_ENV, FAULT_SEND_ENV
from engine.batch.writers import AtomicPath, OutputError
from engine.io.pseudonymise import load_key, pseudonym
from tests.conftest import ROOT
from tests.test_batch import batch, cohort, write

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

RUN_TIMEOUT_S = 180  # one batch run, however loaded the machine
ORPHAN_GRACE_S = 5.0
CHUNK_ROWS = "25"  # small chunks: many results in flight, so kills meet sends often
RANDOM_KILL_RUNS = 20
PREVIOUS = {
    "out.jsonl": "previous results\n",
    "out.jsonl.errors.jsonl": "previous errors\n",
    "s.json": "previous summary\n",
    "r.html": "previous report\n",
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISS_SCREEN_FAULT")}
    return {**env, CHUNK_ROWS_ENV: CHUNK_ROWS, **extra}


def _cohort(path: Path, copies: int) -> Path:
    rows = [dict(r) for r in cohort() * copies]
    for i, row in enumerate(rows):
        row["case_id"] = f"F-{i:06d}"
    return write(path, rows)


def _batch_args(source: Path, folder: Path, workers: int) -> list[str]:
    return [
        "batch", str(source), "--out", str(folder / "out.jsonl"), "--summary",
        str(folder / "s.json"), "--report", str(folder / "r.html"), "--workers", str(workers),
        "--progress", "none", "--detail", "full",  # full results: messages a pipe cannot hold
    ]  # fmt: skip


def _run(args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli(*args), capture_output=True, text=True, check=False, env=_env(**extra),
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip


def _outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("out.jsonl", "out.jsonl.errors.jsonl")}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _with_previous(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in PREVIOUS.items():
        (folder / name).write_text(text)
    return folder


def _previous_intact(folder: Path, *, locks_left: bool = False) -> None:
    """The previous run's outputs, exactly, and nothing else (no temp file, no new output);
    with `locks_left`, the lock files of a run killed with SIGKILL (the next run takes them
    over, tests/test_output_lock.py), each naming that run."""
    found = _listing(folder)
    if locks_left:
        locks = [f".{name}.lock" for name in PREVIOUS]
        assert sorted(n for n in found if n.endswith(".lock")) == sorted(locks)
        found = [n for n in found if n not in locks]
    assert found == sorted(PREVIOUS)
    for name, text in PREVIOUS.items():
        assert (folder / name).read_text() == text, name


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """987 rows (63 rejected), 40 chunks of 25 rows; each result message is about 200 KB, more
    than a pipe holds, so a worker spends real time writing it."""
    return _cohort(tmp_path_factory.mktemp("cohort") / "cohort.jsonl", 21)


@pytest.fixture(scope="module")
def clean(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What a run with no fault writes (one worker: in-process, no pool at all)."""
    folder = tmp_path_factory.mktemp("clean")
    done = _run(_batch_args(source, folder, 1))
    assert done.returncode == 0, done.stderr
    return _outputs(folder)


def _check_complete(folder: Path, clean: dict[str, bytes], done: Any) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    assert _outputs(folder) == clean  # byte-identical: nothing lost, duplicated or reordered
    summary: dict[str, Any] = json.loads((folder / "s.json").read_text())
    assert summary["reconciliation"]["balanced"]
    assert (folder / "r.html").stat().st_size > 0
    assert not [n for n in _listing(folder) if n.endswith(".tmp")]
    return summary


# --- workers killed ---------------------------------------------------------------------------


def test_a_worker_killed_half_way_through_sending_a_result_hangs_nothing(
    source: Path, clean: dict[str, bytes], tmp_path: Path
) -> None:
    """The deterministic case: two workers each write the header and half of a result message,
    pause while the parent reads it, and die (the hook in worker.serve)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    done = _run(_batch_args(source, tmp_path, 2), **{FAULT_SEND_ENV: f"3,11@{marks}"})
    summary = _check_complete(tmp_path, clean, done)
    assert sorted(p.name for p in marks.iterdir()) == ["sent-11", "sent-3"]  # the hook fired
    assert summary["stamp"]["worker_restarts"] == 2
    assert "2 worker restarts, nothing lost" in done.stderr


def _pool_processes(parent: psutil.Process) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(fork servers, workers) under a batch process."""
    servers, workers = [], []
    try:
        for child in parent.children():
            if "forkserver" in " ".join(child.cmdline()):
                servers.append(child)
                workers += child.children()
    except psutil.Error:
        pass
    return servers, workers


def _busy_workers(parent: psutil.Process, deadline: float) -> list[psutil.Process]:
    """Workers that have screened a while, as soon as there are any (none: the run ended)."""
    while time.monotonic() < deadline and _live(parent):
        _, workers = _pool_processes(parent)
        busy = []
        for worker in workers:
            try:
                if worker.cpu_times().user > 0.1:
                    busy.append(worker)
            except psutil.Error:
                pass
        if busy:
            return busy
        time.sleep(0.02)
    return []


def _live(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _sending(worker: psutil.Process) -> bool:
    try:
        return "pipe_write" in Path(f"/proc/{worker.pid}/wchan").read_text()  # anon_ on 6.x
    except OSError:
        return False


KILLS: dict[int, tuple[int, bool]] = {}  # run -> (worker restarts, a kill met a send)


@pytest.mark.parametrize("run", range(RANDOM_KILL_RUNS))
def test_workers_killed_at_random_moments_lose_nothing(
    run: int, source: Path, clean: dict[str, bytes], tmp_path: Path
) -> None:
    """kill -9 of one or two busy workers at a random moment (every other run: the moment a
    worker is seen writing to its result pipe), and the output is the clean run's, byte for
    byte."""
    rng = random.Random(run)  # noqa: S311  # moments to kill at, not secrets
    met_send = False
    process = subprocess.Popen(
        _cli(*_batch_args(source, tmp_path, 2)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(),
    )  # fmt: skip
    try:
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for _ in range(rng.choice((1, 1, 2))):
            busy = _busy_workers(parent, deadline)
            if not busy:
                break
            if run % 2:  # wait (a little) for a worker in the middle of sending
                until = time.monotonic() + 3.0
                sending = [w for w in busy if _sending(w)]
                while not sending and time.monotonic() < until:
                    time.sleep(0.002)
                    busy = _busy_workers(parent, deadline) or busy
                    sending = [w for w in busy if _sending(w)]
                busy = sending or busy
            else:
                time.sleep(rng.uniform(0, 0.5))
            victim = rng.choice(busy)
            met_send = met_send or _sending(victim)
            with contextlib.suppress(ProcessLookupError):  # it may have just finished
                os.kill(victim.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    done = subprocess.CompletedProcess([], process.returncode, "", err)
    summary = _check_complete(tmp_path, clean, done)
    KILLS[run] = (summary["stamp"]["worker_restarts"], met_send)


def test_the_random_kills_hit_running_work() -> None:
    """The runs above tested something: most kills cost a restart, and some met a send."""
    if len(KILLS) < RANDOM_KILL_RUNS:
        pytest.skip("run with the random-kill runs")
    restarted = sum(1 for restarts, _ in KILLS.values() if restarts)
    assert restarted >= RANDOM_KILL_RUNS * 3 // 4, KILLS
    assert any(met for _, met in KILLS.values()), KILLS


def test_a_row_that_kills_every_worker_is_isolated_and_rejected(
    source: Path, clean: dict[str, bytes], tmp_path: Path
) -> None:
    done = _run(_batch_args(source, tmp_path, 2), **{FAULT_ENV: "F-000500"})
    assert done.returncode == 0, done.stderr
    kept = [line for line in clean["out.jsonl"].splitlines(keepends=True)
            if b'"case_id":"F-000500"' not in line]  # fmt: skip
    assert len(kept) == clean["out.jsonl"].count(b"\n") - 1
    assert (tmp_path / "out.jsonl").read_bytes() == b"".join(kept)
    errors = (tmp_path / "out.jsonl.errors.jsonl").read_text()
    assert '"case_id": "F-000500"' in errors
    assert "worker process died 2 times" in errors
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reconciliation"]["balanced"]
    assert summary["stamp"]["worker_restarts"] >= 2


def test_a_row_that_kills_every_worker_still_counts_for_duplicates(tmp_path: Path) -> None:
    """Rejected for killing its workers, a row's case_id is still an id read: repeated (here
    the killer twice, in two chunks), it is reported as a duplicate with both rows, as any
    rejected row's id is."""
    rows = [dict(r) for r in cohort() * 3]
    for i, row in enumerate(rows):
        row["case_id"] = f"K-{i:04d}"
    rows[70]["case_id"] = rows[5]["case_id"]
    source = write(tmp_path / "cohort.jsonl", rows)
    done = _run(_batch_args(source, tmp_path, 2), **{FAULT_ENV: rows[5]["case_id"]})
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reconciliation"]["balanced"]
    assert summary["stamp"]["worker_restarts"] >= 4  # each row killed two workers
    assert summary["duplicates"] == [{"case_id": "K-0005", "rows": [6, 71], "inputs": [0, 0]}]


def test_a_killer_row_is_listed_by_its_pseudonym_as_every_other_output_lists_it(
    tmp_path: Path,
) -> None:
    """With --pseudonymise-ids, a row rejected for killing its workers is listed, and counts
    for duplicates, under its pseudonym (the id every other output shows); the id as read is
    in no output."""
    rows = [dict(r) for r in cohort() * 3]
    for i, row in enumerate(rows):
        row["case_id"] = f"K-{i:04d}"
    rows[70]["case_id"] = rows[5]["case_id"]
    source = write(tmp_path / "cohort.jsonl", rows)
    key_file = tmp_path / "ids.key"
    shown = pseudonym(load_key(str(key_file)), "K-0005")
    args = [*_batch_args(source, tmp_path, 2), "--pseudonymise-ids", str(key_file)]
    done = _run(args, **{FAULT_ENV: shown})  # the hook meets the id as the workers see it
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reconciliation"]["balanced"]
    assert summary["stamp"]["worker_restarts"] >= 4  # each row killed two workers
    assert summary["duplicates"] == [{"case_id": shown, "rows": [6, 71], "inputs": [0, 0]}]
    errors = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").open()]
    assert [e["case_id"] for e in errors if "worker process died" in e["reason"]] == [shown] * 2
    for name in ("out.jsonl", "out.jsonl.errors.jsonl", "s.json", "r.html"):
        assert b"K-0005" not in (tmp_path / name).read_bytes(), name


def test_a_killer_row_of_a_mapped_export_is_listed_without_its_id(tmp_path: Path) -> None:
    """With a column mapping the id the outputs show is the mapped one, which only the
    workers compute (the mapping may be what stalled them): the killer row is rejected with
    its row number and no id; the rest of the export is screened and the run balances."""
    export = tmp_path / "export.csv"
    lines = (ROOT / "cases" / "registry" / "export.csv").read_text().splitlines(keepends=True)
    export.write_text("".join(lines[:121]))  # the header and 120 rows
    args = [
        *_batch_args(export, tmp_path, 2),
        "--map", str(ROOT / "cases" / "registry" / "mapping.yaml"),
    ]  # fmt: skip
    done = _run(args, **{FAULT_ENV: "7"})  # "Record ID" 7, mapped to case_id
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reconciliation"]["balanced"]
    assert summary["stamp"]["worker_restarts"] >= 2
    errors = [json.loads(line) for line in (tmp_path / "out.jsonl.errors.jsonl").open()]
    died = [e for e in errors if "worker process died" in e["reason"]]
    assert [(e["row"], e["case_id"]) for e in died] == [(7, None)]
    screened = [json.loads(line)["case_id"] for line in (tmp_path / "out.jsonl").open()]
    assert "7" not in screened
    assert {"6", "8"} <= set(screened)


# --- the batch process itself signalled or killed ---------------------------------------------


def _session(leader: int) -> list[psutil.Process]:
    """Live processes of the session `leader` started (zombies are dead)."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == leader and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (OSError, psutil.Error):
            pass
    return alive


@pytest.fixture
def started_batch(source: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A 2-worker batch, in a session of its own, over a previous run's outputs; the processes
    it leaves are killed at the end whatever the test found."""
    big = _cohort(tmp_path / "big.jsonl", 150)
    folder = _with_previous(tmp_path / "outputs")
    process = subprocess.Popen(
        _cli(*_batch_args(big, folder, 2)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(), start_new_session=True,
    )  # fmt: skip
    yield process, folder
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=RUN_TIMEOUT_S)
    for proc in _session(process.pid):
        proc.kill()


def _no_process_left(leader: int, pids: set[int]) -> None:
    """Within ORPHAN_GRACE_S, no process of the batch's session, nor any of `pids`, lives."""

    def alive() -> list[psutil.Process]:
        found = {p.pid: p for p in _session(leader)}
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found[pid] = proc
        return list(found.values())

    deadline = time.monotonic() + ORPHAN_GRACE_S
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = []
    for proc in alive():
        with contextlib.suppress(psutil.Error):
            left.append(" ".join(proc.cmdline()))
    assert not left, left


def _pids(process: subprocess.Popen[str]) -> set[int]:
    parent = psutil.Process(process.pid)
    return {p.pid for p in parent.children(recursive=True)}


def test_a_killed_batch_takes_its_workers_and_fork_server_with_it(
    started_batch: tuple[subprocess.Popen[str], Path],
) -> None:
    process, folder = started_batch
    assert _busy_workers(psutil.Process(process.pid), time.monotonic() + RUN_TIMEOUT_S)
    pids = _pids(process)
    assert len(pids) >= 3  # fork server, two workers (and the resource tracker)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=RUN_TIMEOUT_S)
    _no_process_left(process.pid, pids)
    _previous_intact(folder, locks_left=True)  # a temp file has no name until commit


@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGHUP, False)],
    ids=["SIGTERM", "SIGINT-to-the-group", "SIGHUP"],
)
def test_a_signalled_batch_stops_cleanly_mid_run(
    started_batch: tuple[subprocess.Popen[str], Path], signum: int, group: bool
) -> None:
    """SIGTERM (timeout, a scheduler) and SIGHUP are handled like Ctrl-C, which a terminal
    sends to the whole process group."""
    process, folder = started_batch
    assert _busy_workers(psutil.Process(process.pid), time.monotonic() + RUN_TIMEOUT_S)
    pids = _pids(process)
    if group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    _, err = process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode == 128 + signum, err
    assert _one_error_line(err) == "error: interrupted"
    _no_process_left(process.pid, pids)
    _previous_intact(folder)


def _handlers_installed(pid: int) -> bool:
    """Has the program installed its SIGTERM handler (its first statement)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(status.split("SigCgt:")[1].split()[0], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("moment", ["loading", "fork-server-starting"])
def test_ctrl_c_at_start_up_is_one_line_and_leaves_nothing(
    source: Path, tmp_path: Path, moment: str
) -> None:
    folder = _with_previous(tmp_path / "outputs")
    process = subprocess.Popen(
        _cli(*_batch_args(source, folder, 2)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(), start_new_session=True,
    )  # fmt: skip
    try:
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        ready = False
        while not ready and time.monotonic() < deadline and process.poll() is None:
            if moment == "loading":  # still importing the engine, typer, pydantic
                ready = _handlers_installed(process.pid)
            else:
                ready = bool(_pool_processes(parent)[0])
            time.sleep(0.005)
        assert ready, f"never reached the moment ({moment})"
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert _one_error_line(err) == "error: interrupted"
    _no_process_left(process.pid, set())
    _previous_intact(folder)


# --- the file system refuses ------------------------------------------------------------------

DRIVER = """
import json, os, subprocess, sys
folder, size, readonly = sys.argv[1], sys.argv[2], sys.argv[3] == "ro"
previous, args, timeout = json.loads(sys.argv[4]), json.loads(sys.argv[5]), int(sys.argv[6])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", folder], check=True)
for name, text in previous.items():
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)
if readonly:
    subprocess.run(["mount", "-o", "remount,ro", folder], check=True)
done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
files = {n: open(os.path.join(folder, n)).read() for n in sorted(os.listdir(folder))}
print(json.dumps({"code": done.returncode, "stderr": done.stderr, "files": files}))
"""


def _in_private_mount(tmp_path: Path, size: str, mode: str, args: list[str]) -> dict[str, Any]:
    """Run the CLI with its output folder on a tmpfs of `size` (read-only if mode == "ro")
    mounted in a mount namespace of its own; skip where the system allows none."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to mount a private tmpfs")
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True, check=False, timeout=30)
    if probe.returncode != 0:
        pytest.skip("cannot make a mount namespace here")
    folder = tmp_path / "mnt"
    folder.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    command = [unshare, "-rm", sys.executable, str(script), str(folder), size, mode,
               json.dumps(PREVIOUS), json.dumps(args), str(RUN_TIMEOUT_S)]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env=_env(),
        timeout=RUN_TIMEOUT_S + 30,
    )  # fmt: skip
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_read_only_output_folder_is_one_line_before_any_work(
    source: Path, tmp_path: Path
) -> None:
    args = _cli(*_batch_args(source, tmp_path / "mnt", 2))
    found = _in_private_mount(tmp_path, "1m", "ro", args)
    assert found["code"] == 2, found["stderr"]
    line = _one_error_line(found["stderr"])
    assert "Read-only file system" in line
    assert "out.jsonl" in line
    assert found["files"] == PREVIOUS


def test_a_full_disk_mid_run_is_one_line_and_keeps_the_previous_outputs(
    source: Path, tmp_path: Path
) -> None:
    """A 256 KB tmpfs: the results (some MB) fill it during the run."""
    args = _cli(*_batch_args(source, tmp_path / "mnt", 2))
    found = _in_private_mount(tmp_path, "256k", "rw", args)
    assert found["code"] == 2, found["stderr"]
    line = _one_error_line(found["stderr"])
    assert "No space left on device" in line
    assert found["files"] == PREVIOUS


@pytest.mark.parametrize("failing", ["summary", "report"])
def test_an_output_that_fails_last_keeps_the_whole_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Results and errors are complete when the summary (or report) hits a full disk: none of
    the new outputs appears, the previous run's four are untouched."""
    import engine.batch.run as run_module

    real = run_module.write_text
    chosen = {"summary": "s.json", "report": "r.html"}[failing]

    def full_disk(atomic: Any, text: str) -> None:
        if atomic.target.name == chosen:
            raise OutputError(atomic.target, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real(atomic, text)

    monkeypatch.setattr(run_module, "write_text", full_disk)
    folder = _with_previous(tmp_path / "outputs")
    source = _cohort(tmp_path / "c.jsonl", 2)
    code, _, err = batch(*_batch_args(source, folder, 1)[1:])
    assert code == 2
    assert "No space left on device" in _one_error_line(err)
    _previous_intact(folder)


def test_an_injected_full_disk_while_writing_results_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file system takes 64 KB of results, then refuses (ENOSPC, as a full disk does)."""
    real_open = AtomicPath.open

    def small_disk(self: AtomicPath, mode: str, **kwargs: Any) -> Any:
        stream = real_open(self, mode, **kwargs)
        return _Filling(stream) if self.target.name == "out.jsonl" else stream

    monkeypatch.setattr(AtomicPath, "open", small_disk)
    monkeypatch.setenv(CHUNK_ROWS_ENV, CHUNK_ROWS)
    folder = _with_previous(tmp_path / "outputs")
    source = _cohort(tmp_path / "c.jsonl", 4)
    code, _, err = batch(*_batch_args(source, folder, 1)[1:])
    assert code == 2
    assert "No space left on device" in _one_error_line(err)
    _previous_intact(folder)


class _Filling:
    """A file that refuses to grow past 64 KB."""

    def __init__(self, stream: Any) -> None:
        self._stream, self._size = stream, 0

    def write(self, text: str) -> int:
        self._size += len(text)
        if self._size > 65_536:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# --- outputs that collide ---------------------------------------------------------------------


def _colliding(folder: Path, case: str) -> tuple[list[str], set[str]]:
    """Output options for one collision, and the two option names the error must give."""
    out, summary = str(folder / "out.jsonl"), str(folder / "s.json")
    if case == "symlink":
        (folder / "alias.json").symlink_to(folder / "s.json")
    if case == "hard-link":
        os.link(folder / "s.json", folder / "hard.json")
    return {
        "out=errors": (["--out", out, "--errors", out], {"--out", "--errors"}),
        "summary=out": (["--out", out, "--summary", out], {"--out", "--summary"}),
        "summary=report": (["--out", out, "--summary", summary, "--report", summary],
                           {"--summary", "--report"}),
        "summary=default-errors": (["--out", out, "--summary", out + ".errors.jsonl"],
                                   {"--errors (default OUT.errors.jsonl)", "--summary"}),
        "symlink": (["--out", out, "--summary", summary, "--report",
                     str(folder / "alias.json")], {"--summary", "--report"}),
        "hard-link": (["--out", out, "--summary", summary, "--report",
                       str(folder / "hard.json")], {"--summary", "--report"}),
        "relative": (["--out", out, "--summary", str(folder / "x" / ".." / "out.jsonl")],
                     {"--out", "--summary"}),
    }[case]  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["out=errors", "summary=out", "summary=report", "summary=default-errors", "symlink",
     "hard-link", "relative"],
)  # fmt: skip
def test_colliding_outputs_are_refused_before_any_work(tmp_path: Path, case: str) -> None:
    folder = _with_previous(tmp_path / "outputs")
    (folder / "x").mkdir()
    source = _cohort(tmp_path / "c.jsonl", 1)
    options, named = _colliding(folder, case)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code, _, err = batch(str(source), *options, "--workers", "1", "--progress", "none")
    assert code == 2
    line = _one_error_line(err)
    assert all(option in line for option in named), line
    assert "same file" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_an_output_that_is_an_input_through_a_symlink_is_refused(tmp_path: Path) -> None:
    source = _cohort(tmp_path / "c.jsonl", 1)
    (tmp_path / "alias.jsonl").symlink_to(source)
    text = source.read_bytes()
    code, _, err = batch(str(source), "--out", str(tmp_path / "o.jsonl"), "--summary",
                         str(tmp_path / "alias.jsonl"), "--workers", "1")  # fmt: skip
    assert code == 2
    assert "--summary" in _one_error_line(err)
    assert "is also an input" in err
    assert source.read_bytes() == text


@pytest.mark.parametrize(
    ("kind", "message"), [("folder", "is a folder"), ("fifo", "not a regular")]
)
def test_an_output_that_is_a_folder_or_a_pipe_is_refused_before_any_work(
    tmp_path: Path, kind: str, message: str
) -> None:
    source = _cohort(tmp_path / "c.jsonl", 1)
    target = tmp_path / "target.jsonl"
    target.mkdir() if kind == "folder" else os.mkfifo(target)
    code, _, err = batch(str(source), "--out", str(target), "--workers", "1")
    assert code == 2
    assert "--out" in _one_error_line(err)
    assert message in err


# --- Dask -------------------------------------------------------------------------------------


def test_a_dask_worker_that_keeps_dying_ends_the_run_with_one_line(
    tmp_path: Path,
) -> None:
    """Dask restarts a killed worker and screens its partition again; a partition that kills
    every worker ends the run (never hangs), with one line and no output kept."""
    pytest.importorskip("distributed")
    rows = [dict(r) for r in cohort() * 5]
    for i, row in enumerate(rows):
        row["case_id"] = f"D-{i:05d}"
    source = write(tmp_path / "c.parquet", rows)
    folder = _with_previous(tmp_path / "outputs")
    args = [*_batch_args(source, folder, 2), "--executor", "dask"]
    done = _run(args, **{FAULT_ENV: "D-00100"})
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert "every Dask worker that screened it died" in line
    _previous_intact(folder)


def test_a_dask_worker_killed_once_is_reported_and_its_partition_redone(
    tmp_path: Path,
) -> None:
    pytest.importorskip("distributed")
    rows = [dict(r) for r in cohort() * 5]
    for i, row in enumerate(rows):
        row["case_id"] = f"D-{i:05d}"
    source = write(tmp_path / "c.parquet", rows)
    local, dask = tmp_path / "local", tmp_path / "dask"
    local.mkdir()
    dask.mkdir()
    assert _run(_batch_args(source, local, 1)).returncode == 0
    args = [*_batch_args(source, dask, 2), "--executor", "dask"]
    done = _run(args, **{FAULT_ENV: f"D-00100@{tmp_path}"})
    assert (tmp_path / "killed").exists()  # the hook fired
    assert done.returncode == 0, done.stderr
    assert _outputs(dask) == _outputs(local)
    summary = json.loads((dask / "s.json").read_text())
    assert summary["stamp"]["worker_restarts"] >= 1
    assert "a worker process died" in done.stderr
