"""Batch workers fork ready to screen: the fork server builds the rules the parent loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.batch import worker
from engine.batch.startup import PRELOAD_ENGINE_ENV, PRELOAD_RULES_ENV
from engine.batch.worker import OutputFormat, WorkerConfig
from engine.io.tables import Chunk
from engine.screener import COHORT_ENGINE, ENGINES, Screener
from tests.conftest import ROOT, RULES_DIR, RULESET

PROBE = (
    "from engine.batch import preload, worker; "
    "loaded = worker._STATE.loaded; "
    "print(f'{loaded.ruleset.sha256} {loaded.engine}' if loaded else None)"
)


def _preloaded(rules_dir: str, engine: str = "") -> str:
    """What a fork server importing engine.batch.preload has built, in a fresh process."""
    env = {PRELOAD_RULES_ENV: rules_dir, PRELOAD_ENGINE_ENV: engine, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(  # our own interpreter, fixed arguments
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_fork_server_builds_the_rules_it_is_named() -> None:
    assert _preloaded(str(RULES_DIR)) == f"{RULESET.sha256} {COHORT_ENGINE}"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_fork_server_builds_the_engine_it_is_named(engine: str) -> None:
    assert _preloaded(str(RULES_DIR), engine) == f"{RULESET.sha256} {engine}"


def test_rules_it_cannot_build_are_left_to_the_workers() -> None:
    assert _preloaded(str(ROOT / "no-such-rules")) == "None"


def _config(sha256: str, engine: str = "reference") -> WorkerConfig:
    return WorkerConfig(
        rules_dir=str(RULES_DIR),
        ruleset_sha256=sha256,
        site={},
        output_format=OutputFormat.jsonl,
        ignored_columns=frozenset(),
        engine=engine,
    )


def test_a_worker_builds_rules_only_when_the_ones_it_has_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[tuple[str, str]] = []
    monkeypatch.setattr(worker._STATE, "loaded", Screener.from_ruleset(RULESET, "reference"))
    monkeypatch.setattr(worker, "build_rules", lambda *named: built.append(named))
    worker.init_worker(_config(RULESET.sha256))  # forked with the parent's rules: kept
    assert built == []
    worker.init_worker(_config("0" * 64))  # the server built other rules: built again
    assert built == [(str(RULES_DIR), "reference")]
    other = next(e for e in ENGINES if e != "reference")
    worker.init_worker(_config(RULESET.sha256, other))  # the same rules for another engine
    assert built[1:] == [(str(RULES_DIR), other)]


FORKED = (
    "import multiprocessing, sys; "
    "from concurrent.futures import ProcessPoolExecutor; "
    "from engine.batch.startup import start_fork_server; "
    "from tests.fork_probe import preloaded_sha256; "
    "start_fork_server(sys.argv[1]); "
    "pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('forkserver')); "
    "print(pool.submit(preloaded_sha256).result()); pool.shutdown()"
)


def test_a_worker_forks_with_the_rules_already_built() -> None:
    """The real thing: a fork server started for the bundled rules, and a pool worker."""
    done = subprocess.run(  # our own interpreter, fixed arguments
        [sys.executable, "-c", FORKED, str(RULES_DIR)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.strip() == RULESET.sha256


def test_rules_edited_during_a_run_stop_it_rather_than_mix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose rules (built from the files now) differ from the ones the parent
    stamped refuses to screen: the run fails with a clear error and keeps no output."""
    monkeypatch.setattr(worker._STATE, "loaded", Screener.from_ruleset(RULESET, "reference"))
    monkeypatch.setattr(worker, "build_rules", lambda *named: None)  # "the files now"
    worker.init_worker(_config("0" * 64))  # the parent stamped other rules
    chunk = Chunk(0, "cohort.csv", [(1, {"case_id": "c1", "levels": 1})])
    with pytest.raises(worker.RulesChanged, match="changed while the batch ran"):
        worker.screen_chunk(chunk)
