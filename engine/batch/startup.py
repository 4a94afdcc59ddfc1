"""Starting the batch fork server early: this module imports nothing heavy, so the CLI can call
it before it loads pyarrow, the rules and the inputs.

The server imports the worker module and builds the rules (engine/batch/preload.py) while the
parent is still starting, so each worker forks ready to screen instead of spending about 0.5 s
on imports and rules of its own.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing import forkserver

# the rules directory a starting fork server builds its rules from (engine/batch/preload.py)
PRELOAD_RULES_ENV = "MISS_SCREEN_PRELOAD_RULES"


def start_fork_server(rules_dir: str) -> None:
    """Start the fork server now, preloading the worker module and the rules in `rules_dir`.

    Harmless if the server already runs: a worker whose server built other rules (another run
    in the same process, or files edited meanwhile) builds its own.
    """
    multiprocessing.set_forkserver_preload(["engine.batch.preload"])
    previous = os.environ.get(PRELOAD_RULES_ENV)
    os.environ[PRELOAD_RULES_ENV] = rules_dir  # read by the server as it starts
    try:
        forkserver.ensure_running()
    finally:
        if previous is None:
            del os.environ[PRELOAD_RULES_ENV]
        else:
            os.environ[PRELOAD_RULES_ENV] = previous
