"""engine.batch.allocator: a batch process takes Arrow's buffers from jemalloc, chosen before
pyarrow is imported (Arrow reads ARROW_DEFAULT_MEMORY_POOL once), and a pool the user named is
kept. Each case runs in a fresh interpreter: this one imported pyarrow long ago."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import os, sys\n"
    "from engine.batch.allocator import ARROW_POOL_ENV, arrow_jemalloc\n"
    "arrow_jemalloc()\n"
    "assert 'pyarrow' not in sys.modules\n"
    "import pyarrow as pa\n"
    "pa.array(range(1000))\n"  # Arrow's default pool in use
    "print(os.environ[ARROW_POOL_ENV], pa.default_memory_pool().backend_name)\n"
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="set on Linux only"),
]


def _probe(**env: str) -> list[str]:
    given = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**given, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr == ""  # Arrow warns on stderr of a backend it does not have
    return done.stdout.split()


def test_arrow_allocates_from_jemalloc_in_a_batch_process() -> None:
    import pyarrow as pa

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow was built without jemalloc")
    assert _probe() == ["jemalloc", "jemalloc"]


def test_a_pool_the_user_named_is_kept() -> None:
    assert _probe(ARROW_DEFAULT_MEMORY_POOL="system") == ["system", "system"]
