"""Screen one chunk of rows in a worker process: validate, screen, flatten, count.

Each worker process builds its ruleset and durable-rules handles once (docs/durable-rules-notes.md
§3 and §7), or finds them built: the fork server workers fork from builds them while the parent
scans its inputs (engine/batch/preload.py). Chunks carry only rows. Nothing here writes files: a
ChunkResult goes back to the parent, which writes outputs in input order.

A pool worker (`serve`) reads chunks from a pipe of its own and writes each result to another
pipe of its own: no lock is shared with any other process, so a worker killed at any moment, even
half-way through a message, can block no one (engine/batch/pool.py notices and redoes its work).
"""

from __future__ import annotations

import gc
import json
import math
import operator
import os
import re
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.batch.startup import die_with_parent, forbid_core_dumps
from engine.batch.transport import frame, read_message, write_frame
from engine.cohort import COMPACT_KEYS, UNKNOWN_VALUE, FlatColumns, flat_columns
from engine.derive import Facts
from engine.dictionary import INPUT_FIELDS, SETTING_FIELDS
from engine.errors import CaseInputError, UserError
from engine.io.cases import validate_counted
from engine.io.columnar import Columns, Validated, validate_columns
from engine.io.deid import case_id_identifier_kinds, identifier_kinds
from engine.io.normalise import normalise_value
from engine.io.pseudonymise import pseudonymise_chunk, pseudonymise_row
from engine.io.tables import Chunk, Row, RowProblem
from engine.mapping import ColumnMapping
from engine.models import Result, RuleOutcome, RuleStatus, Scalar, SiteProfile, Verdict
from engine.policy import policy_for
from engine.rules.ruleset import Ruleset
from engine.screen import Decision, notable_outcomes
from engine.screener import COHORT_ENGINE, SUBGROUP_FIELDS, Screener, flat_outcomes, flat_row

CASE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# test hook, "CASE_ID[@DIR]": a worker that meets this case_id is killed (with DIR: only the
# first time, DIR keeping the mark)
FAULT_ENV = "MISS_SCREEN_FAULT_CASE_ID"
# test hook, "INDEX[,INDEX...]@DIR": the first worker to send the result of one of those chunks
# dies half-way through the message (DIR keeps a mark per chunk, so its redo goes through)
FAULT_SEND_ENV = "MISS_SCREEN_FAULT_SEND"
# test hook, "CASE_ID": a worker that meets this case_id never finishes it (a row that loops)
FAULT_STALL_ENV = "MISS_SCREEN_FAULT_STALL_CASE_ID"
STATUSES = list(RuleStatus)
FLAT_COLUMNS = (
    "case_id",
    "verdict",
    "fired_red_flag",
    "fired_major",
    "fired_caution",
    "fired_info",
    "conditional",
    "not_evaluable",
    "missing_fields",
    "open_cautions",
)
FLAT_SCHEMA = pa.schema([(name, pa.string()) for name in FLAT_COLUMNS])
SETTINGS = frozenset(SETTING_FIELDS)
# enum members as plain names: the hot loops below compare every outcome of every case
FIRED, CONDITIONAL, NOT_EVALUABLE = (
    RuleStatus.fired,
    RuleStatus.conditional,
    RuleStatus.not_evaluable,
)
INSUFFICIENT_DATA = Verdict.insufficient_data
CASE_FIELDS = [f for f in INPUT_FIELDS if f != "case_id"]
UNKNOWN = UNKNOWN_VALUE  # a subgroup field not given
GC_THRESHOLD = 10_000  # allocations between young-generation collections (Python's default: 700)
_RULE_STATUS = operator.attrgetter("rule_id", "status")


class OutputFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


class Detail(StrEnum):
    """How much of each result a JSONL batch output holds (README, "Batch screening")."""

    ids = "ids"  # rule ids, missing fields, questions; rule texts once in OUT.rules.json
    full = "full"  # the whole Result (the output contract), texts repeated on every line


@dataclass(frozen=True)
class WorkerConfig:
    rules_dir: str
    ruleset_sha256: str  # the rules the parent loaded and stamped: a worker screens with these
    site: SiteProfile
    output_format: OutputFormat
    ignored_columns: frozenset[str]
    in_process: bool = False
    detail: Detail = Detail.full
    mapping: ColumnMapping | None = None
    pseudonym_key: bytes | None = None  # --pseudonymise-ids: case ids hashed before any check
    engine: str = COHORT_ENGINE  # --engine: every worker and Dask partition screens with it


