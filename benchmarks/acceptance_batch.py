"""The batch issue's acceptance run: a 100,000-row synthetic cohort in every input format.

1 % corrupt rows and 5 % missing values. Checks that reconciliation balances exactly, that the
errors file names every corrupt row, and that outputs are identical for --workers 1, --workers 2
and --executor dask (Parquet). tests/test_batch_cohort.py runs the same checks on 2,000 rows in CI;
this takes a few minutes on 2 cores: `python benchmarks/acceptance_batch.py [--rows N]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.synth import corrupt_row_numbers, write_cohort

SEED, MISSING, CORRUPT = 2024, 0.05, 0.01


def batch(source: Path, out: Path, *extra: str) -> dict[str, Any]:
    summary = out.with_name(out.name + ".summary.json")
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "batch",
        str(source),
        "--out",
        str(out),
        "--summary",
        str(summary),
        "--progress",
        "none",
        *extra,
    ]
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    return json.loads(summary.read_text())  # type: ignore[no-any-return]  # JSON object


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    rows = parser.parse_args().rows
    corrupt = corrupt_row_numbers(rows, SEED, CORRUPT)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="miss-accept-") as name:
        folder = Path(name)
        outputs: dict[str, bytes] = {}
        for fmt in ("csv", "jsonl", "parquet"):
            source = folder / f"cohort.{fmt}"
            write_cohort(source, rows, SEED, missing=MISSING, corrupt=CORRUPT)
            modes = {"workers 1": ["--workers", "1"], "workers 2": ["--workers", "2"]}
            if fmt == "parquet":
                modes["dask"] = ["--workers", "2", "--executor", "dask"]
            for mode, extra in modes.items():
                out = folder / f"{fmt}-{mode.replace(' ', '')}.jsonl"
                start = time.perf_counter()
                summary = batch(source, out, *extra)
                took = time.perf_counter() - start
                rec = summary["reconciliation"]
                errors = out.with_name(out.name + ".errors.jsonl").read_text().splitlines()
                named = {json.loads(line)["row"] for line in errors}
                ok = (
                    rec["balanced"]
                    and rec["rows_read"] == rows
                    and rec["rows_rejected"] == len(corrupt)
                    and named == corrupt
                )
                outputs[f"{fmt} {mode}"] = out.read_bytes()
                failures += not ok
                print(
                    f"{fmt:<8} {mode:<10} read {rec['rows_read']} = screened "
                    f"{rec['rows_screened']} + rejected {rec['rows_rejected']}; errors name "
                    f"{len(named)}/{len(corrupt)} corrupt rows; {took:.0f} s; "
                    f"{'ok' if ok else 'FAILED'}",
                    flush=True,
                )
        identical = len(set(outputs.values())) == 1
        failures += not identical
        print(f"outputs identical across formats, worker counts and dask: {identical}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
