"""Where miss-screen keeps what it computes from the rules between processes, and how it writes.

`$MISS_SCREEN_CACHE_DIR` if set (empty: no cache at all), else `$XDG_CACHE_HOME/miss-screen`,
else `~/.cache/miss-screen`. Everything kept there is derived from rule files and code (parsed
YAML, the ruleset's sha256, durable-rules layouts), never from a case: nothing in it
identifies anyone. Each entry is found by a key made of everything it depends on, so an
entry is either exactly right or not found; a file that cannot be read or written is no error,
only a slower start.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_ENV = "MISS_SCREEN_CACHE_DIR"


def cache_dir() -> Path | None:
    """The cache directory, or None when caching is switched off."""
    given = os.environ.get(CACHE_ENV)
    if given is not None:
        return Path(given) if given else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "miss-screen"


def read_json(path: Path) -> Any:
    """The JSON in a cache file, or None if it is missing, unreadable or damaged (nested
    deeper than the JSON reader goes, too)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write atomically (a reader sees the old file or the whole new one); failures ignored.
    The text is made by one json.dumps (C), not by json.dump to the file, which takes the
    pure-Python encoder (about 13 ms against 5 ms for 330 kB of rule files' models)."""
    text = json.dumps(data, separators=(",", ":"))
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise


def prune(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the `keep` most recently written files matching pattern (entries for
    code or rules no longer in use); failures ignored."""
    with contextlib.suppress(OSError):
        found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in found[keep:]:
            with contextlib.suppress(OSError):
                old.unlink()