@dataclass(eq=False)
class ChunkIds:
    """A chunk's valid case_ids, for finding repeats (run.DuplicateFinder): each id's hash,
    and its line, "row\tcase_id\n", in the same order, the lines end to end in UTF-8. A case_id
    holds no tab or line end (CASE_ID); which input the rows are of, the chunk's result says."""

    hashes: np.ndarray  # int64, FNV-1a of each id (id_hashes)
    lines: bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkIds):
            return NotImplemented
        return self.lines == other.lines and np.array_equal(self.hashes, other.hashes)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and mutable


@dataclass
class ChunkResult:
    """What one chunk produced: output records, error records and counts to add up."""

    index: int
    source: str = ""
    input: int = 0  # the place of the chunk's input among the run's inputs (Chunk.input)
    # output records: Parquet, record batches; CSV, flat rows; JSONL, its lines as one text
    records: list[Any] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    screened: int = 0
    rejected: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    rule_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    blocks: Counter[str] = field(default_factory=Counter)
    rejected_by_field: Counter[str] = field(default_factory=Counter)
    # values the normaliser changed, per field, with the first example (never a case id)
    normalised: Counter[str] = field(default_factory=Counter)
    normalised_examples: dict[str, str] = field(default_factory=dict)
    insufficient_only_site: int = 0  # insufficient_data only for want of site settings
    decided_with_cautions_open: int = 0  # a verdict given while cautions are not yet excluded
    # (field, value or "(unknown)", verdict) for the subgroup fields (summary.SUBGROUP_FIELDS)
    subgroups: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # the valid case_ids, hashed and formatted here, in parallel, rather than by the parent
    # that reads and writes for all (see run.DuplicateFinder)
    ids: list[ChunkIds] = field(default_factory=list)

    def merge(self, other: ChunkResult) -> None:
        self.records += other.records
        self.errors += other.errors
        self.ids += other.ids
        self.rows += other.rows
        self.screened += other.screened
        self.rejected += other.rejected
        self.insufficient_only_site += other.insufficient_only_site
        self.decided_with_cautions_open += other.decided_with_cautions_open
        for name in (
            "verdicts",
            "rule_status",
            "missing",
            "blocks",
            "rejected_by_field",
            "normalised",
            "subgroups",
        ):
            getattr(self, name).update(getattr(other, name))
        for name, example in other.normalised_examples.items():
            self.normalised_examples.setdefault(name, example)


class _State:
    config: WorkerConfig
    loaded: Screener | None = None  # built by build_rules (in the fork server: before forking)
    screener: Screener  # loaded, with the run's site profile (init_worker)

    @property
    def ruleset(self) -> Ruleset | None:
        return self.loaded.ruleset if self.loaded is not None else None


_STATE = _State()


class RulesChanged(UserError):
    """The rules directory changed on disk during a batch: results would mix two rule sets."""


def build_rules(rules_dir: str, engine: str = COHORT_ENGINE) -> None:
    """Build the Screener (ruleset and the engine's evaluator) for this process and its forks."""
    _STATE.loaded = Screener.load(rules_dir, engine)


def init_worker(config: WorkerConfig) -> None:
    """Have the ruleset and durable-rules handles once per process; tune its collector.

    A worker forked from a fork server that built the same rules (same content hash) for the
    same engine uses them; any other builds its own.
    """
    _STATE.config = config
    loaded = _STATE.loaded
    if (
        loaded is None
        or loaded.ruleset.sha256 != config.ruleset_sha256
        or loaded.engine != config.engine
    ):
        build_rules(config.rules_dir, config.engine)
    assert _STATE.loaded is not None  # noqa: S101  # built just above
    # the parent read and checked the profile (read_site); a read-only view is not re-checked
    _STATE.screener = _STATE.loaded.with_site(MappingProxyType(config.site))
    # a chunk allocates thousands of short-lived dicts and lists, freed by reference counting;
    # at the default threshold (700) the cyclic collector ran every few rows and took about
    # 10 % of the batch time (benchmarks/results.md). Cycles are still collected, less often.
    gc.set_threshold(GC_THRESHOLD)


