"""Worker processes that no death can hang: a pipe pair per worker, and a watchdog on every one.

Each worker (worker.serve, forked ready from the fork server) has a task pipe and a result pipe
of its own, so nothing is shared: a worker killed at any moment, even half-way through writing
a result, holds no lock anyone else waits for. The parent waits on every result pipe and every
worker's sentinel at once (`multiprocessing.connection.wait`); a worker that died (sentinel
ready, end of file, a message cut short) is replaced by a fresh one and its chunks are sent
again. The chunk it was screening is blamed: one that has killed CRASH_RETRIES workers is
halved, and halved again, until the row that kills is alone and rejected with that reason.
Chunks it had not started are sent again unblamed.

A watchdog bounds every chunk: a worker that sends nothing for longer than its chunk may take
(STALL_FACTOR times the observed cost per row times the chunk's rows, never less than a floor:
`--stall-timeout`) is stalled (stopped with SIGSTOP, looping on a row, stuck in a C call). It
is killed and its chunk redone exactly as for a death, halved down to the row; a row that stalls
its workers is rejected with that reason. A result half-received when the worker stops is bounded
the same way (the parent reads it against the deadline, never blocking on a silent pipe).

A task pipe is written by a thread of its own (a chunk can be larger than a pipe holds), so the
parent never blocks on a worker while another waits for it. Chunks and results cross the pipes
with their Arrow buffers out of band (engine/batch/transport.py). Results come back in input
order.
"""

from __future__ import annotations

import collections
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import numpy as np

from engine.batch.startup import start_fork_server
from engine.batch.transport import Stalled, pipe_bytes, read_message, widen, write_message
from engine.batch.worker import (
    ChunkResult,
    WorkerConfig,
    chunk_ids,
    reject,
    row_case_id,
    serve,
)
from engine.io.pseudonymise import pseudonymise_row
from engine.io.tables import Chunk

WINDOW_PER_WORKER = 3  # chunks in flight or waiting per worker: busy workers, bounded memory
DEPTH = 2  # chunks sent ahead to one worker: one screening, one ready to start
CRASH_RETRIES = 2  # deaths a chunk may cause before it is halved (a row: before it is rejected)
FRUITLESS_DEATHS = 50  # workers dying in a row with no result in between: stop, something is off
STOP_TIMEOUT_S = 10.0
STALL_FLOOR_S = 60.0  # the least time a chunk may go without a result (--stall-timeout)
STALL_FACTOR = 20  # times the mean observed cost of its rows a chunk may take
COST_WEIGHT = 0.2  # weight of the newest chunk in the running mean cost per row

Notice = Callable[[str], None]


@dataclass
class Slot:
    """Where the result of a chunk goes, or of its halves once it has killed workers."""

    result: ChunkResult | None = None
    parts: list[Slot] = field(default_factory=list)

    def done(self) -> bool:
        if self.result is not None:
            return True
        return bool(self.parts) and all(part.done() for part in self.parts)

    def collect(self) -> ChunkResult:
        if self.result is not None:
            return self.result
        first = self.parts[0].collect()
        for part in self.parts[1:]:
            first.merge(part.collect())
        return first


@dataclass
class Job:
    chunk: Chunk
    slot: Slot
    crashes: int = 0  # workers it has killed or stalled
    stalled_s: float | None = None  # set when the last of those stalled (the bound it passed)

    @property
    def rows(self) -> int:
        return self.chunk.size()


