"""The batch pipes' messages (engine/batch/transport.py): what goes in comes out, Arrow buffers
out of band, and a message cut short or stopped half-way is an error, never a hang or a wrong
message. The pool's recovery from those errors is tested on real runs in tests/test_faults.py
and tests/test_watchdog.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.batch import transport
from engine.batch.transport import Stalled, frame, read_message, widen, write_frame, write_message
from engine.batch.worker import ChunkResult, chunk_ids
from engine.io.tables import Chunk, RowProblem

pytestmark = pytest.mark.timeout(60)


@contextmanager
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            with contextlib.suppress(OSError):  # closed by the test
                os.close(fd)


def _chunk(rows: int) -> Chunk:
    """A Parquet-like chunk: a record batch with nulls, a sliced column, and a refused row."""
    ids = pa.array([f"C-{i:07d}" for i in range(rows + 3)]).slice(3)
    ages = pa.array([None if i % 7 == 0 else i % 90 for i in range(rows)], pa.int64())
    bmi = pa.array([i / 10 for i in range(rows)], pa.float64())
    smoker = pa.array([i % 3 == 0 if i % 5 else None for i in range(rows)], pa.bool_())
    batch = pa.RecordBatch.from_arrays(
        [ids, ages, bmi, smoker], names=["case_id", "age_years", "bmi", "smoker"]
    )
    refused = [(rows + 1, RowProblem("not a row"))]
    numbers = np.arange(1, rows + 1, dtype=np.int64)
    return Chunk(4, "cohort.parquet", refused, batch=batch, first=1, numbers=numbers)


def _sent(message: object, read_end: int, write_end: int) -> object:
    """`message` written by a thread (it can be larger than the pipe holds) and read here."""
    writer = threading.Thread(target=write_message, args=(write_end, message))
    writer.start()
    try:
        return read_message(read_end, time.monotonic() + 30)
    finally:
        writer.join(30)


@pytest.mark.parametrize("rows", [0, 1, 5_000])  # 5,000 rows: several pipes' worth
def test_a_chunk_comes_out_as_it_went_in(rows: int) -> None:
    chunk = _chunk(rows)
    with pipe() as (read_end, write_end):
        got = _sent(chunk, read_end, write_end)
    assert isinstance(got, Chunk)
    assert got.batch is not None
    assert chunk.batch is not None
    assert got.batch.equals(chunk.batch)
    assert got.batch.schema == chunk.batch.schema
    assert got.batch.column(0).to_pylist() == chunk.batch.column(0).to_pylist()  # the slice
    assert got.rows == chunk.rows
    assert got.numbers is not None
    assert chunk.numbers is not None
    assert np.array_equal(got.numbers, chunk.numbers)
    assert (got.index, got.source, got.first) == (chunk.index, chunk.source, chunk.first)


def test_a_result_comes_out_as_it_went_in_through_a_widened_pipe() -> None:
    batch = _chunk(20_000).batch
    assert batch is not None
    result = ChunkResult(7, "cohort.parquet", records=[batch], rows=20_000, screened=19_999)
    result.verdicts["worth_discussing"] = 3
    result.ids = [chunk_ids(np.arange(1, 1001), [f"C-{n}" for n in range(1000)])]
    with pipe() as (read_end, write_end):
        widen(write_end)
        kind, got = _sent(("result", result), read_end, write_end)  # type: ignore[misc]
    assert kind == "result"
    assert got == result  # every field, the record batch's values included


def test_arrow_buffers_travel_out_of_band() -> None:
    """The pickle holds none of the column data: it travels as separate parts, uncopied."""
    chunk = _chunk(5_000)
    assert chunk.batch is not None
    _, pickled, *buffers = frame(chunk)
    assert pickled.nbytes < 10_000  # the column data alone is over 100 kB
    data = chunk.batch.column("bmi").buffers()[1]
    assert data is not None
    assert any(
        np.shares_memory(np.frombuffer(part, np.uint8), np.frombuffer(data, np.uint8))
        for part in buffers
    )


@pytest.mark.parametrize("cut", ["header", "sizes", "pickle", "buffers", "last byte"])
def test_a_message_cut_short_is_an_end_of_file_never_a_message(cut: str) -> None:
    """A writer that dies half-way through: wherever the message stops, the reader raises
    EOFError (the pool replaces the worker and redoes its chunk)."""
    parts = frame(_chunk(1_000))
    data = b"".join(bytes(part) for part in parts)
    head, pickled = parts[0].nbytes, parts[1].nbytes
    keep = {
        "header": 5,
        "sizes": head - 3,
        "pickle": head + pickled // 2,
        "buffers": (head + pickled + len(data)) // 2,
        "last byte": len(data) - 1,
    }[cut]
    with pipe() as (read_end, write_end):

        def die_half_way() -> None:
            write_frame(write_end, [memoryview(data[:keep])])
            os.close(write_end)

        writer = threading.Thread(target=die_half_way)
        writer.start()
        with pytest.raises(EOFError):
            read_message(read_end, time.monotonic() + 30)
        writer.join(30)


def test_a_writer_stopped_half_way_is_stalled_at_the_deadline_not_a_hang() -> None:
    parts = frame(_chunk(1_000))
    data = b"".join(bytes(part) for part in parts)
    assert len(data) // 2 < 65_536  # it fits in the pipe: written at once, then nothing
    with pipe() as (read_end, write_end):
        os.write(write_end, data[: len(data) // 2])  # and then nothing, the pipe still open
        started = time.monotonic()
        with pytest.raises(Stalled):
            read_message(read_end, started + 0.5)
        assert time.monotonic() - started < 10


def test_messages_follow_one_another_in_order() -> None:
    chunks = [_chunk(rows) for rows in (3, 2_000, 0, 1)]
    with pipe() as (read_end, write_end):
        widen(read_end)

        def send() -> None:
            for chunk in chunks:
                write_frame(write_end, frame(chunk))

        writer = threading.Thread(target=send)
        writer.start()
        got = [read_message(read_end, time.monotonic() + 30) for _ in chunks]
        writer.join(30)
    assert [c.batch.num_rows for c in got] == [3, 2_000, 0, 1]
    assert all(a.batch.equals(b.batch) for a, b in zip(got, chunks, strict=True))


@pytest.mark.parametrize("pipes", [1, 2, 8, 16, 64, 256, 10_000])
def test_a_pools_pipes_take_at_most_a_quarter_of_the_users_pipe_budget(
    pipes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the budget Linux gives every new pipe of the user a single page, in any program:
    widening must not cost other programs (or a second batch) their pipes."""
    budget = tmp_path / "pipe-user-pages-soft"
    budget.write_text("16384\n")  # Linux's default: 64 MiB in 4 KiB pages
    monkeypatch.setattr(transport, "PIPE_PAGES_SOFT", budget)
    size = transport.pipe_bytes(pipes)
    assert transport.DEFAULT_PIPE_BYTES <= size <= transport.PIPE_BYTES
    assert size == transport.DEFAULT_PIPE_BYTES or size * pipes <= 16384 * 4096 // 4
    budget.write_text("0\n")  # no budget
    assert transport.pipe_bytes(pipes) == transport.PIPE_BYTES