class _NoPandas:
    """A finder that makes `import pandas` fail (arrow_without_pandas)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not looked for here", name=name)


def arrow_without_pandas() -> None:
    """Have pyarrow look for pandas now, while `import pandas` fails: a process that only
    reads, screens and writes files must not import it (0.2 s of CPU and 32 MB a process,
    benchmarks/results.md).

    pyarrow looks for pandas the first time it converts a Python value (pa.array, pa.scalar, a
    compute call with a constant), to recognise pandas' objects and missing values, and its
    C++ half looks only once per process: after this, pd.NA is no missing value to pyarrow in
    this process. So this is for batch processes of the local executor alone: the CLI's batch
    process, and the pool's workers (separate processes, also when a library call starts
    them), never a library caller's own process; where pandas is imported it does nothing."""
    api: Any = getattr(getattr(pa, "lib", None), "_pandas_api", None)  # private: may change
    if "pandas" in sys.modules or not hasattr(type(api), "have_pandas"):  # not the property
        return  # another pyarrow: it may import pandas, and the batch is the same
    blocked = _NoPandas()
    sys.meta_path.insert(0, blocked)
    try:
        api.have_pandas  # noqa: B018  # the Cython half looks now
        pa.array([0.0], from_pandas=True)  # and the C++ half (its pandas sentinels)
    finally:
        sys.meta_path.remove(blocked)


def use_screener(config: WorkerConfig, screener: Screener) -> None:
    """Screen this process's chunks with a Screener built in memory, from rules no directory
    holds (`rules sweep`'s copies with one constant moved); `config` carries their sha256."""
    _STATE.config, _STATE.loaded, _STATE.screener = config, screener, screener


_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def id_hashes(case_ids: pa.Array | list[str]) -> np.ndarray:
    """A stable signed 64-bit hash of each case_id (FNV-1a over its bytes), for finding
    duplicates without keeping ids; one numpy pass per byte position over the ids' UTF-8 bytes
    as Arrow holds them, not a call per id (ids are at most 64 characters, CASE_ID)."""
    texts = _texts(case_ids)
    if not len(texts):
        return np.zeros(0, dtype=np.int64)
    _, offset_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int32)[texts.offset :][: len(texts) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashed = np.full(len(texts), _FNV_OFFSET, dtype=np.uint64)
    for position in range(int(lengths.max())):
        within = position < lengths
        octets = data[np.where(within, starts + position, 0)]
        hashed = np.where(within, (hashed ^ octets) * _FNV_PRIME, hashed)
    return hashed.view(np.int64)


def _texts(case_ids: pa.Array | list[str]) -> pa.Array:
    """Case ids as an Arrow text array (32-bit offsets)."""
    if isinstance(case_ids, pa.Array):
        return case_ids.cast(pa.string())
    return pa.array(case_ids, pa.string())


def chunk_ids(numbers: np.ndarray, case_ids: pa.Array | list[str]) -> ChunkIds:
    """A chunk's valid case_ids as run.DuplicateFinder keeps them, built column by column:
    `numbers` are their rows, ascending."""
    texts = _texts(case_ids)
    if not len(texts):
        return ChunkIds(np.zeros(0, dtype=np.int64), b"")
    if texts.null_count:  # a missing id is no valid one: it would have no line, only a hash
        raise ValueError("a case id given for duplicate finding is missing")
    columns = [pa.array(numbers, pa.int64()).cast(pa.string()), texts]
    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*columns, "\t"), "", "\n")
    # the lines end to end are the bytes of the array's data between its first and last offset
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    data: bytes = lines.buffers()[2].to_pybytes()
    return ChunkIds(id_hashes(texts), data[start:end])


def serve(tasks: Connection, results: Connection, config: WorkerConfig) -> None:
    """A pool worker: screen each chunk the parent sends, in order, until it closes the pipe.

    Sends ("result", ChunkResult) per chunk, or ("error", exception) for a chunk (or a start)
    that failed; the parent stops the run on an error.
    """
    die_with_parent()  # the fork server; it dies with the batch process
    forbid_core_dumps()  # inherited from the server already; a worker holds case data
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent
    faults = _send_faults()  # decides, and stops the workers
    arrow_without_pandas()
    try:
        init_worker(config)
    except Exception as exc:
        _send(results, ("error", _portable(exc)))
        return
    while True:
        try:
            chunk: Chunk = read_message(tasks.fileno())
        except (EOFError, OSError):
            return  # the parent finished, or died
        try:
            message: tuple[str, Any] = ("result", screen_chunk(chunk))
        except Exception as exc:
            message = ("error", _portable(exc))
        parts = frame(message)
        if chunk.index in faults and _mark_fault(faults[chunk.index]):
            _die_mid_send(results, parts)
        if not _send(results, parts):
            return


