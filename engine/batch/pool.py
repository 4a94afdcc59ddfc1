"""Worker processes that no death can hang: a pipe pair per worker, and a watchdog on every one.

Each worker (worker.serve, forked ready from the fork server) has a task pipe and a result pipe
of its own, so nothing is shared: a worker killed at any moment, even half-way through writing
a result, holds no lock anyone else waits for. The parent waits on every result pipe and every
worker's sentinel at once (`multiprocessing.connection.wait`); a worker that died (sentinel
ready, end of file, a message cut short) is replaced by a fresh one and its chunks are sent
again. The chunk it was screening is blamed: one that has killed CRASH_RETRIES workers is
halved, and halved again, until the row that kills is alone and rejected with that reason.
Chunks it had not started are sent again unblamed.

A task pipe is written by a thread of its own (a chunk can be larger than a pipe holds), so the
parent never blocks on a worker while another waits for it. Results come back in input order.
"""

from __future__ import annotations

import collections
import multiprocessing
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from engine.batch.startup import start_fork_server
from engine.batch.worker import ChunkResult, WorkerConfig, reject, serve
from engine.io.tables import Chunk

WINDOW_PER_WORKER = 3  # chunks in flight or waiting per worker: busy workers, bounded memory
DEPTH = 2  # chunks sent ahead to one worker: one screening, one ready to start
CRASH_RETRIES = 2  # deaths a chunk may cause before it is halved (a row: before it is rejected)
FRUITLESS_DEATHS = 50  # workers dying in a row with no result in between: stop, something is off
STOP_TIMEOUT_S = 10.0


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
    crashes: int = 0


class Worker:
    """One worker process, its two pipes, and the thread that feeds it chunks."""

    def __init__(self, config: WorkerConfig) -> None:
        context = multiprocessing.get_context("forkserver")
        task_reader, self.tasks = context.Pipe(duplex=False)
        self.results, result_writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=serve, args=(task_reader, result_writer, config), daemon=True
        )
        self.process.start()
        task_reader.close()  # the worker's ends: only the worker may hold them, so its death
        result_writer.close()  # is an end of file here and a broken pipe there
        self.jobs: collections.deque[Job] = collections.deque()  # sent, in order, no result yet
        self._outbox: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        try:
            while (chunk := self._outbox.get()) is not None:
                self.tasks.send(chunk)
        except (OSError, ValueError):
            pass  # the worker died (the pool sees it by its sentinel) or the pool closed
        finally:
            self.tasks.close()  # end of file: a live worker exits

    def submit(self, job: Job) -> None:
        self.jobs.append(job)
        self._outbox.put(job.chunk)

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
    """Screens chunks on `size` worker processes; yields results in input order."""

    def __init__(self, config: WorkerConfig, size: int) -> None:
        self.config, self.size = config, size
        self.restarts = 0  # workers replaced after dying
        self._workers: list[Worker] = []
        self._waiting: collections.deque[Job] = collections.deque()  # to send, in input order
        self._fruitless = 0

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
        start_fork_server(self.config.rules_dir)  # at once if it runs; again if it was killed
        return Worker(self.config)

    def _dispatch(self) -> None:
        """Send waiting chunks to the least busy workers, DEPTH at most each."""
        while self._waiting:
            worker = min(self._workers, key=lambda w: len(w.jobs))
            if len(worker.jobs) >= DEPTH:
                return
            worker.submit(self._waiting.popleft())

    def _watch(self) -> None:
        """Wait until a worker sends a result or dies; take the result or replace the worker."""
        owners: dict[Any, Worker] = {}
        for worker in self._workers:
            owners[worker.results] = worker
            owners[worker.process.sentinel] = worker
        for ready in wait(list(owners)):
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

    def _receive(self, worker: Worker) -> None:
        try:
            kind, payload = worker.results.recv()
        except (EOFError, OSError):  # died, maybe half-way through a message
            self._replace(worker)
            return
        if kind == "error":
            raise payload
        job = worker.jobs.popleft()
        job.slot.result = payload
        self._fruitless = 0

    def _replace(self, worker: Worker) -> None:
        """A worker died: start another; send its chunks again, blaming the one it screened."""
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
        again = [job for lost_job in lost for job in _after_crash(lost_job)]
        self._waiting.extendleft(reversed(again))  # before any chunk not yet sent: input order
        self._workers.append(self._start())


def _after_crash(job: Job) -> list[Job]:
    """The jobs to send again for a chunk a worker died with: itself, its halves once it has
    killed CRASH_RETRIES workers, or none for a row that did (it is rejected with the reason)."""
    if job.crashes < CRASH_RETRIES:
        return [job]
    chunk = job.chunk
    rows = chunk.materialized()
    if len(rows) > 1:
        half = len(rows) // 2
        halves = [
            Job(Chunk(chunk.index, chunk.source, part), Slot())
            for part in (rows[:half], rows[half:])
        ]
        job.slot.parts = [h.slot for h in halves]
        return halves
    ((number, row),) = rows
    crashed = ChunkResult(chunk.index, chunk.source, rows=1)
    case_id = row.get("case_id") if isinstance(row, dict) else None
    reason = f"a worker process died {CRASH_RETRIES} times screening this row; not screened"
    reject(
        crashed,
        chunk.source,
        number,
        case_id if isinstance(case_id, str) else None,
        [(None, None, reason)],
    )
    job.slot.result = crashed
    return []
