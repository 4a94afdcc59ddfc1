"""Imported by the batch fork server, before it forks any worker: the worker module, and the rules.

The parent starts the fork server (startup.start_fork_server) as a batch begins and names the
rules directory in PRELOAD_RULES_ENV and the engine in PRELOAD_ENGINE_ENV; the server then
imports the engine and builds the ruleset and its evaluator while the parent is still reading and
checking its inputs, so every worker forks ready to screen. A worker checks the rules' content
hash and the engine against the parent's and builds its own if they differ (another run in the
same process, or files edited meanwhile).

The server dies with the parent that started it (PRELOAD_PARENT_ENV names it), and each worker
with the server: a batch killed with SIGKILL leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os

from engine.batch import worker
from engine.batch.startup import (
    PRELOAD_ENGINE_ENV,
    PRELOAD_PARENT_ENV,
    PRELOAD_RULES_ENV,
    die_with_parent,
    forbid_core_dumps,
)
from engine.screener import COHORT_ENGINE

forbid_core_dumps()  # the server is a fresh interpreter: exec made it dumpable again
_parent = os.environ.get(PRELOAD_PARENT_ENV)
if _parent:
    die_with_parent(int(_parent))
_rules_dir = os.environ.get(PRELOAD_RULES_ENV)
if _rules_dir:
    # a problem here is not reported: each worker then loads the rules itself, and the parent,
    # which loads them too, reports any problem with the files
    with contextlib.suppress(Exception):
        worker.build_rules(_rules_dir, os.environ.get(PRELOAD_ENGINE_ENV) or COHORT_ENGINE)