def _send(results: Connection, message: tuple[str, Any] | list[memoryview]) -> bool:
    """Send a message (or its frame, transport.frame); False if the parent is gone."""
    try:
        write_frame(results.fileno(), message if isinstance(message, list) else frame(message))
    except OSError:
        return False
    return True


def _portable(exc: Exception) -> Exception:
    """The exception to send to the parent: itself with the worker's traceback as a note, or,
    if it cannot be pickled, a RuntimeError telling it."""
    if not isinstance(exc, UserError):
        exc.add_note("in a batch worker:\n" + "".join(traceback.format_exception(exc)))
    try:
        ForkingPickler.dumps(exc)
    except Exception:
        return RuntimeError("".join(traceback.format_exception(exc)))
    return exc


def _send_faults() -> dict[int, str]:
    """The test hook FAULT_SEND_ENV: chunk index -> its mark file."""
    spec = os.environ.get(FAULT_SEND_ENV)
    if not spec:
        return {}
    indexes, _, folder = spec.partition("@")
    return {int(i): os.path.join(folder, f"sent-{int(i)}") for i in indexes.split(",")}


def _mark_fault(mark: str) -> bool:
    """True the first time any process asks for this mark."""
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _fault_kill(fault: str) -> None:
    """The FAULT_ENV hook: die as `kill -9` would (once only if the hook names a mark folder)."""
    _, once, folder = fault.partition("@")
    if not once or _mark_fault(os.path.join(folder, "killed")):
        os.kill(os.getpid(), signal.SIGKILL)


def _fault_stall() -> None:
    """The FAULT_STALL_ENV hook: never return, as a row that loops or a stuck C call would."""
    while True:
        time.sleep(0.1)


def _die_mid_send(results: Connection, parts: list[memoryview]) -> None:
    """The fault hook: write the header and half of a message, let the parent start reading
    it, and die as `kill -9` would."""
    data = b"".join(bytes(part) for part in parts)
    partial = data[: len(data) // 2]
    fd = results.fileno()
    while partial:
        partial = partial[os.write(fd, partial) :]
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)


