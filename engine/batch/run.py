"""Run a batch: check the inputs, screen every row in parallel, write outputs in input order.

Reconciliation is exact: every row read is screened or rejected. A worker that dies (killed,
crashed) takes no rows with it: its chunks are screened again by a fresh worker, halving a chunk
that keeps killing workers until the offending row is isolated and reported rejected
(engine/batch/pool.py). Every output of a run is committed together, or none (writers.py).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import numpy as np

from engine import __version__
from engine.batch.lock import OutputLocks
from engine.batch.pool import STALL_FLOOR_S, WINDOW_PER_WORKER, Notice, WorkerPool
from engine.batch.startup import start_fork_server
from engine.batch.summary import (
    AttritionStep,
    BatchSummary,
    Duplicate,
    FieldMissingness,
    InputStamp,
    MappingStamp,
    NormalisedValues,
    OutputStamp,
    Reconciliation,
    RejectedExample,
    RuleCounts,
    RunStamp,
    subgroup_table,
)
from engine.batch.worker import (
    CASE_FIELDS,
    ChunkIds,
    ChunkResult,
    Detail,
    OutputFormat,
    WorkerConfig,
    init_worker,
    rules_sidecar,
    screen_chunk,
)
from engine.batch.writers import ErrorWriter, OutputSet, ResultWriter, write_text
from engine.errors import LinesError, UserError
from engine.evaluate.deferred import DeferredEvaluator
from engine.io.columns import column_problems
from engine.io.tables import Chunk, InputFormat, TableReader, detect_format, estimated_rows
from engine.mapping import ColumnMapping
from engine.models import DISCLAIMER, RuleStatus, SiteProfile, Verdict
from engine.rules.ruleset import Ruleset
from engine.screener import COHORT_ENGINE, Screener, check_engine

REJECTED_EXAMPLES = 10  # first rejected rows shown in the summary: field, row, reason only


class InputColumnsError(LinesError):
    """Input columns refused before screening: identifiers, derived, unknown or repeated."""


@dataclass
class BatchOptions:
    inputs: list[str]
    out: str
    output_format: OutputFormat
    rules_dir: str
    errors: str | None = None
    workers: int = 1
    site: SiteProfile = field(default_factory=dict)
    input_format: InputFormat | None = None
    allow_columns: frozenset[str] = frozenset()
    ignore_unknown_columns: bool = True  # listed once and skipped; False: --strict-columns
    delimiter: str | None = None  # CSV: sniffed from the header line when None
    encoding: str | None = None  # CSV: UTF-8, else cp1252/latin-1 (said once) when None
    sheet: str | None = None  # .xlsx: the first sheet when None
    executor: str = "local"
    summary: str | None = None
    report: str | None = None
    detail: Detail = Detail.full  # JSONL only; the CLI's default is ids
    mapping: ColumnMapping | None = None  # --map: applied to every raw row before validation
    pseudonym_key: bytes | None = None  # --pseudonymise-ids (engine/io/pseudonymise.py)
    stall_timeout: float | None = None  # the watchdog's floor (pool.STALL_FLOOR_S if None)
    engine: str = COHORT_ENGINE  # --engine: one of engine.screener.ENGINES, for every worker

    @property
    def rules_path(self) -> str | None:
        """OUT.rules.json, the rule texts of a `--detail ids` JSONL output (none on stdout)."""
        return rules_sidecar_path(self.out, self.output_format, self.detail)


Progress = Callable[[int], None]
CHUNK_ROWS_ENV = "MISS_SCREEN_CHUNK_ROWS"  # tests: small chunks, many messages in flight
# rows per CSV chunk on the vectorised engine: 1M rows, 1 worker, took 10.4 s at 10,000 rows
# against 13.0 s at 5,000 (228 against 215 MB; 20,000 rows: 9.0 s, 266 MB), 2 workers 6.8
# against 7.9 s (the parent 231 MB); a wide export holds more per row (benchmarks/results.md)
VECTOR_CHUNK_ROWS = 10_000
# rows per Parquet chunk on the vectorised engine (read as such, not joined): its cost per
# chunk is per column and per rule node, so larger chunks pay, and its peak memory about 3 KB a
# row. With every issue-29 change merged, a 1M-row batch (1 worker, --detail ids) peaked at
# 283 MB and 8.7 s of CPU with 10,000 rows, 314 MB and 8.0 s with 15,000, 308 MB and 7.7 s with
# 20,000 (/usr/bin/time's true peak, one run each); the target is 300 MB (benchmarks/results.md)
PARQUET_CHUNK_ROWS = 10_000
# rows a pool's parent holds in flight, as Parquet chunks on the vectorised engine (it keeps
# pool.WINDOW_PER_WORKER chunks per worker): chunks as large as keeps within it, never smaller
# than one process's. A worker only screens (the parent reads and writes), so it holds twice
# the rows within the memory one process doing everything holds at 10,000, and the per-chunk
# costs (the engine's per rule node, the transport's per message) are paid half as often: on
# 1M rows, 2 workers (20,000-row chunks) took 12 % less time than with 10,000, the largest
# process peaking at 267 MB; 40,000 rows gained 1 % more for 344 MB; at 20,000 rows, 8 workers'
# parent peaked at 371 MB (benchmarks/results.md). CSV keeps VECTOR_CHUNK_ROWS.
POOL_ROWS_IN_FLIGHT = 120_000
RenderReport = Callable[[BatchSummary], str]


def estimate_total_rows(options: BatchOptions) -> tuple[int, bool] | None:
    """The rows of every input together and whether that is exact (io.tables.estimated_rows);
    None when any input's count cannot be told beforehand (standard input)."""
    total, exact = 0, True
    for path in options.inputs:
        try:
            found = estimated_rows(path, detect_format(path, options.input_format))
        except UserError:  # reported when the inputs are opened
            return None
        if found is None:
            return None
        total, exact = total + found[0], exact and found[1]
    return total, exact


