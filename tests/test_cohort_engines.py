"""`--engine` on every cohort command: each engine engine.screener.ENGINES lists gives the same
outputs, byte for byte, on the local pool, in process and on Dask; an unknown one is a usage error.

The engines are taken from ENGINES, never listed here, so an engine registered there is held to
the others by these tests the day it lands (issue 29 item 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.batch import run as batch_run
from engine.batch import worker
from engine.batch.pool import WINDOW_PER_WORKER
from engine.batch.worker import Detail, OutputFormat, WorkerConfig
from engine.cli import app
from engine.io.tables import Chunk, InputFormat, TableReader
from engine.screener import COHORT_ENGINE, ENGINES, Screener
from engine.synth import write_cohort
from tests.conftest import RULES_DIR, RULESET

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "cases" / "cohort" / "synthetic-500.csv"
LABELS = ROOT / "cases" / "labels" / "example-labels.csv"
ROWS, SEED = 400, 29  # 5 % of values blanked, 4 % of rows corrupt: rejections on every engine
runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cohort") / "cohort.parquet"
    write_cohort(path, ROWS, SEED, missing=0.05, corrupt=0.04)
    return path


def invoke(args: list[str]) -> Any:
    return runner.invoke(app, args)


def batch(source: Path, out: Path, engine: str, *extra: str) -> dict[str, Any]:
    """One batch run; its summary JSON."""
    summary = out.with_name(out.name + ".summary.json")
    done = invoke(
        ["batch", str(source), "--out", str(out), "--summary", str(summary),
         "--progress", "none", "--engine", engine, *extra]
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


def outputs(out: Path) -> dict[str, bytes]:
    """Every file of a run's output set but the summary (which holds the clock and run id)."""
    return {
        p.name.removeprefix(out.name): p.read_bytes()
        for p in out.parent.iterdir()
        if p.name.startswith(out.name) and not p.name.endswith(".summary.json")
    }