def screen_chunk(chunk: Chunk) -> ChunkResult:
    """Validate and screen every row of a chunk; a bad row becomes error records, never a stop.

    Rows are validated (a record batch by column first, see engine.io.columnar) and prepared
    one by one, then the evaluator screens the chunk's valid cases together (durable-rules
    takes them in batches), then records are built in row order.
    """
    config, screener = _STATE.config, _STATE.screener
    ruleset = screener.ruleset
    if ruleset.sha256 != config.ruleset_sha256:  # built from files edited since the parent read
        raise RulesChanged(
            f"the rules in {config.rules_dir} changed while the batch ran (sha256 "
            f"{config.ruleset_sha256[:12]} when it started, {ruleset.sha256[:12]} now); "
            "no output was kept: run it again"
        )
    if config.pseudonym_key is not None and config.mapping is None:  # else after mapping
        chunk = pseudonymise_chunk(config.pseudonym_key, chunk)
    fault = None if config.in_process else os.environ.get(FAULT_ENV)
    stall = None if config.in_process else os.environ.get(FAULT_STALL_ENV)
    jsonl = config.output_format is OutputFormat.jsonl
    full = jsonl and config.detail is Detail.full  # the full result contract
    vectorised = screener.engine == "vectorised" and not full  # a full result shows values
    rows, fast, changed = _checked_rows(chunk, config.ignored_columns, config.mapping, vectorised)
    decided = len(fast.flat.case_ids) if fast is not None else 0
    result = ChunkResult(chunk.index, chunk.source, chunk.input, rows=len(rows) + decided)
    if fast is not None:  # the fault hooks for the rows the vectorised engine decided
        if fault is not None and fast.has_id(fault.partition("@")[0]):
            _fault_kill(fault)
        if stall is not None and fast.has_id(stall):
            _fault_stall()
    example_rows: dict[str, int] = {}  # the row of each field's first example, row by row
    valid: list[tuple[str, dict[str, Scalar]]] = []
    prepared: list[tuple[Facts, dict[str, Scalar]]] = []
    screened: list[int] = []  # the numbers of the rows screened one by one, in order
    id_rows: list[tuple[int, str]] = []  # (number, case_id) of the rows with a valid id
    for number, row, checked in rows:
        if isinstance(row, RowProblem):
            reject(result, chunk.source, number, None, [(None, None, row.reason)])
            continue
        if config.mapping is not None:
            try:
                row = config.mapping.apply(row, chunk.source, number)
            except CaseInputError as exc:
                problems = [(p.field, _plain(p.value), p.message) for p in exc.problems]
                # an id to be pseudonymised is never listed as it was read
                listed = None if config.pseudonym_key is not None else exc.case_id
                reject(result, chunk.source, number, listed, problems)
                continue
            if config.pseudonym_key is not None:
                row = pseudonymise_row(config.pseudonym_key, row)
        raw = (
            {k: v for k, v in row.items() if k not in config.ignored_columns}
            if config.ignored_columns
            else row
        )
        if checked is not None:  # its case_id matched the pattern in the batch check
            case_id: str | None = checked[0]
        else:
            case_id = row_case_id(raw)
        if case_id:
            id_rows.append((number, case_id))
            if fault is not None and case_id == fault.partition("@")[0]:
                _fault_kill(fault)
            if case_id == stall:
                _fault_stall()
        try:
            if checked is not None:
                valid_id, values = checked
            else:
                valid_id, values, changes = validate_counted(raw, chunk.source, row=number)
                for change in changes:
                    result.normalised[change.field] += 1
                    if change.field not in result.normalised_examples and change.example:
                        result.normalised_examples[change.field] = change.example
                        example_rows[change.field] = number
            prepared.append(screener.prepare(valid_id, values, source=chunk.source))
        except CaseInputError as exc:
            problems = [(p.field, _plain(p.value), p.message) for p in exc.problems]
            reject(result, chunk.source, number, case_id, problems)
            continue
        valid.append((valid_id, values))
        screened.append(number)
    for name, (count, first, example) in changed.items():  # the plainly valid rows'
        result.normalised[name] += count
        if example and first < example_rows.get(name, first + 1):
            result.normalised_examples[name] = example
    decisions = screener.decide_many(prepared)
    present: Counter[str] = Counter()
    for (valid_id, values), decision in zip(valid, decisions, strict=True):
        full_result = screener.result_of(valid_id, decision) if full else None
        record(result, valid_id, decision, full_result, values, screener, present)
        if jsonl and not full:
            result.records[-1] = compact_record(result.records[-1], decision, screener)
    if fast is not None:
        _add_decided(result, fast, screened, present, config.output_format, chunk)
    for name in CASE_FIELDS:  # counted as supplied, reported as missing
        if present[name] < result.screened:
            result.missing[name] += result.screened - present[name]
    count_baselines(result, ruleset)
    # one string to send back, not a thousand
    result.ids = [_chunk_ids(fast, id_rows)]
    if config.output_format is OutputFormat.parquet and fast is None:  # built here, in
        result.records = [flat_batch(result.records)]  # parallel, not by the parent
    elif jsonl and fast is None and result.records:  # one text, as the decided rows' lines
        result.records = ["\n".join(result.records)]
    return result


@dataclass
class _Fast:
    """The rows of a chunk the vectorised engine decided, with their outputs and counts."""

    rows: np.ndarray  # their positions in the chunk, ascending
    numbers: np.ndarray  # their row numbers
    flat: FlatColumns
    present: Counter[str]  # fields supplied, over the decided rows

    def has_id(self, case_id: str) -> bool:
        """Whether one of the rows has this case_id (the fault hooks)."""
        return bool(pc.any(pc.equal(self.flat.case_ids, case_id)).as_py())


