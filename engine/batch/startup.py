"""What a batch needs first, before anything heavy loads: the fork server.

This module imports nothing heavy, so the CLI can use it before it loads pyarrow, the rules and
the inputs.

The fork server imports the worker module and builds the rules (engine/batch/preload.py) while
the parent is still starting, so each worker forks ready to screen instead of spending about
0.5 s on imports and rules of its own. The server and its workers die with the process that
started them (`die_with_parent`), so a killed batch leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

# multiprocessing and ctypes are imported where used: every command imports this module first

# the rules directory a starting fork server builds its rules from (engine/batch/preload.py)
PRELOAD_RULES_ENV = "MISS_SCREEN_PRELOAD_RULES"
# the engine it builds them for (engine.screener.ENGINES; the cohort default when unset)
PRELOAD_ENGINE_ENV = "MISS_SCREEN_PRELOAD_ENGINE"
# the process that starts the fork server: the server dies with it (engine/batch/preload.py)
PRELOAD_PARENT_ENV = "MISS_SCREEN_PRELOAD_PARENT"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_SET_DUMPABLE = 4


def start_fork_server(rules_dir: str, engine: str = "") -> None:
    """Start the fork server now, preloading the worker module and the rules in `rules_dir`
    for `engine` (the cohort default when empty).

    Harmless if the server already runs: a worker whose server built other rules (another run
    in the same process, or files edited meanwhile) builds its own. Call it from the main
    thread: the server dies with the thread that starts it.
    """
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    multiprocessing.set_forkserver_preload(["engine.batch.preload"])
    names = (PRELOAD_RULES_ENV, PRELOAD_ENGINE_ENV, PRELOAD_PARENT_ENV)
    previous = {name: os.environ.get(name) for name in names}
    os.environ[PRELOAD_RULES_ENV] = rules_dir  # read by the server as it starts
    os.environ[PRELOAD_ENGINE_ENV] = engine
    os.environ[PRELOAD_PARENT_ENV] = str(os.getpid())
    # The server is a fresh interpreter in our process group: a Ctrl-C while it initialises
    # would print Python's own fatal error beside ours. It starts with SIGINT blocked (the mask
    # survives exec) and keeps it so, as do the workers it forks: the batch process handles
    # Ctrl-C and ends them. Blocked, not ignored, so a Ctrl-C meanwhile reaches us on unblocking.
    # The resource tracker starts first, on its own: starting it (which ensure_running does
    # before it starts the server) unblocks SIGINT and SIGTERM in this thread when done, so the
    # server would start with SIGINT open (Python 3.11 multiprocessing/resource_tracker.py).
    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel kill this process (SIGKILL) as soon as its parent dies (Linux only).

    `parent`: the pid the parent should have; a process whose parent died before the request
    took effect (or is not that one) exits at once.
    """
    expected = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != expected:
        os._exit(1)


def forbid_core_dumps() -> None:
    """Make sure this process never writes a core dump: its memory holds case data.

    A crash (an abort in a C library, a signal) would otherwise leave a core file, or hand one
    to systemd-coredump or apport, holding every row read so far, identifiers the guard refused
    included (issue 26). RLIMIT_CORE 0 stops a plain core file; not dumpable stops a core handed
    to a pipe too. Dumpability is reset by exec, so the fork server (a fresh interpreter) calls
    this again, and the workers forked from it inherit both.
    """
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
