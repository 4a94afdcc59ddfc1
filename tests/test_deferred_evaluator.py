"""A vectorised Screener builds durable-rules only when a row needs the per-row path (issue 29).

Building it costs about 0.17 s and 20 MB in every batch worker, sweep process and test: a cohort
the vectorised engine decides wholly by column must never build it, and one that does need it
(a single case, a per-technique site profile) gets it once, with durable-rules' own outputs.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.batch import worker
from engine.batch.worker import ChunkResult, Detail, OutputFormat, WorkerConfig
from engine.cli import app
from engine.evaluate import durable
from engine.evaluate.deferred import DeferredEvaluator
from engine.io.tables import Chunk
from engine.screener import Screener
from engine.synth import write_cohort
from tests.conftest import RULES_DIR, RULESET

ROWS, SEED = 300, 41  # 5 % of values blanked, 1 % of rows corrupt (write_cohort's defaults)
PER_TECHNIQUE = {"surgeon_mis_cases": {"mis_tlif": 10, "llif": 200}}  # chosen after constraints


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deferred") / "cohort.parquet"
    write_cohort(path, ROWS, SEED)
    return path


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every DurableEvaluator built while the test runs; no Screener kept from an earlier one."""
    made: list[object] = []

    class Counted(durable.DurableEvaluator):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(durable, "DurableEvaluator", Counted)
    monkeypatch.setattr(worker._STATE, "loaded", None)
    return made


def _screen_chunk(cohort: Path, engine: str, site: dict[str, Any]) -> dict[str, Any]:
    """Everything screen_chunk sends back for the whole cohort as one chunk, comparable."""
    worker.init_worker(
        WorkerConfig(
            rules_dir=str(RULES_DIR),
            ruleset_sha256=RULESET.sha256,
            site=site,
            output_format=OutputFormat.jsonl,
            ignored_columns=frozenset(),
            in_process=True,
            detail=Detail.ids,
            engine=engine,
        )
    )
    batch = pq.read_table(cohort).combine_chunks().to_batches()[0]
    result: ChunkResult = worker.screen_chunk(Chunk(0, "<test>", [], batch=batch, first=1))
    return dict(vars(result))


@pytest.mark.timeout(120)
def test_a_batch_decided_wholly_by_column_builds_durable_rules_only_for_its_check(
    cohort: Path, tmp_path: Path, builds: list[object]
) -> None:
    """The whole `batch` command: the parent builds durable-rules once, so that rules it refuses
    fail the run before any screening whatever the data; the worker never builds it."""
    out = tmp_path / "out.jsonl"
    summary = tmp_path / "summary.json"
    done = CliRunner().invoke(
        app,
        ["batch", str(cohort), "--out", str(out), "--summary", str(summary),
         "--workers", "1", "--progress", "none", "--engine", "vectorised"],
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    counts = json.loads(summary.read_text())["reconciliation"]
    assert counts["rows_screened"] > 0.9 * ROWS  # screened, not rejected
    assert len(out.read_text().splitlines()) == counts["rows_screened"]
    assert len(builds) == 1  # the parent's check
    evaluator = worker._STATE.screener.evaluator
    assert isinstance(evaluator, DeferredEvaluator)
    assert not evaluator.is_built


@pytest.mark.timeout(120)
def test_rows_left_to_the_per_row_path_build_it_once_with_durable_rules_outputs(
    cohort: Path, builds: list[object]
) -> None:
    found = _screen_chunk(cohort, "vectorised", PER_TECHNIQUE)
    assert len(builds) == 1  # every row went per row (the site setting), one build for all
    expected = _screen_chunk(cohort, "durable", PER_TECHNIQUE)
    assert expected["screened"] > 0.9 * ROWS
    assert found == expected


@pytest.mark.timeout(120)
def test_threads_screening_single_cases_share_one_build(builds: list[object]) -> None:
    """The service and Dask call from several threads: the first case builds durable-rules,
    once, and every thread gets its outcomes."""
    screener = Screener.from_ruleset(RULESET, "vectorised")
    assert builds == []  # not at construction
    cases = [
        {"case_id": f"T-{n}", "age_years": 40 + n, "diagnosis": "lumbar_disc_herniation"}
        for n in range(8)
    ]
    start = threading.Barrier(len(cases))
    results: dict[int, str] = {}

    def screen(n: int) -> None:
        start.wait()
        results[n] = screener.screen(cases[n]).model_dump_json()

    threads = [threading.Thread(target=screen, args=(n,)) for n in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    reference = Screener.from_ruleset(RULESET, "durable")
    assert results == {n: reference.screen(case).model_dump_json() for n, case in enumerate(cases)}


@pytest.mark.timeout(120)
def test_rules_durable_rules_refuses_fail_a_vectorised_batch_before_any_screening(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a rule base is refused must not depend on whether some row needs the per-row path:
    the clean cohort (decided wholly by column) is refused as durable refuses it, and nothing is
    written."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise durable.EngineError("durable-rules refuses these rules (test)")

    monkeypatch.setattr(durable.DurableEvaluator, "__init__", refuse)
    monkeypatch.setattr(worker._STATE, "loaded", None)
    out = tmp_path / "out.jsonl"
    for engine in ("durable", "vectorised"):
        done = CliRunner().invoke(
            app,
            ["batch", str(cohort), "--out", str(out), "--workers", "1", "--progress", "none",
             "--engine", engine],
        )  # fmt: skip
        assert done.exit_code == 2, (engine, done.exit_code, done.output)
        assert "refuses these rules" in done.stderr
        assert not out.exists()


def test_a_build_that_failed_fails_again_without_building_again() -> None:
    """The service asks on every request: a failed build is not retried (and leaked) each time."""
    tries: list[int] = []

    def build() -> Any:
        tries.append(1)
        raise RuntimeError("no")

    deferred = DeferredEvaluator(RULESET, build)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            deferred.evaluate({})  # type: ignore[arg-type]
    assert len(tries) == 1