def _add_decided(
    result: ChunkResult,
    fast: _Fast,
    screened: list[int],
    present: Counter[str],
    output_format: OutputFormat,
    chunk: Chunk,
) -> None:
    """Merge the decided rows' outputs, id lines and counts into a chunk's result, in row
    order with the rows screened one by one (`screened`: their numbers)."""
    flat = fast.flat
    result.screened += len(flat.case_ids)
    result.verdicts.update(flat.verdicts)
    result.rule_status.update(flat.rule_status)
    result.blocks.update(flat.blocks)
    result.subgroups.update(flat.subgroups)
    result.insufficient_only_site += flat.insufficient_only_site
    result.decided_with_cautions_open += flat.decided_with_cautions_open
    present.update(fast.present)
    # records: the decided rows' first, then the others', taken in row order (none: as they are)
    order = (
        pa.array(np.argsort(np.concatenate([fast.numbers, screened]), kind="stable"))
        if screened
        else None
    )
    slow = result.records
    if output_format is OutputFormat.parquet:
        decided = pa.RecordBatch.from_arrays([flat.case_ids, *flat.columns], schema=FLAT_SCHEMA)
        if order is not None:
            merged = pa.Table.from_batches([decided, flat_batch(slow)]).combine_chunks()
            result.records = merged.take(order).to_batches() or [decided]
            return
        result.records = [decided]
    elif flat.compact is not None:  # JSON lines, sent back as one text (the writer's lines)
        lines = flat.compact
        if order is not None:  # taken from both, not from a copy of both end to end
            every = pa.chunked_array([lines, pa.array(slow, pa.string())])
            lines = every.take(order).combine_chunks()
        result.records = [_lines_text(lines)] if len(lines) else []
    else:
        texts = [column.to_pylist() for column in flat.columns]
        mine = list(zip(flat.case_ids.to_pylist(), *texts, strict=True))
        every = mine + slow
        result.records = every if order is None else [every[n] for n in order.to_pylist()]


def _lines_text(lines: pa.Array) -> str:
    """Text lines as one text, a line break between them."""
    offsets = pa.array([0, len(lines)], pa.int32())
    text: str = pc.binary_join(pa.ListArray.from_arrays(offsets, lines), "\n")[0].as_py()
    return text


def _chunk_ids(fast: _Fast | None, id_rows: list[tuple[int, str]]) -> ChunkIds:
    """The valid case_ids of a chunk, in row order: the decided rows' and those of the rows
    read one by one (`id_rows`, in order)."""
    numbers = np.fromiter((n for n, _ in id_rows), dtype=np.int64, count=len(id_rows))
    case_ids = pa.array([case_id for _, case_id in id_rows], pa.string())
    if fast is not None and len(fast.numbers):
        if len(case_ids):
            numbers = np.concatenate([fast.numbers.astype(np.int64), numbers])
            order = np.argsort(numbers, kind="stable")
            every = pa.concat_arrays([fast.flat.case_ids, case_ids])
            numbers, case_ids = numbers[order], every.take(pa.array(order))
        else:
            numbers, case_ids = fast.numbers, fast.flat.case_ids
    return chunk_ids(numbers, case_ids)


def _checked_rows(
    chunk: Chunk,
    ignored: frozenset[str],
    mapping: ColumnMapping | None = None,
    vectorised: bool = False,
) -> tuple[list[tuple[int, Row, Validated | None]], _Fast | None, _Changed]:
    """Per row: its number, its raw values where validate_case must read them (else empty),
    and its (case_id, values) where the record batch's columns showed it plainly valid; on the
    vectorised engine, the decision of each plainly valid row whose facts hold together (by
    position in the chunk); and what the normaliser changed in the plainly valid rows.

    A CSV chunk read by column carries text columns and the rows the reader refused. With a
    mapping, rows are mapped (screen_chunk) and validated one by one: the record batch's
    columns are the export's, not the fields."""
    if mapping is not None:
        return [(number, row, None) for number, row in chunk.materialized()], None, {}
    batch = chunk.batch
    if batch is None:
        return [(number, row, None) for number, row in chunk.rows], None, {}
    numbers = chunk.batch_numbers()
    columns = validate_columns(batch, ignored, normalise=True)
    plain = columns.plain.to_numpy(zero_copy_only=False)
    fast = _decide(columns, plain, numbers) if vectorised and columns.values else None
    changed = {
        name: (count, int(numbers[first]), example)
        for name, (count, first, example) in columns.changed(np.flatnonzero(plain)).items()
    }
    rest = np.ones(len(plain), dtype=bool)  # the rows the vectorised engine left
    if fast is not None:
        rest[fast.rows] = False
    left = plain & rest
    found = iter(columns.row_values(np.flatnonzero(left).tolist()))
    at = np.flatnonzero(rest)
    checked: list[tuple[int, Validated | None]] = [
        (n, next(found) if ok else None)
        for n, ok in zip(at.tolist(), left[at].tolist(), strict=True)
    ]
    redo = [n for n, hit in checked if hit is None]
    raw = dict(zip(redo, batch.take(redo).to_pylist(), strict=True)) if redo else {}
    rows: list[tuple[int, Row, Validated | None]] = [
        (int(numbers[n]), raw.get(n, {}), hit) for n, hit in checked
    ]
    if chunk.rows:  # the rows the reader refused, in row order with the others
        refused: list[tuple[int, Row, Validated | None]] = [(n, r, None) for n, r in chunk.rows]
        rows = sorted(rows + refused, key=operator.itemgetter(0))
    return rows, fast, changed


