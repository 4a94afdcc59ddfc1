"""miss-screen benchmarks: ratios against baselines measured in the same run (issue: benchmarks).

Run with `make bench`. Prints a table of measurements, targets and whether each is met, and
rewrites the generated part of benchmarks/results.md (between the markers) with the machine
description. Timings on a shared 2-core machine are noisy: ratios within one run are what count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.service_latency import bench_service
from benchmarks.textbook import TextbookRules
from engine.derive import build_facts
from engine.evaluate.durable import DurableEvaluator
from engine.evaluate.layout import to_durable_json
from engine.evaluate.reference import ReferenceEvaluator
from engine.io.cases import read_case, validate_case
from engine.models import RuleOutcome
from engine.rules.loader import load_ruleset
from engine.screener import Screener
from engine.synth import generate_rows, write_cohort

RESULTS = ROOT / "benchmarks" / "results.md"
SCALING_PAIRS = 3
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
rows_out: list[tuple[str, str, str, str]] = []  # measure, value, target, met


def report(measure: str, value: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("yes" if met else "NO")
    rows_out.append((measure, value, target, verdict))
    print(f"{measure:<58} {value:>22}  {target:<18} {verdict}", flush=True)


def timed_runs(works: list[Callable[[], int]], runs: int) -> list[tuple[float, float]]:
    """Best and median rate (items/s) of each work(), which returns its item count.

    The works take turns, round after round, so a burst of load on a shared machine slows
    every contender alike instead of the one that happened to be running.
    """
    rates: list[list[float]] = [[] for _ in works]
    for _ in range(runs):
        for work, found in zip(works, rates, strict=True):
            start = time.perf_counter()
            count = work()
            found.append(count / (time.perf_counter() - start))
    return [(max(found), statistics.median(found)) for found in rates]


# --- 1. engine throughput ------------------------------------------------------------------


class HostEvaluator:
    """durable-rules driven the textbook way: Host, one callback per rule, assert then retract.

    `rules` are durable-rules rules by name, under the fields' own names or (`short_names`)
    production's short ones; `masks` turns the names that matched into production's status
    bits, so outcomes are built as production builds them (`outcomes_from`). Host's timer
    threads race with the caller (notes §4.3); `_run` is disabled so the baseline is correct,
    which only makes it faster than the stock Host.
    """

    def __init__(
        self,
        durable: DurableEvaluator,
        rules: dict[str, Any],
        masks: Callable[[set[str]], dict[int, int]],
        short_names: bool = False,
    ) -> None:
        from durable.engine import Host

        class QuietHost(Host):  # type: ignore[misc]
            def _run(self) -> None:
                return None

        self.durable = durable
        self.masks = masks
        self.short_names = short_names
        self.fired: set[str] = set()
        definitions: dict[str, Any] = {}
        for name, rule in rules.items():
            textbook = {k: v for k, v in rule.items() if k != "cap"}  # one callback per match
            definitions[name] = {
                **json.loads(to_durable_json(textbook)),
                "run": self._action(name),
            }
        self.host = QuietHost()
        self.host.set_rulesets({"bench": definitions})
        self.next_id = 0

    def _action(self, name: str) -> Callable[[Any], None]:
        def run(_: Any) -> None:
            self.fired.add(name)

        return run

    def evaluate(self, facts: Any) -> list[RuleOutcome]:
        self.fired = set()
        self.next_id += 1
        if self.short_names:
            values = json.loads("{" + self.durable.body(facts).removeprefix(",") + "}")
        else:
            values = self.durable.encode(facts)
        fact = {"kind": "case", "sid": "0", "id": self.next_id, **values}
        self.host.assert_fact("bench", fact)
        self.host.retract_fact("bench", {"sid": "0", "id": self.next_id})
        return self.durable.outcomes_from(self.masks(self.fired), facts)


def textbook_host(durable: DurableEvaluator) -> HostEvaluator:
    """The baseline: Host running one rule per rule part (textbook.py)."""
    textbook = TextbookRules(durable)
    return HostEvaluator(durable, textbook.rules, textbook.masks)


def production_host(durable: DurableEvaluator) -> HostEvaluator:
    """For comparison: Host running production's own conjunctions (one per status)."""

    def masks(matched: set[str]) -> dict[int, int]:
        found: dict[int, int] = {}
        for name in matched:
            for index, bit in durable.layout.targets[name]:
                found[index] = found.get(index, 0) | bit
        return found

    rules = {k: v for ruleset in durable.layout.rulesets for k, v in ruleset.items()}
    return HostEvaluator(durable, rules, masks, short_names=True)