def test_a_widened_pipe_holds_a_chunk_written_at_once() -> None:
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("pipe sizes are Linux's")
    with pipe() as (_, write_end):
        widen(write_end, 1 << 18)
        if fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) < 1 << 18:
            pytest.skip("this system refuses wider pipes")  # widen leaves them as they are
        os.set_blocking(write_end, False)  # a write that does not fit fails at once
        assert os.write(write_end, bytes(200_000)) == 200_000


def test_every_received_buffer_starts_aligned_as_arrow_expects() -> None:
    """Buffers of odd sizes (text data of 7-byte ids, validity bitmaps) travel between numeric
    ones: each arrives at an address Arrow's alignment (64 bytes) divides, so numpy and the
    Parquet writer never read an unaligned int64 or float64 column (apache/arrow#33336)."""
    chunk = _chunk(1_001)
    with pipe() as (read_end, write_end):
        got = _sent(chunk, read_end, write_end)
    assert isinstance(got, Chunk)
    assert got.batch is not None
    addresses = [
        buffer.address
        for column in got.batch.columns
        for buffer in column.buffers()
        if buffer is not None and buffer.size
    ]
    assert len(addresses) >= 6
    assert [a % transport.ALIGN for a in addresses] == [0] * len(addresses)
    assert got.batch.column("bmi").to_numpy().flags.aligned


@pytest.mark.parametrize("claim", ["pickle", "buffers", "a buffer"])
def test_a_frame_claiming_impossible_sizes_is_an_end_of_file_not_an_allocation(claim: str) -> None:
    """A corrupt header (sizes no message of ours has) is read as a peer gone, not trusted
    with an allocation of exabytes."""
    huge = transport.LARGEST + 1
    head = {
        "pickle": transport.HEADER.pack(huge, 0),
        "buffers": transport.HEADER.pack(10, transport.MOST_BUFFERS + 1),
        "a buffer": transport.HEADER.pack(0, 1) + transport.SIZE.pack(huge),
    }[claim]
    with pipe() as (read_end, write_end):
        os.write(write_end, head)
        with pytest.raises(EOFError):
            read_message(read_end, time.monotonic() + 30)