class Worker:
    """One worker process, its two pipes, and the thread that feeds it chunks."""

    def __init__(self, config: WorkerConfig, pipe_size: int) -> None:
        context = multiprocessing.get_context("forkserver")
        task_reader, self.tasks = context.Pipe(duplex=False)
        self.results, result_writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=serve, args=(task_reader, result_writer, config), daemon=True
        )
        self.process.start()
        task_reader.close()  # the worker's ends: only the worker may hold them, so its death
        result_writer.close()  # is an end of file here and a broken pipe there
        widen(self.tasks.fileno(), pipe_size)
        widen(self.results.fileno(), pipe_size)
        self.jobs: collections.deque[Job] = collections.deque()  # sent, in order, no result yet
        self.since = 0.0  # when the first of self.jobs became the one the worker screens
        self.warm = False  # has it sent a result (its first chunk's time includes its start)?
        self._outbox: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        try:
            while (chunk := self._outbox.get()) is not None:
                write_message(self.tasks.fileno(), chunk)
        except (OSError, ValueError):
            pass  # the worker died (the pool sees it by its sentinel) or the pool closed
        finally:
            self.tasks.close()  # end of file: a live worker exits

    def submit(self, job: Job) -> None:
        if not self.jobs:
            self.since = time.monotonic()
        self.jobs.append(job)
        self._outbox.put(job.chunk)

    def receive(self, deadline: float) -> tuple[str, object]:
        """The next message, read against `deadline` (Stalled if it is passed); EOFError or
        OSError if the worker died, even half-way through the message.

        multiprocessing's own recv would block for good on a worker stopped mid-message.
        """
        message: tuple[str, object] = read_message(self.results.fileno(), deadline)
        return message

    def stop(self, *, kill: bool) -> None:
        """End the worker: ask it to finish (or kill it), and wait a bounded time."""
        if kill:
            self.process.kill()
        self._outbox.put(None)
        self._feeder.join(STOP_TIMEOUT_S)
        self.process.join(STOP_TIMEOUT_S)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join(STOP_TIMEOUT_S)
        self.results.close()


class WorkerPool:
    """Screens chunks on `size` worker processes; yields results in input order.

    `stall_floor_s`: the least time a chunk may take before its worker counts as stalled;
    `notice`: told, in one line, of every stalled worker (the progress line shows it).
    """

    def __init__(
        self,
        config: WorkerConfig,
        size: int,
        stall_floor_s: float = STALL_FLOOR_S,
        notice: Notice | None = None,
    ) -> None:
        self.config, self.size = config, size
        self.restarts = 0  # workers replaced after dying or stalling
        self.stalls = 0  # of which stalled
        self.stall_floor_s = stall_floor_s
        self.row_cost_s = 0.0  # running mean seconds per row, from the results so far
        self._notice = notice
        self._workers: list[Worker] = []
        self._waiting: collections.deque[Job] = collections.deque()  # to send, in input order
        self._fruitless = 0

    def bound_s(self, job: Job) -> float:
        """How long `job` may go without a result before its worker counts as stalled."""
        return max(self.stall_floor_s, STALL_FACTOR * self.row_cost_s * job.rows)

    def _deadline(self, worker: Worker) -> float:
        return worker.since + self.bound_s(worker.jobs[0])

    def run(self, chunks: Iterator[Chunk]) -> Iterator[ChunkResult]:
        slots: collections.deque[Slot] = collections.deque()
        window = self.size * WINDOW_PER_WORKER
        source = iter(chunks)
        exhausted = False
        clean = False
        try:
            self._workers = [self._start() for _ in range(self.size)]
            while True:
                while not exhausted and len(slots) < window:
                    chunk = next(source, None)
                    if chunk is None:
                        exhausted = True
                        break
                    slots.append(Slot())
                    self._waiting.append(Job(chunk, slots[-1]))
                    self._dispatch()  # at once: a worker need not wait for the whole window
                if slots and slots[0].done():
                    yield slots.popleft().collect()
                    continue
                if not slots:
                    clean = True
                    return
                self._dispatch()
                self._watch()
        finally:
            for worker in self._workers:
                worker.stop(kill=not clean)
            self._workers = []

    def _start(self) -> Worker:
        # at once if it runs; again if it was killed
        start_fork_server(self.config.rules_dir, self.config.engine)
        return Worker(self.config, pipe_bytes(2 * self.size))

    def _dispatch(self) -> None:
        """Send waiting chunks to the least busy workers, DEPTH at most each."""
        while self._waiting:
            worker = min(self._workers, key=lambda w: len(w.jobs))
            if len(worker.jobs) >= DEPTH:
                return
            worker.submit(self._waiting.popleft())

    def _watch(self) -> None:
        """Wait until a worker sends a result or dies, or its chunk's bound passes; take the
        result, or replace the worker (dead or stalled)."""
        owners: dict[Any, Worker] = {}
        for worker in self._workers:
            owners[worker.results] = worker
            owners[worker.process.sentinel] = worker
        deadlines = [self._deadline(w) for w in self._workers if w.jobs]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for ready in wait(list(owners), timeout):
            worker = owners[ready]
            if worker not in self._workers:
                continue  # replaced a moment ago, for its other handle
            if ready is worker.results:
                self._receive(worker)
                continue
            while worker in self._workers and worker.results.poll():
                self._receive(worker)  # results it sent in full before it died
            if worker in self._workers:
                self._replace(worker)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.jobs and now > self._deadline(worker):
                self._stall(worker)

    def _receive(self, worker: Worker) -> None:
        busy = bool(worker.jobs)  # an idle worker sends only an error (its start failed)
        deadline = self._deadline(worker) if busy else time.monotonic() + self.stall_floor_s
        try:
            kind, payload = worker.receive(deadline)
        except (EOFError, OSError):  # died, maybe half-way through a message
            self._replace(worker)
            return
        except Stalled:  # stopped half-way through a message
            self._stall(worker)
            return
        if kind == "error":
            raise payload  # type: ignore[misc]  # an exception, as worker.serve sends it
        job = worker.jobs.popleft()
        now = time.monotonic()
        if worker.warm:  # a first chunk's time is mostly the worker's start: not a row cost
            cost = (now - worker.since) / max(1, job.rows)
            self.row_cost_s += COST_WEIGHT * (cost - self.row_cost_s) if self.row_cost_s else cost
        worker.warm = True
        worker.since = now
        job.slot.result = payload  # type: ignore[assignment]  # a ChunkResult, as serve sends
        self._fruitless = 0

    def _stall(self, worker: Worker) -> None:
        """A worker sent nothing within its chunk's bound: say so, and treat it as dead."""
        job = worker.jobs[0]
        bound = self.bound_s(job)
        self.stalls += 1
        if self._notice is not None:
            first, last = job.chunk.span()
            rows = f"row {first}" if first == last else f"rows {first}-{last}"
            self._notice(
                f"a worker made no progress for {bound:.0f} s on {rows} of "
                f"{job.chunk.source}; it was stopped and they are screened again"
            )
        self._replace(worker, stalled_s=bound)

    def _replace(self, worker: Worker, stalled_s: float | None = None) -> None:
        """A worker died (or stalled past `stalled_s`): start another; send its chunks again,
        blaming the one it screened."""
        self._workers.remove(worker)
        worker.stop(kill=True)
        self.restarts += 1
        self._fruitless += 1
        if self._fruitless > FRUITLESS_DEATHS:
            raise RuntimeError(
                f"{FRUITLESS_DEATHS} batch worker processes died in a row without a result"
            )
        lost = list(worker.jobs)
        if lost:
            lost[0].crashes += 1
            lost[0].stalled_s = stalled_s
        again = [job for lost_job in lost for job in _after_crash(lost_job, self.config)]
        self._waiting.extendleft(reversed(again))  # before any chunk not yet sent: input order
        self._workers.append(self._start())


