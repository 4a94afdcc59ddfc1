"""Every engine held to the others through the real batch path (issue 29's differential).

Each engine of engine.screener.ENGINES (whatever is registered there, never a list of ours)
runs `miss-screen batch` on the same differential cohort (engine/synth/variants.py: the
synthetic cohort, a missing-values variant and a corrupt variant), written as CSV and as Parquet:

- CSV in, JSONL out with `--detail ids` (and its OUT.rules.json);
- Parquet in, Parquet out (every flat column);
- a SUBSET_ROWS-row differential cohort as CSV, JSONL out with `--detail full` (the whole result
  per line).

For each run every output file is compared byte for byte with the first engine's: the results,
the error file, the rule texts, and the summary JSON with only its clock fields (and the engine
name, once the summary records it) left out. A difference is shown as its first rows (field and
both values), never a whole file. `make bench` runs it on 1,000,000 rows:

    python benchmarks/differential.py --rows 1000000

tests/test_engines_differential.py runs the same on 50,000 rows in CI.

The engine is chosen with `batch --engine`; each run checks afterwards that the in-process
worker (`--workers 1`) screened with the engine it was meant to.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import filecmp
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.screener import ENGINES
from engine.synth.variants import write_variants

SEED = 2029
SUBSET_ROWS = 5_000
SHOWN = 5  # differing rows shown per file
# summary fields that differ between any two runs: the clock, the run's id, the engine's name
# (wherever the summary comes to record it)
VOLATILE = (
    ("stamp", "started"),
    ("stamp", "duration_s"),
    ("stamp", "run_id"),
    ("stamp", "engine"),
    ("engine",),
)


@dataclass(frozen=True)
class BatchRun:
    """One batch invocation run on every engine: its input, output name and options."""

    name: str
    source: str  # key of the inputs written by write_inputs
    out: str
    options: tuple[str, ...]

    def outputs(self) -> tuple[str, ...]:
        """The files this run writes beside its summary, by name."""
        names = [self.out, f"{self.out}.errors.jsonl"]
        if self.out.endswith(".jsonl") and "full" not in self.options:
            names.append(f"{self.out}.rules.json")
        return (*names, "summary.json")


RUNS = (
    BatchRun("csv-to-jsonl-ids", "csv", "results.jsonl", ("--detail", "ids")),
    BatchRun("parquet-to-parquet", "parquet", "results.parquet", ()),
    BatchRun("subset-csv-to-jsonl-full", "subset", "results.jsonl", ("--detail", "full")),
)


def write_inputs(folder: Path, rows: int, seed: int = SEED) -> dict[str, Path]:
    """The differential cohort as CSV and Parquet, and one of SUBSET_ROWS rows as CSV (all three
    variants in each: the first rows of the big one are the plain cohort only)."""
    paths = {
        "csv": folder / "cohort.csv",
        "parquet": folder / "cohort.parquet",
        "subset": folder / "subset.csv",
    }
    write_variants(paths["csv"], rows, seed)
    write_variants(paths["parquet"], rows, seed)
    write_variants(paths["subset"], min(rows, SUBSET_ROWS), seed)
    return paths


# --- running one engine ------------------------------------------------------------------------


def run_engine(
    engine: str, run: BatchRun, inputs: dict[str, Path], folder: Path, rules: Path
) -> float:
    """Run `batch` for one engine into folder/ENGINE/RUN; return its wall time in seconds."""
    from typer.testing import CliRunner

    from engine.batch import worker
    from engine.cli import app

    out_dir = folder / engine / run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "batch",
        str(inputs[run.source]),
        "--out",
        str(out_dir / run.out),
        "--summary",
        str(out_dir / "summary.json"),
        "--workers",
        "1",
        "--progress",
        "none",
        "--rules",
        str(rules),
        *run.options,
    ]
    started = time.perf_counter()
    result = CliRunner().invoke(app, [*args, "--engine", engine])
    took = time.perf_counter() - started
    if result.exit_code != 0:
        raise RuntimeError(
            f"batch on engine {engine} ({run.name}) exited {result.exit_code}: "
            f"{result.stderr[-2000:]}"
        )
    used = {worker._STATE.screener.engine}  # the in-process worker's (--workers 1)
    stamp = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))["stamp"]
    used.add(stamp.get("engine", engine))  # once the summary records it
    if used != {engine}:
        raise RuntimeError(f"batch meant for engine {engine} screened with {sorted(used)}")
    return took


# --- comparing two engines' outputs ------------------------------------------------------------


def compare_runs(first: Path, other: Path, run: BatchRun, names: tuple[str, str]) -> list[str]:
    """Every difference between two engines' outputs of one run: one line per file that
    differs, then its first SHOWN differing rows (empty when every file is identical)."""
    found: list[str] = []
    for name in run.outputs():
        a, b = first / name, other / name
        if name == "summary.json":
            found += _summary_differences(a, b, names)
        elif not (a.exists() and b.exists()):
            if a.exists() != b.exists():
                found.append(f"{name}: written by {names[0] if a.exists() else names[1]} only")
        elif not filecmp.cmp(a, b, shallow=False):
            found.append(f"{name}: the files differ")
            found += [f"  {line}" for line in _row_differences(a, b, names)]
    return found


def _row_differences(a: Path, b: Path, names: tuple[str, str]) -> list[str]:
    """The first SHOWN rows that differ, each as its differing fields with both values."""
    reader = _ROW_READERS.get(a.suffix, _json_document)
    shown: list[str] = []
    sentinel: dict[str, Any] = {"(no row)": True}
    rows = itertools.zip_longest(reader(a), reader(b), fillvalue=sentinel)
    for number, (left, right) in enumerate(rows):
        if left == right:
            continue
        keys = list(dict.fromkeys([*left, *right]))
        cells = [
            f"{key}: {names[0]} {short(left.get(key))} vs {names[1]} {short(right.get(key))}"
            for key in keys
            if left.get(key) != right.get(key)
        ]
        case_id = left.get("case_id", right.get("case_id"))
        shown.append(f"output row {number + 1} (case_id {case_id}): " + "; ".join(cells))
        if len(shown) == SHOWN:
            break
    if not shown:
        shown.append("every row is equal; the bytes differ (encoding or file metadata)")
    return shown


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
        yield from batch.to_pylist()


def _json_document(path: Path) -> Iterator[dict[str, Any]]:
    """A JSON file (OUT.rules.json) as one row of its top-level keys."""
    yield json.loads(path.read_text(encoding="utf-8"))


_ROW_READERS: dict[str, Callable[[Path], Iterator[dict[str, Any]]]] = {
    ".jsonl": _jsonl_rows,
    ".csv": _csv_rows,
    ".parquet": _parquet_rows,
}


def _summary_differences(a: Path, b: Path, names: tuple[str, str]) -> list[str]:
    """The summaries' differing fields, the volatile ones (VOLATILE) left out."""
    left, right = (_comparable_summary(p) for p in (a, b))
    found = [
        f"  {path}: {names[0]} {short(x)} vs {names[1]} {short(y)}"
        for path, x, y in leaf_differences(left, right, "")
    ]
    return ["summary.json: the summaries differ", *found[:SHOWN]] if found else []