def without_run(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without what differs between identical runs: the clock, the run id, the
    engine (checked apart) and the outputs' paths (each run writes its own)."""
    stamp = {
        k: v
        for k, v in summary["stamp"].items()
        if k not in ("started", "duration_s", "run_id", "engine")
    }
    hashes = [(o["option"], o["sha256"], o["bytes"]) for o in summary["outputs"]]
    return {**summary, "stamp": stamp, "outputs": hashes}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_batch_gives_the_same_outputs_on_every_engine(
    cohort: Path, tmp_path: Path, fmt: str
) -> None:
    found = {}
    for engine in ENGINES:
        out = tmp_path / engine / f"out.{fmt}"
        out.parent.mkdir()
        summary = batch(cohort, out, engine, "--workers", "1")
        assert summary["stamp"]["engine"] == engine
        assert summary["reconciliation"]["rows_rejected"] > 0  # the error file is compared too
        found[engine] = (outputs(out), without_run(summary))
    first = found[ENGINES[0]]
    assert len(first[0]) >= 2  # results and errors at least
    for engine in ENGINES[1:]:
        assert found[engine] == first, engine


def _parquet_ids_run(cohort: Path, out: Path, engine: str, *extra: str) -> dict[str, bytes]:
    """The output set of a `--detail ids` Parquet run, its engine checked."""
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = batch(cohort, out, engine, "--detail", "ids", *extra)
    assert summary["stamp"]["engine"] == engine
    return outputs(out)


@pytest.fixture(scope="module")
def one_local_worker(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The local run with the cohort default every engine's pool and Dask runs are held to
    (the same for each engine: run once)."""
    out = tmp_path_factory.mktemp("local-1") / "out.parquet"
    return _parquet_ids_run(cohort, out, COHORT_ENGINE, "--workers", "1")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("engine", ENGINES)
def test_two_workers_and_dask_partitions_match_one_local_worker(
    cohort: Path, one_local_worker: dict[str, bytes], tmp_path: Path, engine: str
) -> None:
    """Each engine on the pool and on Dask: the bytes of a local run with the cohort default."""
    pytest.importorskip("distributed")
    runs = {
        "local-2": ["--workers", "2"],
        "dask-2": ["--workers", "2", "--executor", "dask"],
    }
    for name, extra in runs.items():
        found = _parquet_ids_run(cohort, tmp_path / name / "out.parquet", engine, *extra)
        assert found == one_local_worker, name


@pytest.mark.timeout(300)
def test_a_pool_reads_parquet_in_chunks_of_its_own_size_with_the_same_outputs(
    cohort: Path,
    one_local_worker: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Worker processes screen Parquet in larger chunks than one process does, as many rows
    in flight as POOL_ROWS_IN_FLIGHT allows (both shrunk here, so the cohort spans several
    chunks of either size), never fewer than one process's: the pool's chunks are its own
    size, and its outputs the bytes of one local worker's."""
    monkeypatch.delenv(batch_run.CHUNK_ROWS_ENV, raising=False)
    monkeypatch.setattr(batch_run, "PARQUET_CHUNK_ROWS", 30)
    monkeypatch.setattr(batch_run, "POOL_ROWS_IN_FLIGHT", 70 * 2 * WINDOW_PER_WORKER)
    reader = TableReader(str(cohort), InputFormat.parquet)
    one = [chunk.size() for chunk in batch_run.all_chunks([reader], "vectorised")]
    assert one == [30] * (ROWS // 30) + [ROWS % 30]
    read = batch_run.all_chunks
    sent: list[int] = []

    def watched(*args: Any) -> Iterator[Chunk]:
        for chunk in read(*args):
            sent.append(chunk.size())
            yield chunk

    monkeypatch.setattr(batch_run, "all_chunks", watched)
    found = _parquet_ids_run(cohort, tmp_path / "out.parquet", "vectorised", "--workers", "2")
    assert sent == [70] * (ROWS // 70) + [ROWS % 70]
    assert found == one_local_worker
    assert batch_run.pool_chunk_rows(8) == 30  # many workers: one process's size, no less


def _config(engine: str) -> WorkerConfig:
    return WorkerConfig(
        rules_dir=str(RULES_DIR),
        ruleset_sha256=RULESET.sha256,
        site={},
        output_format=OutputFormat.jsonl,
        ignored_columns=frozenset(),
        engine=engine,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_a_worker_screens_with_the_engine_asked_not_the_one_preloaded(engine: str) -> None:
    """The fork server preloads one Screener; a worker asked for another engine with the same
    rules must build its own, not reuse the preloaded one (same content hash)."""
    others = [e for e in ENGINES if e != engine]
    saved = worker._STATE.loaded, getattr(worker._STATE, "config", None)
    try:
        for preloaded in others:
            worker._STATE.loaded = Screener.from_ruleset(RULESET, preloaded)
            worker.init_worker(_config(engine))
            assert worker._STATE.screener.engine == engine
            assert type(worker._STATE.screener.evaluator) is type(
                Screener.from_ruleset(RULESET, engine).evaluator
            )
        kept = Screener.from_ruleset(RULESET, engine)
        worker._STATE.loaded = kept
        worker.init_worker(_config(engine))
        assert worker._STATE.screener.evaluator is kept.evaluator  # the same engine is reused
    finally:
        worker._STATE.loaded = saved[0]
        if saved[1] is not None:
            worker.init_worker(saved[1])


def _without_engine(report: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(report)
    for engine in ENGINES:
        text = text.replace(f'"engine": "{engine}"', '"engine": "-"')
    return json.loads(text)  # type: ignore[no-any-return]


@pytest.mark.timeout(300)
def test_rules_diff_gives_the_same_report_on_every_engine(tmp_path: Path) -> None:
    reports = {}
    for engine in ENGINES:
        (tmp_path / engine).mkdir()
        out = tmp_path / engine / "diff.json"
        done = invoke(
            ["rules", "diff", str(RULES_DIR), str(RULES_DIR), "--cohort", str(BUNDLED),
             "--out", str(out), "--engine", engine]
        )  # fmt: skip
        assert done.exit_code == 0, done.stderr
        report = json.loads(out.read_text())
        assert report["old"]["engine"] == report["new"]["engine"] == engine
        assert report["compared_rows"] == 495
        report["changes_file"] = Path(report["changes_file"]).read_bytes().decode()
        reports[engine] = _without_engine(report)
    for engine in ENGINES[1:]:
        assert reports[engine] == reports[ENGINES[0]], engine


@pytest.mark.timeout(300)
def test_agree_gives_the_same_report_on_every_engine(tmp_path: Path) -> None:
    pytest.importorskip("statsmodels")
    reports = {}
    for engine in ENGINES:
        (tmp_path / engine).mkdir()
        out = tmp_path / engine / "agree.json"
        done = invoke(
            ["agree", "--labels", str(LABELS), "--cohort", str(BUNDLED), "--out", str(out),
             "--engine", engine]
        )  # fmt: skip
        assert done.exit_code == 0, done.stderr
        report = json.loads(out.read_text())
        assert report["engine"] == engine
        assert report["cases_compared"] > 0
        reports[engine] = _without_engine(report)
    for engine in ENGINES[1:]:
        assert reports[engine] == reports[ENGINES[0]], engine


@pytest.mark.hostile
@pytest.mark.timeout(120)
@pytest.mark.parametrize("engine", ["vectorized", "DURABLE", "../durable", "", "durable "])
@pytest.mark.parametrize(
    "command",
    [
        ["batch", str(BUNDLED), "--out", "{tmp}/o.jsonl"],
        ["rules", "diff", str(RULES_DIR), str(RULES_DIR), "--cohort", str(BUNDLED),
         "--out", "{tmp}/d.md"],
        ["agree", "--labels", str(LABELS), "--cohort", str(BUNDLED), "--out", "{tmp}/a.md"],
        ["screen", str(ROOT / "cases" / "examples" / "disc-herniation-l4-l5.yaml")],
    ],
    ids=["batch", "rules-diff", "agree", "screen"],
)
def test_an_engine_not_listed_is_a_usage_error_before_anything_is_written(
    tmp_path: Path, command: list[str], engine: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in command] + ["--engine", engine]
    done = invoke(args)
    assert done.exit_code == 2
    assert "--engine" in done.stderr
    assert ", ".join(ENGINES) in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_without_engine_a_cohort_command_uses_the_cohort_engine(tmp_path: Path) -> None:
    """One constant, COHORT_ENGINE, decides the cohort default, and the stamp says which ran."""
    out = tmp_path / "out.jsonl"
    summary = tmp_path / "s.json"
    done = invoke(["batch", str(BUNDLED), "--out", str(out), "--summary", str(summary),
                   "--workers", "1", "--progress", "none"])  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert json.loads(summary.read_text())["stamp"]["engine"] == COHORT_ENGINE in ENGINES


@pytest.mark.timeout(300)
def test_a_dask_partition_is_decided_by_column_on_the_vectorised_engine(
    cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition reaches the worker as a record batch, so the vectorised engine decides its
    plainly valid rows itself (as rows of dicts, every row went one by one while the stamp said
    `vectorised`), and its result is a local chunk's."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("distributed")
    import pyarrow.parquet as pq

    from engine.batch.dask_executor import screen_partition
    from engine.evaluate.vectorised import CohortPlan
    from engine.io.tables import Chunk

    decided: list[int] = []
    decide = CohortPlan.decide

    def counted(self: CohortPlan, *args: Any, **kwargs: Any) -> Any:
        found = decide(self, *args, **kwargs)
        decided.append(len(found.rows))
        return found

    monkeypatch.setattr(CohortPlan, "decide", counted)
    table = pq.read_table(cohort)
    # as dask.dataframe.read_parquet(dtype_backend="pyarrow") hands a partition over
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    config = replace(_config("vectorised"), detail=Detail.ids)
    saved = getattr(worker._STATE, "config", None)
    try:
        partition = screen_partition(frame, config, "<cohort>", [0], 0)["result"].iloc[0]
        by_column = sum(decided)
        worker.init_worker(config)
        batch = table.combine_chunks().to_batches()[0]
        local = worker.screen_chunk(Chunk(0, "<cohort>", [], batch=batch, first=1))
    finally:
        if saved is not None:
            worker.init_worker(saved)
    assert isinstance(frame, pd.DataFrame)
    assert vars(partition) == vars(local)
    assert by_column == sum(decided) - by_column > 0.9 * local.screened
