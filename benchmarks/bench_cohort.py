"""The cohort benchmark (issue 29): `make bench-cohort`, every engine on the same cohort, one run.

For each engine engine.screener.ENGINES lists (never a list of its own), `miss-screen batch` end
to end in a fresh process: Parquet in and out, `--detail ids`, the error file, 1 worker, pinned
to one processor with the numeric libraries' thread pools at one thread; rows/s and the ratio
to durable-rules measured in the same run. Then, for the cohort default (COHORT_ENGINE), 2
workers on two processors against that 1-worker run; the peak RSS of each run's whole process
tree (the batch, its fork server and workers, sampled every 0.25 s as benchmarks/bench.py does, and
never below the kernel's peak of its largest process, which samples can miss);
`Screener.screen_frame` on a smaller frame in this process, per engine; and an 11-point `rules
sweep` of RAD-005's BMI threshold (35 to 45) on the whole cohort with the cohort default.

The reference evaluator is the oracle, not a production path: at a million rows it would take
minutes, so it screens the first --reference-rows rows (100,000) and its line says so. With
--runs above 1 the engines take turns, round after round, and medians count: a burst of load
on a shared machine slows every contender alike. The cohort is built once by engine.synth and
kept under --cache (a temp folder by default), named by its size, seed and a hash of the
generator's code and mix, so a changed generator builds a new one.

`--rows 50000` is a quick proof that it works; targets are checked at a million rows only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench import machine, run_measured
from engine.screener import COHORT_ENGINE, ENGINES, Screener
from engine.synth import write_cohort

RESULTS = ROOT / "benchmarks" / "results.md"
BEGIN, END = "<!-- bench-cohort:begin -->", "<!-- bench-cohort:end -->"
SEED, MISSING, CORRUPT = 29, 0.05, 0.01
FULL_SIZE = 1_000_000  # the targets hold at this size
SWEEP = ("RAD-005", "35", "45", "1")  # rule, from, to, step: 11 values of the BMI threshold
# one thread for every numeric library a worker may use: "1 worker" means one core
ONE_THREAD = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "POLARS_MAX_THREADS",
        "RAYON_NUM_THREADS",
    )
}
rows_out: list[tuple[str, str, str, str]] = []


def report(measure: str, value: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("yes" if met else "NO")
    rows_out.append((measure, value, target, verdict))
    print(f"{measure:<62} {value:>24}  {target:<20} {verdict}", flush=True)


def generator_key() -> str:
    """A hash of the generator's code and clinical mix: a cached cohort is the one it makes."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "engine" / "synth").glob("*.*")):
        if path.suffix in (".py", ".yaml"):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def cohort(rows: int, cache: Path) -> Path:
    """The synthetic Parquet cohort of `rows` rows, built once and kept under `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"cohort-{rows}-seed{SEED}-{generator_key()}.parquet"
    if path.exists():
        report(f"synthetic cohort ({rows:,} rows, Parquet)", "cached")
        return path
    start = time.perf_counter()
    partial = path.with_suffix(f".{os.getpid()}.partial.parquet")
    write_cohort(partial, rows, SEED, missing=MISSING, corrupt=CORRUPT)
    partial.replace(path)  # a run stopped half-way leaves no cohort that looks complete
    took = f"{time.perf_counter() - start:.1f} s"
    report(f"synthetic cohort written ({rows:,} rows, Parquet)", took)
    return path


def processors(count: int) -> set[int] | None:
    """`count` processors this process may use, or None (no pinning) if it has fewer."""
    allowed = sorted(os.sched_getaffinity(0))
    return set(allowed[:count]) if len(allowed) >= count else None


class Run:
    """One measured process: wall seconds and peak RSS of its tree (the larger of the tree's
    summed samples and the kernel's peak of its largest process: exact for one process)."""

    def __init__(self, args: list[str], cpus: set[int] | None) -> None:
        self.args, self.cpus = args, cpus
        self.walls: list[float] = []
        self.peak = 0

    def __call__(self) -> None:
        wall, samples, high_water = run_measured(
            self.args, self.cpus, {**os.environ, **ONE_THREAD}
        )
        self.walls.append(wall)
        self.peak = max([self.peak, high_water, *(rss for _, rss in samples)])

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def take_turns(runs: list[Callable[[], None]], rounds: int) -> None:
    for _ in range(rounds):
        for run in runs:
            run()


def batch_args(source: Path, out: Path, engine: str, workers: int) -> list[str]:
    return [
        "batch", str(source), "--out", str(out), "--errors", str(out) + ".errors.jsonl",
        "--summary", str(out) + ".summary.json", "--detail", "ids", "--workers", str(workers),
        "--progress", "none", "--engine", engine,
    ]  # fmt: skip


def outputs(out: Path) -> tuple[bytes, bytes]:
    return out.read_bytes(), Path(str(out) + ".errors.jsonl").read_bytes()


def bench_batch(args: argparse.Namespace, work: Path) -> None:
    full = cohort(args.rows, args.cache)
    sizes = {e: args.rows for e in ENGINES}
    if "reference" in sizes:  # the oracle, slow by design: a smaller cohort, same generator
        sizes["reference"] = min(args.rows, args.reference_rows)
    sources = {s: full if s == args.rows else cohort(s, args.cache) for s in sizes.values()}
    one_cpu, two_cpus = processors(1), processors(2)
    runs = {
        e: Run(batch_args(sources[sizes[e]], work / f"{e}-1.parquet", e, 1), one_cpu)
        for e in ENGINES
    }
    two = Run(batch_args(full, work / f"{COHORT_ENGINE}-2.parquet", COHORT_ENGINE, 2), two_cpus)
    take_turns([*runs.values(), two], args.runs)
    rates = {e: sizes[e] / run.wall for e, run in runs.items()}
    at_full = args.rows >= FULL_SIZE
    for engine, run in runs.items():
        note = "" if sizes[engine] == args.rows else f", first {sizes[engine]:,} rows"
        report(
            f"batch --engine {engine}, 1 worker, 1 core{note}",
            f"{rates[engine]:,.0f} rows/s",
            f"{run.wall:.1f} s (median of {len(run.walls)})",
        )
    for engine in ENGINES:
        if engine != "durable":
            ratio = rates[engine] / rates["durable"]
            default = engine == COHORT_ENGINE
            report(
                f"ratio {engine} / durable (rows/s, same run)",
                f"{ratio:.2f}x",
                ">= 10x (the default)" if default else "",
                ratio >= 10 if default and at_full else None,
            )
    default = runs[COHORT_ENGINE]
    report(
        f"rows/s per core, default engine ({COHORT_ENGINE})",
        f"{rates[COHORT_ENGINE]:,.0f}",
        "target 100,000",
        rates[COHORT_ENGINE] >= 100_000 if at_full else None,
    )
    same = {
        e: outputs(work / f"{e}-1.parquet") == outputs(work / "durable-1.parquet")
        for e in ENGINES
        if sizes[e] == args.rows
    }
    report(
        f"outputs and error files identical across engines ({', '.join(same)})",
        "yes" if all(same.values()) else "NO: " + ", ".join(e for e, ok in same.items() if not ok),
        "identical",
        all(same.values()),
    )
    if two_cpus is None:
        report("2 workers vs 1", "skipped: one processor")
    else:
        speedup = default.wall / two.wall
        report(
            f"2 workers vs 1 ({COHORT_ENGINE}), two cores",
            f"{speedup:.2f}x",
            ">= 1.7x",
            speedup >= 1.7 if at_full else None,
        )
        identical = outputs(work / f"{COHORT_ENGINE}-2.parquet") == outputs(
            work / f"{COHORT_ENGINE}-1.parquet"
        )
        shown = "yes" if identical else "NO"
        report("outputs identical for 1 and 2 workers", shown, "identical", identical)
    for engine, run in runs.items():
        report(
            f"peak RSS of the process tree, {engine}, 1 worker",
            f"{run.peak / 2**20:.0f} MB",
            "< 300 MB",
            run.peak < 300 * 2**20 if at_full else None,
        )
    # two workers: a parent, a fork server and two workers, each holding its own rules and chunks
    report(f"  the same, {COHORT_ENGINE}, 2 workers", f"{two.peak / 2**20:.0f} MB")
    summary = json.loads((work / f"{COHORT_ENGINE}-1.parquet.summary.json").read_text())
    rec = summary["reconciliation"]
    report(
        "rows read = screened + rejected (default engine)",
        f"{rec['rows_read']:,} = {rec['rows_screened']:,} + {rec['rows_rejected']:,}",
        "balanced",
        bool(rec["balanced"]),
    )
    bench_sweep(args, full, work, one_cpu)


def bench_sweep(args: argparse.Namespace, source: Path, work: Path, cpus: set[int] | None) -> None:
    rule, low, high, step = SWEEP
    out = work / "sweep.json"
    run = Run(
        ["rules", "sweep", rule, "--from", low, "--to", high, "--step", step, "--cohort",
         str(source), "--format", "json", "--out", str(out), "--engine", COHORT_ENGINE],
        cpus,
    )  # fmt: skip
    run()
    points = len(json.loads(out.read_text())["points"])
    report(
        f"rules sweep {rule} bmi {low}-{high}, {points} values, {args.rows:,} rows, 1 core",
        f"{run.wall:.1f} s",
        "< 60 s at 1M rows",
        run.wall < 60 if args.rows >= FULL_SIZE else None,
    )
    report("  peak RSS of the sweep", f"{run.peak / 2**20:.0f} MB")


def bench_frame(args: argparse.Namespace) -> None:
    """Screener.screen_frame on a pandas frame, each engine, in this process on one core."""
    import pyarrow.parquet as pq

    source = cohort(args.frame_rows, args.cache)
    frame = pq.read_table(source).to_pandas()
    screeners = {e: Screener.load(engine=e) for e in ENGINES}
    pinned = processors(1)
    before = os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, pinned)
    try:
        timings: dict[str, list[float]] = {e: [] for e in ENGINES}
        for _ in range(args.runs):
            for engine, screener in screeners.items():
                start = time.perf_counter()
                result = screener.screen_frame(frame)
                timings[engine].append(time.perf_counter() - start)
                assert len(result) == len(frame)  # noqa: S101  # one output row per input row
    finally:
        os.sched_setaffinity(0, before)
    rates = {e: len(frame) / statistics.median(t) for e, t in timings.items()}
    for engine in ENGINES:
        rate = f"{rates[engine]:,.0f} rows/s"
        report(f"screen_frame {len(frame):,} rows, engine={engine!r}", rate)
    for engine in ENGINES:
        if engine != "durable":
            ratio = rates[engine] / rates["durable"]
            report(f"  screen_frame ratio {engine} / durable", f"{ratio:.2f}x", ">= 10x (default)")