def _comparable_summary(path: Path) -> Any:
    summary = json.loads(path.read_text(encoding="utf-8"))
    for *sections, key in VOLATILE:
        place = summary
        for section in sections:
            place = place.get(section, {})
        place.pop(key, None)
    return summary


def leaf_differences(x: Any, y: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, x value, y value) of every place two JSON values differ, depth first."""
    if isinstance(x, dict) and isinstance(y, dict):
        for key in dict.fromkeys([*x, *y]):
            yield from leaf_differences(x.get(key), y.get(key), f"{path}.{key}".lstrip("."))
    elif isinstance(x, list) and isinstance(y, list):
        if len(x) == len(y):
            for index, (i, j) in enumerate(zip(x, y, strict=True)):
                yield from leaf_differences(i, j, f"{path}[{index}]")
        else:  # items added or left out: shown by their first field (a rule id)
            yield path, _named(x), _named(y)
    elif x != y:
        yield path, x, y


def _named(items: list[Any]) -> list[Any]:
    return [next(iter(i.values()), None) if isinstance(i, dict) else i for i in items]


def short(value: object, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the whole differential --------------------------------------------------------------------


def differential(
    folder: Path, rows: int, rules: Path, say: Callable[[str], None] = print
) -> dict[tuple[str, str], list[str]]:
    """Write the cohort, run every run on every engine, compare each engine with the first.

    Returns the differences by (run, engine); every list empty when the engines agree.
    """
    started = time.perf_counter()
    inputs = write_inputs(folder, rows)
    took = time.perf_counter() - started
    say(f"differential cohort: {rows} rows as CSV and Parquet ({took:.1f} s)")
    differences: dict[tuple[str, str], list[str]] = {}
    for run in RUNS:
        for engine in ENGINES:
            seconds = run_engine(engine, run, inputs, folder, rules)
            say(f"{run.name:<26} {engine:<12} {seconds:7.1f} s")
        for engine in ENGINES[1:]:
            found = compare_runs(
                folder / ENGINES[0] / run.name,
                folder / engine / run.name,
                run,
                (ENGINES[0], engine),
            )
            differences[(run.name, engine)] = found
            say(f"{run.name:<26} {engine} vs {ENGINES[0]}: {_count(found)}")
            for line in found:
                say(f"    {line}")
    return differences


def _count(found: list[str]) -> str:
    files = sum(1 for line in found if not line.startswith(" "))
    return "0 differences" if not found else f"DIFFERENT ({files} files)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rules", type=Path, default=ROOT / "rules")
    parser.add_argument("--keep", type=Path, help="write here and keep the files (else a temp dir)")
    args = parser.parse_args()
    print(f"engines: {', '.join(ENGINES)}")
    with contextlib.ExitStack() as stack:
        folder = args.keep
        if folder is None:
            import tempfile

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="differential-")))
        folder.mkdir(parents=True, exist_ok=True)
        found = differential(folder, args.rows, args.rules)
    different = sum(1 for lines in found.values() if lines)
    print(f"differential on {args.rows} rows: {different} of {len(found)} comparisons differ")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
