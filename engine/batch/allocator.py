"""How a batch process allocates: from glibc's one main arena, set before pyarrow starts threads.

Arrow's reader and compute threads each took a malloc arena of their own, and the chunk buffers
freed there stayed resident beside the main arena's: a 1M-row batch at 40,000-row chunks peaked
about 11 MB higher for no less CPU (benchmarks/results.md). glibc sizes its arenas when a thread
first allocates, so the limit is set before pyarrow is imported (its import starts a thread):
here, and through the environment for the fork server and its workers, started later. Imports
nothing heavy: the batch command calls it before anything else.

Arrow's own buffers (the chunks read, the columns built) come from jemalloc (arrow_jemalloc;
a pool the user names in ARROW_DEFAULT_MEMORY_POOL is kept). Arrow reads that variable once,
when its default pool is first used: pyarrow's set_memory_pool changes only what pyarrow's own
calls allocate from, not the Parquet reader's or the compute kernels'. On glibc's allocator a
batch's RSS crept up with every chunk: a 1M-row CSV batch ended at 333 MB and a 3M-row one at
390 MB, still rising, where jemalloc held 214 and 210 MB flat; on pyarrow 26's own default,
mimalloc, the 1M-row CSV batch ended at 256 MB (jemalloc: 218 MB and 10 % less CPU). A 1M-row
Parquet batch peaked at 248 MB on glibc's allocator and 200 MB on jemalloc, in 3 % less time
(benchmarks/results.md).
"""

from __future__ import annotations

import os
import sys

ARENA_ENV = "MALLOC_ARENA_MAX"  # glibc's tunable, read when a process starts
M_ARENA_MAX = -8  # <malloc.h>: the same limit, set on a running process
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's, read when its default pool is first used


def one_malloc_arena() -> None:
    """One arena for this process from now, and for the processes it starts. A limit the user
    set is kept; where the C library is not glibc, nothing changes."""
    if os.environ.get(ARENA_ENV):
        return
    os.environ[ARENA_ENV] = "1"
    import ctypes

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, 1)


def arrow_jemalloc() -> None:
    """Arrow's buffers from jemalloc, in this process and the processes it starts, unless the
    user named a pool; set before pyarrow is imported. On Linux only, where pyarrow's wheels
    carry jemalloc (elsewhere Arrow would warn that it has none, and keep its default)."""
    if sys.platform.startswith("linux") and not os.environ.get(ARROW_POOL_ENV):
        os.environ[ARROW_POOL_ENV] = "jemalloc"