def _after_crash(job: Job, config: WorkerConfig) -> list[Job]:
    """The jobs to send again for a chunk a worker died with: itself, its halves once it has
    killed CRASH_RETRIES workers, or none for a row that did (it is rejected with the reason,
    and its case_id counts for duplicates, as any rejected row's does)."""
    if job.crashes < CRASH_RETRIES:
        return [job]
    chunk = job.chunk
    rows = chunk.materialized()
    if len(rows) > 1:
        half = len(rows) // 2
        halves = [
            Job(Chunk(chunk.index, chunk.source, part, input=chunk.input), Slot())
            for part in (rows[:half], rows[half:])
        ]
        job.slot.parts = [h.slot for h in halves]
        return halves
    ((number, row),) = rows
    crashed = ChunkResult(chunk.index, chunk.source, chunk.input, rows=1)
    # the id as the other outputs show it: pseudonymised where the batch asks. With a column
    # mapping it would be the mapped id, which the parent does not compute (the mapping may be
    # what stalled the workers): withheld
    case_id = None
    if isinstance(row, dict) and config.mapping is None:
        key = config.pseudonym_key
        case_id = row_case_id(row if key is None else pseudonymise_row(key, row))
    if job.stalled_s is not None:
        reason = (
            f"a worker process made no progress for {job.stalled_s:.0f} s screening this row "
            f"(stalled; {CRASH_RETRIES} workers stopped on it); not screened"
        )
    else:
        reason = f"a worker process died {CRASH_RETRIES} times screening this row; not screened"
    reject(
        crashed,
        chunk.source,
        number,
        case_id,
        [(None, None, reason)],
    )
    if case_id is not None:
        crashed.ids = [chunk_ids(np.array([number]), [case_id])]
    job.slot.result = crashed
    return []