def bench_engine(cases: int, runs: int) -> None:
    ruleset = load_ruleset(ROOT / "rules")
    facts = []
    for row in generate_rows(cases, seed=42, missing=0.05, corrupt=0.0):
        _, values = validate_case(row, "synth")
        facts.append(build_facts(values, ruleset))
    durable, reference = DurableEvaluator(ruleset), ReferenceEvaluator(ruleset)
    host, host_same = textbook_host(durable), production_host(durable)
    plan = durable.layout
    report(
        "rule base",
        f"{len(ruleset.rules)} rules as {len(plan.targets)} durable-rules conjunctions, "
        f"{len(plan.rulesets)} ruleset, stack bound {max(plan.bounds)}/64",
    )
    expected = [reference.evaluate(f) for f in facts]  # checked identical before timing
    if durable.evaluate_many(facts) != expected or [durable.evaluate(f) for f in facts] != expected:
        raise SystemExit("durable-rules and the reference evaluator disagree: no timing")
    host_sample = facts[: max(1, cases // 10)]
    host_ok = all(
        host.evaluate(f) == host_same.evaluate(f) == reference.evaluate(f) for f in host_sample
    )
    report(
        "Host API results identical to reference", "yes" if host_ok else "NO", "identical", host_ok
    )

    def over(evaluator: Any, items: list[Any]) -> Callable[[], int]:
        def work() -> int:
            for f in items:
                evaluator.evaluate(f)
            return len(items)

        return work

    def batched() -> int:  # how the batch command drives it: a chunk of cases per call
        for start in range(0, len(facts), 1000):
            durable.evaluate_many(facts[start : start + 1000])
        return len(facts)

    batched()  # warm: caches of compiled conditions and explanations fill on first use
    contenders = [batched, over(durable, facts), over(reference, facts), over(host, host_sample)]
    contenders.append(over(host_same, host_sample))
    rates = timed_runs(contenders, runs)
    (d_best, d_med), (one_best, one_med), (r_best, r_med), (h_best, h_med) = rates[:4]
    s_best, s_med = rates[4]
    report(
        "engine: production durable-rules path (cases/s)",
        f"{d_best:,.0f} / {d_med:,.0f}",
        "best / median",
    )
    report(
        "engine: same, one case per call (the `screen` path)",
        f"{one_best:,.0f} / {one_med:,.0f}",
        "best / median",
    )
    report(
        "engine: reference evaluator, compiled closures (cases/s)",
        f"{r_best:,.0f} / {r_med:,.0f}",
        "best / median",
    )
    report(
        "engine: durable-rules Host API, textbook (cases/s)",
        f"{h_best:,.0f} / {h_med:,.0f}",
        "best / median",
    )
    report(
        "engine: Host API on production's conjunctions (cases/s)",
        f"{s_best:,.0f} / {s_med:,.0f}",
        "best / median",
    )
    report(
        "ratio production / reference (median)",
        f"{d_med / r_med:.2f}x",
        ">= 1.0x",
        d_med / r_med >= 1.0,
    )
    report(
        "ratio production / Host API (median)",
        f"{d_med / h_med:.1f}x",
        ">= 10x",
        d_med / h_med >= 10,
    )
    report(
        "ratio production / Host on its conjunctions (median)",
        f"{d_med / s_med:.1f}x",
        "for comparison",
    )


# --- 2./3. batch end to end ----------------------------------------------------------------


def run_batch(
    source: Path, out: Path, workers: int
) -> tuple[float, list[tuple[float, int]], int]:
    """Wall time of one batch run, RSS samples (time, bytes) of its whole process tree, and the
    peak of its largest process (run_measured)."""
    return run_measured(
        ["batch", str(source), "--out", str(out), "--workers", str(workers), "--progress", "none"]
    )


def run_measured(
    args: list[str], cpus: set[int] | None = None, env: dict[str, str] | None = None
) -> tuple[float, list[tuple[float, int]], int]:
    """Wall time of one `miss-screen ARGS` process, RSS samples (time, bytes) of its whole
    process tree every 0.25 s, and the kernel's peak (bytes) of its largest single process,
    exact for a tree of one process where samples can miss a short peak; `cpus`: the
    processors it and its children may run on."""
    command = [sys.executable, str(ROOT / "cli.py"), *args]
    start = time.perf_counter()
    process = subprocess.Popen(  # our own interpreter and cli.py, arguments from this file
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        try:
            parent = psutil.Process(process.pid)
            while process.poll() is None:
                tree = [parent, *parent.children(recursive=True)]
                rss = 0
                for p in tree:
                    with contextlib.suppress(psutil.Error):  # a process may just have ended
                        rss += p.memory_info().rss
                samples.append((time.perf_counter() - start, rss))
                time.sleep(0.25)
        except psutil.Error:
            return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    assert process.stderr is not None  # noqa: S101  # PIPE above
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    # wait4, not communicate: the kernel's high-water mark of the process and of every
    # descendant it waited for (the largest one), which samples 0.25 s apart can miss
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    thread.join()
    if process.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {b''.join(errors).decode()[-2000:]}")
    return wall, samples, usage.ru_maxrss * 1024  # Linux: kilobytes


def bench_questions(cases: int, runs: int) -> None:
    """Per-case cost of the verdict with its possible verdicts (engine.policy), and of ranking
    the questions that can change it, against the plain first-matching-entry verdict (µs/case).

    Everything else (facts, outcomes, notable outcomes) is computed once beforehand; each
    contender runs on every case's notable outcomes, as screen.conclude and the batch worker do.
    """
    from engine.policy import policy_for
    from engine.screen import notable_outcomes

    ruleset = load_ruleset(ROOT / "rules")
    durable = DurableEvaluator(ruleset)
    facts = []
    for row in generate_rows(cases, seed=42, missing=0.05, corrupt=0.0):
        _, values = validate_case(row, "synth")
        facts.append(build_facts(values, ruleset))
    outcomes = durable.evaluate_many(facts)
    notables = [notable_outcomes(found, ruleset) for found in outcomes]
    policy = policy_for(ruleset)
    severity_of, triggers = ruleset.severity_of, ruleset.policy_triggers

    def first_entry() -> int:  # the verdict as engine.policy gave it before possible verdicts
        for notable in notables:
            present = {(o.status, severity_of[o.rule_id]) for o in notable}
            next(e for e, t in triggers if t is None or not t.isdisjoint(present))
        return len(notables)

    def outlook() -> int:  # the verdict and the possible verdicts (screen.conclude)
        for found, notable in zip(outcomes, notables, strict=True):
            policy.decide(found, notable)
        return len(notables)

    decided = [policy.decide(f, n) for f, n in zip(outcomes, notables, strict=True)]

    def assess() -> int:  # can_change_verdict, exactness and ranked questions (the Result)
        for seen, notable in zip(decided, notables, strict=True):
            policy.assess(seen, notable)
        return len(notables)

    def blocking() -> int:  # what the batch worker adds per insufficient_data case
        for seen, notable in zip(decided, notables, strict=True):
            if seen.entry.verdict.value == "insufficient_data":
                {n for o in policy.changing(seen, notable) for n in o.missing}
        return len(notables)

    def screening() -> int:  # for scale: what the engine spends per case before the verdict
        for start in range(0, len(facts), 1000):
            for found in durable.evaluate_many(facts[start : start + 1000]):
                notable_outcomes(found, ruleset)
        return len(facts)

    rates = timed_runs([first_entry, outlook, assess, blocking, screening], runs)
    (f_best, _), (o_best, _), (a_best, _), (b_best, _), (s_best, _) = rates
    report(
        "questions: verdict alone, first matching policy entry (µs/case)", f"{1e6 / f_best:.2f}"
    )
    report(
        "questions: verdict with possible verdicts (µs/case)",
        f"{1e6 / o_best:.2f} (+{1e6 / o_best - 1e6 / f_best:.2f})",
        "small against ~90 µs/row of batch",
    )
    report("questions: can_change_verdict, exactness, ranking (µs/case)", f"{1e6 / a_best:.2f}")
    report("questions: batch blocking fields (µs/case)", f"{1e6 / b_best:.2f}")
    added = 1e6 / o_best - 1e6 / f_best + 1e6 / a_best  # what issue 21 adds to a full result
    report(
        "questions: possible verdicts + ranking, share of engine time per case",
        f"{added:.2f} of {1e6 / s_best:.1f} µs ({100 * added / (1e6 / s_best):.0f} %)",
        "ranking: JSON output only",
    )
    report("questions: distinct kinds of case the policy saw", f"{len(policy._outlooks)}")


def flat_memory(label: str, samples: list[tuple[float, int]], high_water: int) -> None:
    """Report whether a batch's RSS stayed flat (its last quarter within 10 % of its first,
    start-up left out) and its peak under 300 MB."""
    body = [s for s in samples if s[0] > 2.0] or samples  # after start-up
    quarter = max(1, len(body) // 4)
    first = max(r for _, r in body[:quarter])
    last = max(r for _, r in body[-quarter:])
    peak = max(high_water, *(r for _, r in samples))
    report(
        f"RSS first quarter -> last quarter (MB), {label} in",
        f"{first / 2**20:.0f} -> {last / 2**20:.0f}",
        "last <= first +10%",
        last <= first * 1.10,
    )
    report(f"RSS peak (MB), {label} in", f"{peak / 2**20:.0f}", "< 300 MB", peak < 300 * 2**20)


def bench_batch(rows: int, scaling_rows: int, folder: Path) -> None:
    source = folder / "cohort.parquet"
    start = time.perf_counter()
    write_cohort(source, rows, seed=7, missing=0.05, corrupt=0.01)
    report(
        f"synthetic cohort written ({rows:,} rows, Parquet)", f"{time.perf_counter() - start:.1f} s"
    )
    wall, samples, high_water = run_batch(source, folder / "out.parquet", 1)
    rate = rows / wall
    report(
        f"batch end to end, {rows:,} rows, Parquet in/out, 1 worker",
        f"{rate:,.0f} cases/s",
        ">= 10,000/s/core",
        rate >= 10_000,
    )
    flat_memory("Parquet", samples, high_water)
    # the same cohort as CSV: text columns, read by another reader (its RSS once crept up with
    # every chunk on glibc's allocator: 333 MB at 1M rows, 390 MB at 3M, still rising)
    text = folder / "cohort.csv"
    write_cohort(text, rows, seed=7, missing=0.05, corrupt=0.01)
    wall, samples, high_water = run_batch(text, folder / "out-csv.parquet", 1)
    report(
        f"batch end to end, {rows:,} rows, CSV in, Parquet out, 1 worker",
        f"{rows / wall:,.0f} cases/s",
    )
    flat_memory("CSV", samples, high_water)

    small = folder / "scaling.parquet"
    write_cohort(small, scaling_rows, seed=8, missing=0.05, corrupt=0.01)
    # two workers need both cores, so any other load on the machine slows them more than one
    # worker: three pairs of runs take turns, and the median pair's ratio counts
    pairs = []
    for _ in range(SCALING_PAIRS):
        one, _, _ = run_batch(small, folder / "s1.parquet", 1)
        two, _, _ = run_batch(small, folder / "s2.parquet", 2)
        pairs.append((one / two, one, two))
    pairs.sort()
    ratio, one, two = pairs[len(pairs) // 2]
    spread = f"{pairs[0][0]:.2f}-{pairs[-1][0]:.2f}x"
    same = (folder / "s1.parquet").read_bytes() == (folder / "s2.parquet").read_bytes()
    report(
        f"scaling, {scaling_rows:,} rows: 1 vs 2 workers (median pair)",
        f"{one:.1f} s vs {two:.1f} s",
    )
    report(
        f"speed-up with 2 workers (median of {SCALING_PAIRS}; {spread})",
        f"{ratio:.2f}x",
        ">= 1.7x",
        ratio >= 1.7,
    )
    report("outputs identical for 1 and 2 workers", "yes" if same else "NO", "identical", same)


# --- 4. interactive latency ----------------------------------------------------------------


def cold_screens(commands: dict[str, list[str]], runs: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds (user + system, the kernel's account of the child) of each
    command run afresh; the commands take turns, run after run, after one uncounted run each.

    As an installed program starts: bytecode cached (PYTHONDONTWRITEBYTECODE, set in some
    shells, would have every run compile the engine's sources, about 0.1 s), and the rules
    cache warm, in a folder of its own: the shared one (~/.cache/miss-screen) keeps the parsed
    YAML of the last rules loaded only, so any other checkout's run in between would make the
    next run here a cold one. Warm, `screen` reads the parsed YAML, the ruleset's stamp, the
    compiled rules' outline and its own few-cases durable-rules layout (about a third of the
    batch layout's rules) from there, and builds durable-rules from that layout.
    """
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="miss-bench-cache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["MISS_SCREEN_CACHE_DIR"] = cache
        for command in commands.values():
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        for _ in range(runs):
            for name, command in commands.items():
                before = os.times()
                start = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
                walls[name].append(time.perf_counter() - start)
                after = os.times()
                cpus[name].append(
                    after.children_user
                    - before.children_user
                    + after.children_system
                    - before.children_system
                )
    return {
        name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in commands
    }


def bench_latency(runs: int) -> None:
    example = ROOT / "cases" / "examples" / "disc-herniation-l4-l5.yaml"
    program = [sys.executable, str(ROOT / "cli.py")]
    command = [*program, "screen", str(example)]
    # the bare interpreter takes its turns with them: the machine's own start-up, so that the
    # ratio to it reads the same on a faster or busier machine
    found = cold_screens(
        {
            "text": command,
            "json": [*command, "--format", "json"],
            "--help": [*program, "--help"],
            "python": [sys.executable, "-c", "pass"],
        },
        runs,
    )
    bare = found.pop("python")[0]
    for name, (wall, cpu) in found.items():
        what = "`miss-screen --help`" if name == "--help" else f"`miss-screen screen` ({name})"
        report(
            f"{what} fresh process, warm caches, median of {runs}",
            f"{wall:.3f} s (cpu {cpu:.3f} s; {wall / bare:.1f}x `python -c pass`)",
            "" if name == "--help" else "< 0.3 s",
            None if name == "--help" else wall < 0.3,
        )
    screener = Screener.load(ROOT / "rules")  # the one entry point, as a notebook uses it
    cases = [read_case(str(p)) for p in sorted((ROOT / "cases" / "examples").glob("*.yaml"))]
    latencies = []
    for _ in range(100):
        for case_id, values in cases:
            start = time.perf_counter()
            screener.screening(case_id, values)
            latencies.append(time.perf_counter() - start)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    report(
        "in-process screen of one case, p50 / p99",
        f"{p50 * 1e3:.2f} / {p99 * 1e3:.2f} ms",
        "p99 < 1 ms",
        p99 < 1e-3,
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )


def write_results(header: str) -> None:
    table = ["| measure | value | target | met |", "|---|---|---|---|"]
    table += [f"| {m} | {v} | {t} | {ok} |" for m, v, t, ok in rows_out]
    block = "\n".join([BEGIN, header, "", *table, END])
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    RESULTS.write_text(before + block + after)


def _fixed_loop() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return (time.perf_counter() - start) * 1000


def steadiness_probe(found: list[float]) -> None:
    """Time a fixed pure-Python loop: how fast this shared machine runs right now (the first
    calls of a fresh process are slower, so three of them warm up first)."""
    if not found:
        for _ in range(3):
            _fixed_loop()
    found.append(_fixed_loop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the batch run")
    parser.add_argument("--scaling-rows", type=int, default=200_000)
    parser.add_argument("--engine-cases", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="do not update results.md")
    parser.add_argument(
        "--only",
        choices=["engine", "latency", "service", "batch", "questions"],
        help="run one part (for profiling; implies --no-write)",
    )
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    header = f"Run {started} UTC on {machine()}."
    print(header)
    clock = time.perf_counter()
    probes: list[float] = []
    steadiness_probe(probes)
    if args.only in (None, "engine"):
        bench_engine(args.engine_cases, args.runs)
        steadiness_probe(probes)
    if args.only in (None, "latency"):
        bench_latency(20)
        steadiness_probe(probes)
    if args.only in (None, "service"):
        bench_service(report)
        steadiness_probe(probes)
    if args.only in (None, "questions"):
        bench_questions(args.engine_cases, args.runs)
        steadiness_probe(probes)
    if args.only in (None, "batch"):
        with tempfile.TemporaryDirectory(prefix="miss-bench-") as folder:
            bench_batch(args.rows, args.scaling_rows, Path(folder))
        steadiness_probe(probes)
    if args.only:
        return
    # the absolute targets (seconds, cases/s) move with the machine's load; the ratios less so
    spread = max(probes) / min(probes)
    report(
        "machine check: a fixed loop before and after each part (ms)",
        " / ".join(f"{ms:.0f}" for ms in probes) + f" (max/min {spread:.2f})",
        "steady if max/min <= 1.25" if spread <= 1.25 else "NOT steady: absolute numbers suspect",
    )
    report(
        "whole benchmark",
        f"{(time.perf_counter() - clock) / 60:.1f} min",
        "< 10 min",
        time.perf_counter() - clock < 600,
    )
    if not args.no_write:
        write_results(header)


if __name__ == "__main__":
    main()