def open_inputs(options: BatchOptions) -> tuple[list[TableReader], list[str]]:
    """Open every input and refuse identifiers, derived or unknown columns before screening."""
    readers = [
        TableReader(
            p,
            detect_format(p, options.input_format),
            delimiter=options.delimiter,
            encoding=options.encoding,
            sheet=options.sheet,
        )
        for p in options.inputs
    ]
    problems: list[str] = []
    ignored: set[str] = set()
    for reader in readers:
        columns, sample = reader.columns, reader.sample()
        # pseudonymised ids are checked by the workers, after hashing
        allowed = options.allow_columns | ({"case_id"} if options.pseudonym_key else set())
        if options.mapping is not None:
            if options.pseudonym_key:
                allowed |= set(options.mapping.sources_of("case_id"))
            problems.extend(
                options.mapping.identifier_problems(reader.source, columns, sample, allowed)
            )
            columns, sample = options.mapping.view(columns, sample)
        found, unknown = column_problems(
            reader.source,
            columns,
            sample,
            allowed,
            ignore_unknown=options.ignore_unknown_columns,
        )
        problems.extend(found)
        ignored.update(unknown)
    if problems:
        raise InputColumnsError(problems)
    return readers, sorted(ignored)


class ChunkRunner:
    """Screens chunks in input order, in-process or on a pool that survives dying workers.

    One worker screens in-process, unless a stall timeout is asked for: only a pool can watch
    (and kill) a worker that stops making progress.
    """

    def __init__(
        self,
        config: WorkerConfig,
        workers: int,
        stall_timeout: float | None = None,
        notice: Notice | None = None,
    ) -> None:
        self.config = config
        self.workers = workers
        self.pool = (
            WorkerPool(config, workers, stall_timeout or STALL_FLOOR_S, notice)
            if workers > 1 or stall_timeout is not None
            else None
        )
        if self.pool is None:
            init_worker(WorkerConfig(**{**config.__dict__, "in_process": True}))

    @property
    def restarts(self) -> int:
        return self.pool.restarts if self.pool is not None else 0

    @property
    def stalls(self) -> int:
        return self.pool.stalls if self.pool is not None else 0

    def run(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        if self.pool is not None:
            yield from self.pool.run(chunks)
            return
        for chunk in chunks:
            yield screen_chunk(chunk)
            del chunk  # not held while the next chunk is read (memory: one chunk at a time)


@dataclass
class Totals:
    """Counts added up over every chunk."""

    rows: int = 0
    screened: int = 0
    rejected: int = 0
    verdicts: collections.Counter[str] = field(default_factory=collections.Counter)
    rule_status: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    missing: collections.Counter[str] = field(default_factory=collections.Counter)
    blocks: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected_by_field: collections.Counter[str] = field(default_factory=collections.Counter)
    normalised: collections.Counter[str] = field(default_factory=collections.Counter)
    normalised_examples: dict[str, str] = field(default_factory=dict)
    insufficient_only_site: int = 0
    decided_with_cautions_open: int = 0
    subgroups: collections.Counter[tuple[str, str, str]] = field(
        default_factory=collections.Counter
    )
    rejected_examples: list[RejectedExample] = field(default_factory=list)

    def add(self, result: ChunkResult) -> None:
        self.subgroups.update(result.subgroups)
        for error in result.errors[: max(0, REJECTED_EXAMPLES - len(self.rejected_examples))]:
            self.rejected_examples.append(
                RejectedExample(field=error["field"], row=error["row"], reason=error["reason"])
            )
        self.insufficient_only_site += result.insufficient_only_site
        self.decided_with_cautions_open += result.decided_with_cautions_open
        self.rows += result.rows
        self.screened += result.screened
        self.rejected += result.rejected
        self.verdicts.update(result.verdicts)
        self.rule_status.update(result.rule_status)
        self.missing.update(result.missing)
        self.blocks.update(result.blocks)
        self.rejected_by_field.update(result.rejected_by_field)
        self.normalised.update(result.normalised)
        for name, example in result.normalised_examples.items():
            self.normalised_examples.setdefault(name, example)


class DuplicateFinder:
    """Finds repeated case_ids with flat memory: ids stay on disk, in a temp file of their lines,
    and so does each id's hash (8 bytes an id, in a second file); of each input, only its place
    among the run's inputs and the number of its first line are kept.

    Workers hash the ids and format their lines (worker.ChunkIds), so a chunk's arrive ready to
    append, while the workers screen the next chunks: parsing hashes back out of text lines
    cost the parent, which reads and writes for every worker, about 0.4 s of CPU per million
    rows. Only the lines whose hash repeats are read back.
    """

    def __init__(self) -> None:
        # nameless where the system allows: nothing is left behind, even by a killed run
        self._file = tempfile.TemporaryFile(  # noqa: SIM115  # closed in find() or close()
            prefix="miss-screen-ids-", suffix=".tsv"
        )
        self._hashes = tempfile.TemporaryFile(prefix="miss-screen-id-hashes-")  # noqa: SIM115
        self._inputs: list[int] = []  # the place of each input whose ids follow another's
        self._firsts: list[int] = []  # the number of its first line
        self._count = 0  # lines so far

    def add(self, chunks: list[ChunkIds], place: int) -> None:
        """A chunk's valid case_ids (its halves', if it was split), in row order; `place`: its
        input's place among the run's inputs (Chunk.input)."""
        for ids in chunks:
            if not len(ids.hashes):
                continue
            if ids.lines.count(b"\n") != len(ids.hashes):  # every later line would be misread
                raise ValueError(f"{len(ids.hashes)} case id hashes for other than as many lines")
            if not self._inputs or self._inputs[-1] != place:
                self._inputs.append(place)
                self._firsts.append(self._count)
            self._file.write(ids.lines)
            self._hashes.write(ids.hashes.astype(np.int64, copy=False).tobytes())
            self._count += len(ids.hashes)

    def find(self) -> list[Duplicate]:
        """The repeated case_ids, by id, with their rows in input order and the place of each
        row's input among the run's inputs; closes the finder."""
        return [
            Duplicate(
                case_id=case_id,
                rows=[row for _, row in places],
                inputs=[place for place, _ in places],
            )
            for case_id, places in sorted(self.repeats().items())
        ]

    def repeats(self) -> dict[str, list[tuple[int, int]]]:
        """Each repeated case_id's places (input's place, row), in input order; closes the
        finder."""
        self._file.flush()
        self._hashes.seek(0)
        hashes = np.frombuffer(self._hashes.read(), dtype=np.int64)
        # one sorted copy, not np.unique's counts: at 1M rows the finder was a batch's peak
        ordered = np.sort(hashes)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        del ordered
        wanted = set(np.flatnonzero(np.isin(hashes, repeated)).tolist()) if len(repeated) else set()
        groups: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        if wanted:
            self._file.seek(0)
            for number, line in enumerate(self._file):  # lines end at b"\n" only
                if number in wanted:
                    row, case_id = line.rstrip(b"\n").decode().split("\t", 1)
                    place = self._inputs[bisect.bisect_right(self._firsts, number) - 1]
                    groups[case_id].append((place, int(row)))
        self.close()
        return {case_id: places for case_id, places in groups.items() if len(places) > 1}

    def close(self) -> None:
        self._file.close()
        self._hashes.close()


class BatchRun:
    """One run's inputs, outputs and running totals, whichever executor screens the chunks."""

    def __init__(
        self, options: BatchOptions, ruleset: Ruleset, notice: Notice | None = None
    ) -> None:
        self.options, self.ruleset = options, ruleset
        self.started = datetime.now(UTC)
        self.clock = time.perf_counter()
        self.run_id = uuid.uuid4().hex
        # the output set is this run's before anything is read: a second run refuses now
        self.locks = OutputLocks(self.run_id, self.started.isoformat(timespec="seconds"), notice)
        try:
            self.locks.take([target for _, target in output_targets(options)])
            self._open(options, ruleset)
        except BaseException:
            self.locks.release()
            raise

    def _open(self, options: BatchOptions, ruleset: Ruleset) -> None:
        # an unknown engine, or a rule set the engine refuses, fails here, not in a worker; the
        # vectorised engine's workers build durable-rules only for a row left to it (deferred.py),
        # so it is built here once: whether the rules are refused must not depend on the data
        screener = Screener.from_ruleset(
            ruleset, check_engine(options.engine), site=MappingProxyType(options.site)
        )
        if isinstance(screener.evaluator, DeferredEvaluator):
            screener.evaluator.built  # noqa: B018 - built for its checks, then let go
        self.readers, self.ignored = open_inputs(options)
        # hashed before screening: what was read, even if something rewrites a file later
        self.hashes = {r.source: r.sha256() for r in self.readers if r.path != "-"}
        self.config = WorkerConfig(
            rules_dir=options.rules_dir,
            ruleset_sha256=ruleset.sha256,
            site=options.site,
            output_format=options.output_format,
            ignored_columns=frozenset(self.ignored),
            detail=options.detail,
            mapping=options.mapping,
            pseudonym_key=options.pseudonym_key,
            engine=options.engine,
        )
        # every output is created now, before any screening: a folder that cannot take them
        # fails the run at once
        self.outputs = OutputSet()
        try:
            self.writer = ResultWriter(options.out, options.output_format, self.outputs)
            self.errors = ErrorWriter(options.errors, self.outputs)
            self.summary_file = self.outputs.add(options.summary) if options.summary else None
            self.report_file = self.outputs.add(options.report) if options.report else None
            rules_path = options.rules_path
            self.rules_file = self.outputs.add(rules_path) if rules_path else None
        except BaseException:
            self.outputs.abort()
            raise
        self.totals = Totals()
        self.duplicates = DuplicateFinder()
        self.per_input: collections.Counter[int] = collections.Counter()  # by input's place

    def consume(self, result: ChunkResult) -> None:
        """Write one chunk's records and errors (chunks arrive in input order) and count them."""
        self.writer.write(result.records)
        self.errors.write(result.errors)
        self.duplicates.add(result.ids, result.input)
        self.totals.add(result)
        self.per_input[result.input] += result.rows

    def finish(
        self,
        executor: str,
        restarts: int = 0,
        render_report: RenderReport | None = None,
        stalls: int = 0,
    ) -> BatchSummary:
        """Complete every output (results, errors, rule texts, summary, report), then commit
        them together; the summary records the others' hashes, the report the run id."""
        self.writer.finish()
        self.errors.finish()
        if self.rules_file is not None:
            write_text(self.rules_file, rules_sidecar(self.ruleset))
        summary = self.summary(executor, restarts, stalls)
        summary.outputs = [
            OutputStamp(option=option, path=self._recorded(atomic.target),
                        sha256=atomic.sha256(), bytes=atomic.size())
            for option, atomic in (
                ("--out", self.writer.atomic),
                ("--errors", self.errors.atomic),
                ("--detail ids (OUT.rules.json)", self.rules_file),
            )
            if atomic is not None
        ]  # fmt: skip
        if self.summary_file is not None:
            write_text(self.summary_file, summary.model_dump_json(indent=2) + "\n")
        if self.report_file is not None:
            if render_report is None:
                raise ValueError("a report path needs a report renderer")
            write_text(self.report_file, render_report(summary))
        self.outputs.commit()
        self.locks.release()
        return summary

    def _recorded(self, target: Path) -> str:
        """An output's path as the summary records it: from the summary's folder, so that a
        set verifies wherever it is moved as a whole (engine/batch/verify.py)."""
        if self.options.summary is None:
            return str(target)
        return os.path.relpath(target.absolute(), Path(self.options.summary).absolute().parent)

    def discard(self) -> None:
        """The run did not finish: remove every new output; the previous ones stay."""
        self.writer.discard()
        self.errors.discard()
        self.outputs.abort()
        self.duplicates.close()
        self.locks.release()

    def summary(self, executor: str, restarts: int = 0, stalls: int = 0) -> BatchSummary:
        inputs = [
            InputStamp(
                path=r.source,
                format=r.format.value,
                sha256=r.sha256(),
                rows=self.per_input[position],
            )
            for position, r in enumerate(self.readers)
        ]
        stamp = RunStamp(
            tool_version=__version__,
            ruleset=self.ruleset.stamp,
            inputs=inputs,
            started=self.started.isoformat(timespec="seconds"),
            duration_s=round(time.perf_counter() - self.clock, 3),
            workers=self.options.workers,
            executor=executor,
            worker_restarts=restarts,
            worker_stalls=stalls,
            run_id=self.run_id,
            engine=self.options.engine,
            site=dict(self.options.site),
            mapping=MappingStamp(path=mapping.source, sha256=mapping.sha256)
            if (mapping := self.options.mapping) is not None
            else None,
        )
        duplicates = self.duplicates.find()
        return build_summary(stamp, self.totals, self.ruleset, duplicates, self.ignored)


def run_batch(
    options: BatchOptions,
    ruleset: Ruleset,
    progress: Progress | None = None,
    render_report: RenderReport | None = None,
    notice: Notice | None = None,
) -> BatchSummary:
    """Screen every row of every input; write and commit every output; return the summary.

    `notice`: told in one line of anything the user should know as it happens (a stalled
    worker, a stale lock taken over).
    """
    if options.workers > 1 or options.stall_timeout is not None:
        start_fork_server(options.rules_dir, options.engine)
    run = BatchRun(options, ruleset, notice)
    try:
        runner = ChunkRunner(run.config, options.workers, options.stall_timeout, notice)
        # closed on every path, not when a traceback that holds it is freed (issue 26)
        pool = runner.pool.size if runner.pool is not None else 0
        with contextlib.closing(all_chunks(run.readers, options.engine, pool)) as chunks:
            for result in runner.run(chunks):
                run.consume(result)
                if progress is not None:
                    progress(result.rows)
                del result  # written: not held while the next chunk is screened
        return run.finish("local", runner.restarts, render_report, runner.stalls)
    except BaseException:
        run.discard()
        raise


def all_chunks(
    readers: list[TableReader], engine: str = COHORT_ENGINE, pool: int = 0
) -> Generator[Chunk, None, None]:
    """Every input's chunks, numbered on across inputs; `pool`: how many worker processes
    screen them (0: this process does, pool_chunk_rows)."""
    size = int(os.environ.get(CHUNK_ROWS_ENV) or 0) or None
    index = 0
    for position, reader in enumerate(readers):
        # the vectorised engine reads a Parquet or CSV chunk's columns (other inputs go row by
        # row; a CSV chunk travels as text columns, not a dict per row): its cost is per
        # column, so larger chunks pay
        vectorised = engine == "vectorised"
        columnar = size is None and vectorised
        rows = size
        if columnar and reader.format is InputFormat.csv:
            rows = VECTOR_CHUNK_ROWS
        elif columnar and reader.format is InputFormat.parquet:
            rows = pool_chunk_rows(pool) if pool else PARQUET_CHUNK_ROWS
        for chunk in reader.chunks(index, chunk_rows=rows, columnar=vectorised):
            index = chunk.index + 1
            chunk.input = position
            yield chunk
            del chunk  # not held while the next chunk is read


def pool_chunk_rows(workers: int) -> int:
    """Rows per Parquet chunk a pool of `workers` processes screens (POOL_ROWS_IN_FLIGHT)."""
    return max(PARQUET_CHUNK_ROWS, POOL_ROWS_IN_FLIGHT // (workers * WINDOW_PER_WORKER))


def build_summary(
    stamp: RunStamp,
    totals: Totals,
    ruleset: Ruleset,
    duplicates: list[Duplicate],
    ignored: list[str],
) -> BatchSummary:
    screened = totals.screened
    rules = [
        RuleCounts(
            rule_id=r.id,
            name=r.meta.name,
            category=r.meta.category,
            severity=r.meta.severity,
            **{s.value: totals.rule_status[(r.id, s.value)] for s in RuleStatus},
        )
        for r in ruleset.rules
    ]
    attrition = []
    remaining = screened
    for verdict in Verdict:
        count = totals.verdicts[verdict.value]
        remaining -= count
        attrition.append(AttritionStep(verdict=verdict, count=count, remaining=remaining))
    missingness = [
        FieldMissingness(
            field=name,
            missing=totals.missing[name],
            missing_pct=round(100 * totals.missing[name] / screened, 2) if screened else 0.0,
            blocks_verdict=totals.blocks[name],
        )
        for name in CASE_FIELDS
    ]
    missingness.sort(key=lambda m: (-m.blocks_verdict, -m.missing, m.field))
    return BatchSummary(
        stamp=stamp,
        reconciliation=Reconciliation(
            rows_read=totals.rows,
            rows_screened=screened,
            rows_rejected=totals.rejected,
            balanced=totals.rows == screened + totals.rejected,
        ),
        verdicts={v: totals.verdicts[v.value] for v in Verdict},
        rules=rules,
        attrition=attrition,
        missingness=missingness,
        rejected_by_field=dict(sorted(totals.rejected_by_field.items())),
        normalised_values={
            name: NormalisedValues(count=count, example=totals.normalised_examples.get(name))
            for name, count in sorted(totals.normalised.items())
        },
        duplicates=duplicates,
        ignored_columns=ignored,
        disclaimer=DISCLAIMER,
        insufficient_only_site=totals.insufficient_only_site,
        decided_with_cautions_open=totals.decided_with_cautions_open,
        subgroups=subgroup_table(totals.subgroups, screened),
        rejected_examples=totals.rejected_examples,
    )


def rules_sidecar_path(out: str, fmt: OutputFormat, detail: Detail) -> str | None:
    """Where a `--detail ids` JSONL output's rule texts go: OUT.rules.json (none for stdout)."""
    if out == "-" or fmt is not OutputFormat.jsonl or detail is not Detail.ids:
        return None
    return str(Path(out).with_name(Path(out).name + ".rules.json"))


def output_targets(options: BatchOptions) -> list[tuple[str, str]]:
    """(option, path) of every file a run writes (standard streams are not files)."""
    named = [
        ("--out", options.out),
        ("--errors", options.errors),
        ("--summary", options.summary),
        ("--report", options.report),
        ("--detail ids (OUT.rules.json)", options.rules_path),
    ]
    return [(option, path) for option, path in named if path is not None and path != "-"]


def default_errors_path(out: str) -> str | None:
    """Errors go beside the output (OUT.errors.jsonl), or to stderr when OUT is stdout."""
    return None if out == "-" else str(Path(out).with_name(Path(out).name + ".errors.jsonl"))
