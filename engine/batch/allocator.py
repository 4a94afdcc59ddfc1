"""How a batch process allocates: from glibc's one main arena, set before pyarrow starts threads.

Arrow's reader and compute threads each took a malloc arena of their own, and the chunk buffers
freed there stayed resident beside the main arena's: a 1M-row batch at 40,000-row chunks peaked
about 11 MB higher for no less CPU (benchmarks/results.md). glibc sizes its arenas when a thread
first allocates, so the limit is set before pyarrow is imported (its import starts a thread):
here, and through the environment for the fork server and its workers, started later. Imports
nothing heavy: the batch command calls it before anything else.

Arrow's own buffers (the chunks read, the columns built) come from Arrow's default pool
(jemalloc in the pyarrow wheels; ARROW_DEFAULT_MEMORY_POOL chooses another). On glibc's
allocator instead, a batch's RSS crept up with every chunk: a 1M-row CSV batch ended at
333 MB and a 3M-row one at 390 MB, still rising, where jemalloc held 214 and 210 MB flat; a
1M-row Parquet batch peaked at 248 MB against 200 MB, for 3 % more time (benchmarks/results.md).
"""

from __future__ import annotations

import os

ARENA_ENV = "MALLOC_ARENA_MAX"  # glibc's tunable, read when a process starts
M_ARENA_MAX = -8  # <malloc.h>: the same limit, set on a running process


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
