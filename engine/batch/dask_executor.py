"""The same batch screening on Dask: `dask.dataframe` partitions over Parquet, one worker pool.

Each partition is screened by the very function the local runner uses (`screen_chunk`, in a
Dask worker process that builds its own ruleset and durable-rules handles once), and the
partitions' results are written in partition order by the same writers, so the output is
byte-identical to a local run. Optional: `pip install 'miss-screen[dask]'`.

A Dask worker that dies is restarted by its nanny and its partition screened again (Dask's own
recovery): the run says so (`stamp.worker_restarts` counts the new workers). A partition that
keeps killing its workers ends the run with one line naming it, and no output kept; so does a
partition that gives no result within its bound (PartitionBound: a stopped worker, a row that
loops), where Dask would wait for ever.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import pyarrow as pa

from engine.batch.pool import COST_WEIGHT, STALL_FACTOR, STALL_FLOOR_S, Notice
from engine.batch.run import BatchOptions, BatchRun, RenderReport
from engine.batch.startup import forbid_core_dumps
from engine.batch.summary import BatchSummary
from engine.batch.worker import ChunkResult, WorkerConfig, init_worker, screen_chunk
from engine.errors import UsageError, UserError
from engine.io.tables import Chunk, InputFormat
from engine.rules.ruleset import Ruleset

_WORKER_CONFIG: list[WorkerConfig] = []
PRIOR_ROW_COST_S = 0.001


class DaskWorkersDied(UserError):
    """A partition killed every Dask worker that tried it (Dask's allowed failures)."""


class DaskPartitionStalled(UserError):
    """A partition gave no result within its bound (a stopped worker, a row that loops)."""


class PartitionBound:
    """How long a partition may take, as the local pool bounds a chunk (engine/batch/pool.py):
    STALL_FACTOR times the mean observed cost of its rows, never less than the floor. Before
    any result, rows are assumed to cost PRIOR_ROW_COST_S (ten times a typical row): a Dask
    partition can hold a million rows, which no floor covers.

    Dask itself would wait for ever; here a partition past its bound ends the run (no output
    kept), as one that kills every worker does: Dask has no way to halve a partition.
    """

    def __init__(self, floor_s: float) -> None:
        self.floor_s = floor_s
        self.row_cost_s: float | None = None

    def bound_s(self, rows: int) -> float:
        cost = PRIOR_ROW_COST_S if self.row_cost_s is None else self.row_cost_s
        return max(self.floor_s, STALL_FACTOR * cost * rows)

    def observe(self, seconds: float, rows: int) -> None:
        cost = seconds / max(1, rows)
        if self.row_cost_s is None:
            self.row_cost_s = cost
        else:
            self.row_cost_s += COST_WEIGHT * (cost - self.row_cost_s)


def screen_partition(
    frame: Any,
    config: WorkerConfig,
    source: str,
    offsets: list[int],
    place: int,
    partition_info: dict[str, Any] | None = None,
) -> Any:
    """map_partitions body: screen one partition; return its ChunkResult in a one-row frame."""
    import pandas as pd

    if not _WORKER_CONFIG or _WORKER_CONFIG[0] != config:
        forbid_core_dumps()  # a Dask worker holds case data too
        init_worker(config)
        _WORKER_CONFIG[:] = [config]
    number = partition_info["number"] if partition_info else 0
    table = pa.Table.from_pandas(frame, preserve_index=False).combine_chunks()
    first = offsets[number] if number < len(offsets) else 0
    # the partition travels as one record batch, as a local Parquet chunk does, so that the
    # vectorised engine takes its plainly valid rows by column (rows as dicts go one by one)
    batches = table.to_batches()
    if batches:
        chunk = Chunk(number, source, [], batch=batches[0], first=first + 1, input=place)
    else:
        chunk = Chunk(number, source, [], input=place)
    return pd.DataFrame({"result": [screen_chunk(chunk)]})


def run_batch_dask(
    options: BatchOptions,
    ruleset: Ruleset,
    render_report: RenderReport | None = None,
    notice: Notice | None = None,
) -> BatchSummary:
    """Screen Parquet inputs on a local Dask cluster; outputs identical to the local runner."""
    try:
        import dask.dataframe as dd
        import pandas as pd
        from distributed import Client, LocalCluster
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise UsageError(
            "--executor dask needs the extra: pip install 'miss-screen[dask]'"
        ) from None
    run = BatchRun(options, ruleset, notice)
    if any(r.format is not InputFormat.parquet for r in run.readers):
        run.discard()
        raise UsageError("--executor dask reads Parquet inputs only")
    cluster = None
    try:
        cluster = LocalCluster(  # type: ignore[no-untyped-call]  # distributed ships no types
            n_workers=options.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # no dashboard port to collide with another run's
            silence_logs=logging.CRITICAL,  # a worker's death is reported below, in one line
        )
        watchdog = PartitionBound(options.stall_timeout or STALL_FLOOR_S)
        with Client(cluster) as client:  # type: ignore[no-untyped-call]  # untyped library
            seen: set[str] = set()  # every worker address: a restarted worker has a new one
            client.wait_for_workers(options.workers)
            seen.update(client.scheduler_info()["workers"])
            for place, reader in enumerate(run.readers):
                frame = dd.read_parquet(reader.path, dtype_backend="pyarrow")
                lengths = frame.map_partitions(len).compute().tolist()
                offsets = [sum(lengths[:i]) for i in range(len(lengths))]
                meta = pd.DataFrame({"result": pd.Series(dtype=object)})
                screened = frame.map_partitions(
                    screen_partition, run.config, reader.source, offsets, place, meta=meta
                )
                parts = collections.deque(enumerate(screened.to_delayed()))
                # each future with the time it was handed to Dask: the cost a partition is seen
                # to take counts from there (never too low, as counting from when it is awaited
                # would be while the partitions before it run)
                window: collections.deque[tuple[int, Any, float]] = collections.deque()
                while parts or window:  # bounded: a few partitions in flight, taken in order
                    while parts and len(window) < 2 * options.workers:
                        number, part = parts.popleft()
                        window.append((number, client.compute(part), time.monotonic()))
                    number, future, submitted = window.popleft()
                    bound = watchdog.bound_s(lengths[number])
                    try:
                        result: ChunkResult = future.result(timeout=bound)["result"].iloc[0]
                    except TimeoutError:
                        raise DaskPartitionStalled(
                            f"{reader.source}: partition {number} (rows {offsets[number] + 1}-"
                            f"{offsets[number] + lengths[number]}) made no progress for "
                            f"{bound:.0f} s; no output was kept. The local executor (without "
                            "--executor dask) isolates and rejects a row that stalls"
                        ) from None
                    except KilledWorker as exc:
                        task = exc.task
                        part = task[-1] if isinstance(task, tuple) else task
                        raise DaskWorkersDied(
                            f"{reader.source}: partition {part}: every Dask worker that "
                            f"screened it died ({exc.allowed_failures + 1} of them); no output "
                            "was kept. The local executor (without --executor dask) isolates "
                            "and rejects a row that kills its worker"
                        ) from None
                    watchdog.observe(time.monotonic() - submitted, lengths[number])
                    run.consume(result)
                    seen.update(client.scheduler_info()["workers"])
            seen.update(client.scheduler_info()["workers"])
            restarts = max(0, len(seen) - options.workers)
        return run.finish("dask", restarts, render_report)
    except BaseException:
        run.discard()
        raise
    finally:
        if cluster is not None:
            cluster.close()