_Changed = dict[str, tuple[int, int, str | None]]  # field: (count, first row number, example)


def _decide(columns: Columns, plain: np.ndarray, numbers: np.ndarray) -> _Fast:
    """The vectorised engine's outputs for the plainly valid rows it decides."""
    screener = _STATE.screener
    config = _STATE.config
    decided = screener.cohort_plan.decide(
        columns.values,
        plain,
        screener.cohort_prepare,
        lambda rows: [values for _, values in columns.row_values(rows)],
    )
    picked = pa.array(decided.rows, pa.int64())
    case_ids = columns.values["case_id"].take(picked).cast(pa.string())  # plain: text ids
    compact = config.output_format is OutputFormat.jsonl
    flat = flat_columns(decided, case_ids, screener.ruleset, compact=compact)
    return _Fast(decided.rows, numbers[decided.rows], flat, _supplied(columns, decided.rows))


def _supplied(columns: Columns, rows: np.ndarray) -> Counter[str]:
    """How many of the rows (positions, ascending) supply each field: a column with no null
    supplies it in every row; else its validity bits are counted under the rows' bits."""
    present: Counter[str] = Counter()
    chosen: np.ndarray | None = None
    for name, column in columns.values.items():
        if name == "case_id" or column.null_count == len(column):
            continue
        if column.null_count == 0:
            given = len(rows)
        else:
            if chosen is None:
                chosen = np.zeros(len(column), dtype=bool)
                chosen[rows] = True
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            given = int(np.count_nonzero(valid & chosen))
        if given:
            present[name] = given
    return present


