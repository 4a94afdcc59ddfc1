"""Instructions a batch row costs, counted by callgrind: a measure the machine's noise leaves alone.

    python benchmarks/instructions.py [--rules DIR] [--chunks 5] [--text]

Wall time on a shared 2-core machine varies by a third from run to run; instruction counts do
not. This screens a synthetic Parquet cohort as `batch --workers 1` does (screen_chunk, chunks
of 1,000 rows) under valgrind's callgrind twice, once with one chunk and once with 1 + CHUNKS,
and prints the difference per row: start-up and imports cancel out. Needs valgrind (Debian:
`apt-get install valgrind`); takes about three minutes. Compare two trees by running it in each.

`--text` hands the rows over as a CSV reader gives them (every value text, as `batch` reads a CSV
file): each row then takes the row-by-row path (engine.io.cases.validate_case, with the value
normaliser) instead of the column-wise check of a Parquet batch.

The durable-rules layout is cached on disk by the code that builds it, so the first process
after a change to engine/evaluate/ builds it again (about 800M instructions): the cache is
warmed before counting, or that cost would land in one run and not the other.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = 1_000  # engine.io.tables.CHUNK_ROWS


def _csv_text(value: object) -> str | None:
    """A value as a CSV reader hands it over: text, booleans as true/false, null as None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def screen_chunks(rules: str, cohort: str, chunks: int, text: bool = False) -> None:
    """What callgrind counts (run as `--child`): the first `chunks` chunks of the cohort
    screened in process, as `batch --workers 1` screens them (as CSV text with `text`)."""
    import pyarrow.parquet as pq

    from engine.batch.worker import OutputFormat, WorkerConfig, init_worker, screen_chunk
    from engine.io.tables import Chunk
    from engine.screener import Screener

    table = pq.read_table(cohort).slice(0, ROWS * chunks)
    sha = Screener.load(rules).ruleset.sha256
    init_worker(WorkerConfig(rules, sha, {}, OutputFormat.parquet, frozenset(), True))
    first = 1
    for index, batch in enumerate(table.to_batches(max_chunksize=ROWS)):
        if text:
            rows = [
                (first + n, {k: _csv_text(v) for k, v in row.items()})
                for n, row in enumerate(batch.to_pylist())
            ]
            screen_chunk(Chunk(index, "cohort", list(rows)))
        else:
            screen_chunk(Chunk(index, "cohort", [], batch, first))
        first += batch.num_rows


def counted(
    valgrind: str, rules: str, cohort: Path, chunks: int, folder: Path, text: bool = False
) -> int:
    out = folder / f"callgrind.{chunks}.out"
    run = subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            rules,
            str(cohort),
            str(chunks),
            *(["--text"] if text else []),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", default=str(ROOT / "rules"))
    parser.add_argument("--chunks", type=int, default=5, help="chunks counted (1,000 rows each)")
    parser.add_argument("--text", action="store_true", help="rows as CSV text, row by row")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # RULES COHORT CHUNKS
    args = parser.parse_args()
    if args.child:
        rules, cohort, chunks = args.child
        screen_chunks(rules, cohort, int(chunks), args.text)
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    from engine.screener import Screener
    from engine.synth import write_cohort

    Screener.load(args.rules)  # warm the on-disk layout cache (see the module docstring)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        cohort = folder / "cohort.parquet"
        write_cohort(cohort, ROWS * (args.chunks + 1), seed=7, missing=0.05, corrupt=0.01)
        if os.environ.get("MISS_SCREEN_CACHE_DIR") == "":
            print("note: MISS_SCREEN_CACHE_DIR is empty (cache off): each run builds the layout")
        one = counted(valgrind, args.rules, cohort, 1, folder, args.text)
        many = counted(valgrind, args.rules, cohort, 1 + args.chunks, folder, args.text)
    rows = ROWS * args.chunks
    print(f"instructions per batch row: {(many - one) // rows:,} ({rows:,} rows counted)")


if __name__ == "__main__":
    main()
