"""Where a batch row's time goes: CPU time per stage of the worker's chunk loop, warm.

    python benchmarks/stages.py [--rows 20000] [--rounds 3] [--site FILE]

Screens a synthetic Parquet cohort chunk by chunk in this process, as `batch --workers 1`
does, timing each stage of engine.batch.worker.screen_chunk with process_time, and prints
microseconds per row (best round per stage). For profiling between A/B runs of two trees;
the targets live in bench.py.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from engine.batch import worker
from engine.batch.worker import (
    GC_THRESHOLD,
    OutputFormat,
    WorkerConfig,
    _checked_rows,
    count_baselines,
    flat_batch,
    init_worker,
    record,
)
from engine.errors import CaseInputError
from engine.io.cases import validate_case
from engine.io.tables import Chunk
from engine.screen import conclude
from engine.screener import Screener
from engine.synth import write_cohort

CHUNK = 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", default=str(Path(__file__).resolve().parents[1] / "rules"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "cohort.parquet"
        write_cohort(source, args.rows, seed=7, missing=0.05, corrupt=0.01)
        table = pq.read_table(source)
    batches = table.to_batches(max_chunksize=CHUNK)
    screener_probe = Screener.load(args.rules)
    config = WorkerConfig(
        rules_dir=args.rules,
        ruleset_sha256=screener_probe.ruleset.sha256,
        site={},
        output_format=OutputFormat.parquet,
        ignored_columns=frozenset(),
        in_process=True,
    )
    init_worker(config)
    screener = worker._STATE.screener
    evaluator = screener.evaluator
    best: Counter[str] = Counter()
    rows = 0
    for round_ in range(args.rounds):
        spent: Counter[str] = Counter()
        rows = 0
        gc.collect()
        gc.set_threshold(GC_THRESHOLD)
        first = 1
        for index, batch in enumerate(batches):
            chunk = Chunk(index, "cohort", [], batch, first)
            first += batch.num_rows
            rows += batch.num_rows
            t = time.process_time()
            checked = _checked_rows(chunk, frozenset())
            spent["read and validate by column"] += time.process_time() - t
            t = time.process_time()
            valid, prepared = [], []
            for number, row, hit in checked:
                try:
                    case_id, values = hit if hit is not None else validate_case(row, "c", number)
                    prepared.append(screener.prepare(case_id, values))
                except CaseInputError:  # a rejected row: not timed further
                    continue
                valid.append((case_id, values))
            spent["site, constraints, derived attributes"] += time.process_time() - t
            facts = [f for f, _ in prepared]
            t = time.process_time()
            masks = evaluator.fired_masks(facts)
            spent["durable-rules (assert, drain, read)"] += time.process_time() - t
            t = time.process_time()
            outcomes = [evaluator.outcomes_from(m, f) for m, f in zip(masks, facts, strict=True)]
            spent["outcomes and explanations"] += time.process_time() - t
            t = time.process_time()
            decisions = [
                conclude(f, o, a, screener.ruleset)
                for (f, a), o in zip(prepared, outcomes, strict=True)
            ]
            spent["verdict with possible verdicts"] += time.process_time() - t
            t = time.process_time()
            result = worker.ChunkResult(index, "cohort", rows=batch.num_rows)
            present: Counter[str] = Counter()
            for (case_id, values), decision in zip(valid, decisions, strict=True):
                record(result, case_id, decision, None, values, screener, present)
            count_baselines(result, screener.ruleset)
            spent["counting and flattening"] += time.process_time() - t
            t = time.process_time()
            flat_batch(result.records)
            spent["Arrow output"] += time.process_time() - t
        for stage, seconds in spent.items():
            if round_ == 0 or seconds < best[stage]:
                best[stage] = seconds
    total = 0.0
    for stage, seconds in best.items():
        per_row = 1e6 * seconds / rows
        total += per_row
        print(f"{stage:40s} {per_row:7.1f} us/row")
    print(f"{'total':40s} {total:7.1f} us/row  ({1e6 / total:,.0f} rows/s)")


if __name__ == "__main__":
    main()
