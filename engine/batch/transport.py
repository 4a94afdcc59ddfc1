"""Messages between the batch parent and its workers: pickled with their Arrow buffers beside.

A 10,000-row Parquet chunk is about 3 MB of Arrow buffers, and so is its result (the flattened
record batch and the case ids); a pool's chunks are larger (batch.run.POOL_ROWS_IN_FLIGHT).
multiprocessing's own send pickles them into one bytes object (copying every buffer twice) and
the receiver copies them out again, 64 KiB a read: on two workers that was about a tenth of the
whole run's CPU, spent by the parent that reads and writes for both (benchmarks/results.md).
Here a message is pickled with protocol 5 and its buffers travel out of band: written to the
pipe from where they are, read into one bytearray and used in place (an Arrow array of the
received message is a view of that bytearray, which lives as long as any such view).

The frame: a header (`!QI`: the pickle's size and how many buffers), each buffer's size (`!Q`
each), the pickle, then the buffers, each padded to ALIGN bytes and read into one Arrow buffer
(64-byte aligned): every received buffer starts where Arrow and numpy expect it to (an
unaligned one is undefined behaviour to Arrow, apache/arrow#33336). Anything cut short (a peer
that died half-way through), or sizes past any real message's, is an EOFError for the reader;
`read_message` reads against a deadline, so a peer stopped half-way through a message can be
told apart from a slow one (engine/batch/pool.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import select
import struct
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import pyarrow as pa

HEADER = struct.Struct("!QI")
SIZE = struct.Struct("!Q")
PIPE_BYTES = 1 << 20  # a widened pipe's buffer (Linux's most for a user): fewer, larger reads
DEFAULT_PIPE_BYTES = 1 << 16
PIPE_PAGES_SOFT = Path("/proc/sys/fs/pipe-user-pages-soft")  # the user's budget for all pipes
PIPES_SHARE = 4  # a pool's pipes together take at most a quarter of it
READ_BLOCK = 1 << 20
ALIGN = 64  # bytes: Arrow's own buffer alignment
_PADDING = bytes(ALIGN)
LARGEST = 1 << 32  # bytes of a message part, at most: larger sizes are a corrupt frame
MOST_BUFFERS = 1 << 20


def _iov_max() -> int:
    """How many parts one writev may take (POSIX guarantees 16; Linux takes 1024)."""
    with contextlib.suppress(ValueError, OSError):
        return max(16, os.sysconf("SC_IOV_MAX"))
    return 16


IOV_MAX = _iov_max()


class Stalled(Exception):
    """The peer sent nothing (or only part of a message) within the deadline."""


def pipe_bytes(pipes: int) -> int:
    """The buffer for each of a pool's `pipes` pipes: PIPE_BYTES, halved while together they
    would take more than a quarter of the user's pipe budget (past the budget, Linux gives
    every new pipe of that user, in any program, a single page)."""
    try:
        pages = int(PIPE_PAGES_SOFT.read_text())
    except (OSError, ValueError):
        return PIPE_BYTES  # no such budget here
    if not pages:
        return PIPE_BYTES  # 0: no budget
    share = pages * os.sysconf("SC_PAGESIZE") // PIPES_SHARE // max(1, pipes)
    size = PIPE_BYTES
    while size > share and size > DEFAULT_PIPE_BYTES:
        size //= 2
    return size


def widen(fd: int, size: int = PIPE_BYTES) -> None:
    """Give a pipe a buffer of `size` bytes where the system allows (64 KiB otherwise): a
    chunk then crosses in a few reads and writes, not fifty."""
    if size > DEFAULT_PIPE_BYTES and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # over the user's limit: the default size serves
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


def frame(message: Any) -> list[memoryview]:
    """The parts of a message's frame, in order; its buffers are not copied."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    ForkingPickler(stream, 5, True, buffers.append).dump(message)
    raws = [buffer.raw() for buffer in buffers]
    head = HEADER.pack(stream.getbuffer().nbytes, len(raws))
    sizes = b"".join(SIZE.pack(raw.nbytes) for raw in raws)
    parts = [memoryview(head + sizes), stream.getbuffer()]
    for raw in raws:
        parts += [raw, memoryview(_PADDING)[: _padding(raw.nbytes)]]
    return parts


def _padding(size: int) -> int:
    return -size % ALIGN


def write_message(fd: int, message: Any) -> None:
    """Write a message to a blocking pipe (OSError if the reader is gone)."""
    write_frame(fd, frame(message))


def write_frame(fd: int, parts: list[memoryview]) -> None:
    """Write a framed message (`frame`) to a blocking pipe (OSError if the reader is gone).

    In as few calls as the system allows (one writev blocks until the reader has taken it
    all): a writing thread that needed the interpreter lock between parts would wait for it,
    up to its switch interval, each time the pipe filled, and its reader with it.
    """
    parts = [part for part in parts if part.nbytes]
    while parts:
        written = os.writev(fd, parts[:IOV_MAX])
        while parts and written >= parts[0].nbytes:
            written -= parts[0].nbytes
            parts.pop(0)
        if written:
            parts[0] = parts[0][written:]


def read_message(fd: int, deadline: float | None = None) -> Any:
    """The next message from a pipe; EOFError if the writer is gone, even half-way through a
    message; Stalled if `deadline` (time.monotonic) passes before it has all come."""
    pickled_size, count = HEADER.unpack(_read(fd, HEADER.size, deadline))
    if pickled_size > LARGEST or count > MOST_BUFFERS:
        raise EOFError  # no message of ours: a corrupt frame, as a peer cut off would leave
    sizes = [size for (size,) in SIZE.iter_unpack(_read(fd, SIZE.size * count, deadline))]
    if any(size > LARGEST for size in sizes):
        raise EOFError
    pickled = _read(fd, pickled_size, deadline)  # apart: what it holds in band is copied out,
    total = sum(size + _padding(size) for size in sizes)  # and need not be kept with buffers
    block = pa.allocate_buffer(total)  # aligned
    view = memoryview(block)
    _read_into(fd, view, deadline)
    buffers, start = [], 0
    for size in sizes:
        buffers.append(view[start : start + size])
        start += size + _padding(size)
    return pickle.loads(pickled, buffers=buffers)  # noqa: S301 - our own pipes


def _read(fd: int, size: int, deadline: float | None) -> bytearray:
    """Exactly `size` bytes, read in place into one bytearray."""
    data = bytearray(size)
    _read_into(fd, memoryview(data), deadline)
    return data


def _read_into(fd: int, view: memoryview, deadline: float | None) -> None:
    """Fill `view` from the pipe, in place."""
    size, done = view.nbytes, 0
    while done < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if not select.select([fd], [], [], max(0.0, left))[0]:
                raise Stalled  # (bytes already there are read, even past the deadline)
        got = os.readv(fd, [view[done : done + READ_BLOCK]])
        if not got:
            raise EOFError
        done += got