def write_results(header: str) -> None:
    table = ["| measure | value | target | met |", "|---|---|---|---|"]
    table += [f"| {m} | {v} | {t} | {ok} |" for m, v, t, ok in rows_out]
    block = "\n".join([BEGIN, header, "", *table, END])
    text = RESULTS.read_text()
    if BEGIN not in text:
        raise SystemExit(f"{RESULTS} has no {BEGIN} ... {END} block to rewrite")
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    RESULTS.write_text(before + block + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=FULL_SIZE, help="cohort rows (default 1M)")
    parser.add_argument("--reference-rows", type=int, default=100_000,
                        help="rows the reference evaluator screens (it is the slow oracle)")
    parser.add_argument("--frame-rows", type=int, default=100_000, help="rows of screen_frame")
    parser.add_argument("--runs", type=int, default=1, help="rounds of the batch runs (median)")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "miss-screen-bench-cohort",
                        help="where the synthetic cohorts are kept between runs")
    parser.add_argument("--write", action="store_true",
                        help="rewrite the bench-cohort block of benchmarks/results.md")
    args = parser.parse_args()  # fmt: skip
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    header = (
        f"Run {started} UTC on {machine()}; {args.rows:,} rows, engines {', '.join(ENGINES)}, "
        f"cohort default {COHORT_ENGINE}."
    )
    print(header)
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="miss-bench-cohort-") as folder:
        bench_batch(args, Path(folder))
    bench_frame(args)
    report("whole benchmark", f"{(time.perf_counter() - clock) / 60:.1f} min")
    if args.write:
        write_results(header)


if __name__ == "__main__":
    main()