def flat_batch(rows: list[tuple[str, ...]]) -> pa.RecordBatch:
    """Flattened rows as an Arrow record batch (columns: FLAT_COLUMNS, all text)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in FLAT_COLUMNS]
    return pa.RecordBatch.from_arrays(
        [pa.array(column, pa.string()) for column in columns], schema=FLAT_SCHEMA
    )


def row_case_id(row: Mapping[str, Any]) -> str | None:
    """A row's case_id as outputs list it (listed_case_id of the id normalised), the row
    already mapped and its id pseudonymised where the batch asks."""
    return listed_case_id(normalise_value("case_id", row.get("case_id")))


def listed_case_id(given: object) -> str | None:
    """The case_id as outputs may list it: a valid id not shaped like an identifier, else None."""
    if not isinstance(given, str) or not CASE_ID.fullmatch(given):
        return None
    return None if case_id_identifier_kinds(given) else given


def reject(
    result: ChunkResult,
    source: str,
    row: int,
    case_id: str | None,
    problems: list[tuple[str | None, Any, str]],
) -> None:
    """Count a rejected row and keep one error record per problem.

    A value that looks like a direct identifier (rows past the guard's sample) is withheld,
    and so is a case_id that is not a valid, anonymised-looking id.
    """
    case_id = listed_case_id(case_id)
    result.rejected += 1
    for field_name, given, message in problems:
        value, reason = given, message
        kinds = identifier_kinds(given) if given is not None else set()
        if kinds:
            value = None
            text = str(given)
            for shown in (repr(given), text, text[:57]):  # cases.py quotes up to 57 characters
                message = message.replace(shown, "<withheld>")
            reason = f"{message} (value withheld: it looks like {', '.join(sorted(kinds))})"
        result.errors.append(
            {
                "source": source,
                "row": row,
                "case_id": case_id,
                "field": field_name,
                "value": value,
                "reason": reason,
            }
        )
        result.rejected_by_field[field_name or "(row)"] += 1


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a rejected value (NaN and infinity are not JSON numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def record(
    result: ChunkResult,
    case_id: str,
    decision: Decision,
    full_result: Result | None,
    values: dict[str, Scalar],
    screener: Screener,
    present: Counter[str],
) -> None:
    """Add one screened case's output record and counts (`present`: fields it supplied).

    Rule counts come from the case's notable outcomes only; count_baselines adds the rest.
    """
    verdict = decision.policy.verdict
    named = verdict._value_  # `.value` is a Python-level call
    result.screened += 1
    result.verdicts[named] += 1
    result.rule_status.update(map(_RULE_STATUS, decision.notable))  # StrEnum: equal to value
    present.update(values.keys())
    known = decision.facts.values  # inferred values included (a region from the level)
    subgroups = result.subgroups
    for name in SUBGROUP_FIELDS:
        given = known.get(name)
        subgroups[(name, UNKNOWN if given is None else str(given), named)] += 1
    row = flat_row(case_id, decision, screener.ruleset)
    if verdict is INSUFFICIENT_DATA:  # the fields whose answer can change the verdict
        blocking = {
            name
            for outcome in policy_for(screener.ruleset).changing(decision.outlook, decision.notable)
            for name in outcome.missing
        }
        result.blocks.update(blocking)
        if blocking and blocking <= SETTINGS:
            result.insufficient_only_site += 1
    elif row[-1]:  # the open_cautions column
        result.decided_with_cautions_open += 1
    result.records.append(row if full_result is None else full_result.model_dump_json())


def compact_record(row: tuple[str, ...], decision: Decision, screener: Screener) -> str:
    """A case's `--detail ids` JSON line from its flat row: ids and field names only, lists as
    JSON arrays; the rules' texts are in the OUT.rules.json sidecar, once."""
    case_id, verdict, *severities, conditional, not_evaluable, missing, cautions = row
    assessment = screener.policy.assess(decision.outlook, decision.notable)
    fired = [i for ids in severities if ids for i in ids.split(";")]
    values = (
        case_id,
        verdict,
        fired,
        conditional.split(";") if conditional else [],
        not_evaluable.split(";") if not_evaluable else [],
        missing.split(";") if missing else [],
        list(assessment.possible),
        list(assessment.next_questions),
        list(assessment.deciding_questions),
        cautions.split(";") if cautions else [],
    )
    return json.dumps(dict(zip(COMPACT_KEYS, values, strict=True)), separators=(",", ":"))


def rules_sidecar(ruleset: Ruleset) -> str:
    """OUT.rules.json of a `--detail ids` run: the ruleset stamp and every rule's texts, once."""
    from engine import __version__

    rules = {
        rule.id: {
            "name": rule.meta.name,
            "category": rule.meta.category.value,
            "severity": rule.meta.severity.value,
            "message": rule.meta.message,
            "rationale": " ".join(rule.meta.rationale.split()),
            "evidence": rule.meta.evidence.value,
            "provisional": rule.meta.provisional,
            "sources": [s.model_dump(mode="json") for s in rule.meta.sources],
        }
        for rule in ruleset.rules
    }
    sidecar = {"ruleset": ruleset.stamp.model_dump(mode="json"), "tool_version": __version__}
    return json.dumps({**sidecar, "rules": rules}, indent=2) + "\n"


def count_baselines(result: ChunkResult, ruleset: Ruleset) -> None:
    """Count, for every rule, the screened cases whose outcome was its baseline.

    record() counts notable outcomes only; every other case took the baseline object.
    """
    notable: Counter[str] = Counter()
    for (rule_id, _), count in result.rule_status.items():
        notable[rule_id] += count
    for baseline in ruleset.baseline_outcomes:
        rest = result.screened - notable[baseline.rule_id]
        if rest:
            result.rule_status[_RULE_STATUS(baseline)] += rest


def flatten(
    case_id: str, verdict: Verdict, outcomes: list[RuleOutcome], ruleset: Ruleset
) -> tuple[str, ...]:
    """The CSV/Parquet row of a case (columns: FLAT_COLUMNS), straight from its outcomes."""
    return flat_outcomes(case_id, verdict, notable_outcomes(outcomes, ruleset), ruleset)
