"""The durable-rules layout of a ruleset, kept on disk between processes.

Expanding every status pattern into conjunctions and searching a layout whose match stack fits
(layout.py) took about 120 ms of a cold `screen` with the bundled rules: a third of the time
after the imports. The result depends only on the ruleset's content and on the code that
compiles it, so it is written once, as JSON, under a key made of both, and read back by later
processes. A file that is missing, unreadable, truncated, from other rules or other code, or
that does not stand for exactly the rule statuses the compiled rules have, is ignored (the
layout is computed again and the file rewritten). Only a layout that passed every limit check
is ever written.

Where: engine.cachedir (`$MISS_SCREEN_CACHE_DIR`, empty for none).
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from engine.cachedir import CACHE_ENV, cache_dir, prune, read_json, write_json
from engine.dictionary import FIELDS_BY_NAME
from engine.evaluate.layout import STATUS_BITS, Layout, Outline
from engine.evaluate.patterns import ruled_out_key
from engine.models import RuleStatus

__all__ = ["CACHE_ENV", "cache_dir", "cached_layout", "cached_outline", "code_digest", "layout_key"]

FORMAT = 1  # bump when the file's shape changes
T = TypeVar("T")
KEEP = 8  # layouts kept (other rules directories, other versions of the code)
ENGINE = Path(__file__).resolve().parent.parent  # the engine package
# the code a layout depends on: the pattern compiler, layout, network model and evaluator
# (aliases, value codes), the condition trees and rules they read, and the data dictionary
SOURCES = ("evaluate", "rules", "dictionary.py", "models.py")


def code_digest() -> str:
    """sha256 of every source file a layout depends on (SOURCES), by relative path; OSError
    when there is none to read (an install without .py files: nothing to key by)."""
    return _digest_of(ENGINE)


@functools.cache
def _digest_of(engine: Path) -> str:
    """code_digest of the engine package at `engine`, read once per process (the outline and
    the layout both need it): the code it stands for was imported once too."""
    digest = hashlib.sha256()
    found = sorted(_sources(engine), key=lambda p: p.relative_to(engine).as_posix())
    if not any(p.name == "layout.py" for p in found):
        raise FileNotFoundError(engine / "evaluate" / "layout.py")
    for path in found:
        digest.update(path.relative_to(engine).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _sources(engine: Path | None = None) -> Iterable[Path]:
    engine = ENGINE if engine is None else engine
    for name in SOURCES:
        path = engine / name
        yield from path.rglob("*.py") if path.is_dir() else [path]


def layout_key(ruleset_sha256: str, kind: str = "") -> str:
    """The cache key of a ruleset's layout: its content, the compiling code, the Python, and
    the kind of layout ("" for the expanded one, "few" for the few-cases one: durable.py)."""
    parts = [str(FORMAT), ruleset_sha256, code_digest(), "{}.{}".format(*sys.version_info[:2])]
    parts += [kind] if kind else []
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cached_layout(
    ruleset_sha256: str,
    expected: set[tuple[int, int]],
    compute: Callable[[], Layout],
    kind: str = "",
) -> Layout:
    """The layout from the cache if a sound one is there, else `compute()` (then cached).

    `expected`: every (rule index, status bit) the compiled rules have a pattern for; a cached
    layout must stand for none other (a pattern with no possible conjunction stands nowhere).
    """
    return _cached(
        "layout",
        ruleset_sha256,
        kind,
        compute,
        lambda path, key: _read(path, key, expected),
        _write,
    )


def _cached(
    prefix: str,
    ruleset_sha256: str,
    kind: str,
    compute: Callable[[], T],
    read: Callable[[Path, str], T | None],
    write: Callable[[Path, str, T], None],
) -> T:
    """What `read` finds sound in the cache file `<prefix>-<key>.json`, else `compute()`,
    then written by `write` (the oldest of the files beyond KEEP removed). No cache directory,
    or a source file that cannot be read (no key we can trust): `compute()`, nothing written."""
    folder = cache_dir()
    if folder is None:
        return compute()
    try:
        key = layout_key(ruleset_sha256, kind)
    except OSError:
        return compute()
    path = folder / f"{prefix}-{key}.json"
    found = read(path, key)
    if found is not None:
        return found
    made = compute()
    write(path, key, made)
    prune(folder, f"{prefix}-*.json", KEEP)
    return made


def _read(path: Path, key: str, expected: set[tuple[int, int]]) -> Layout | None:
    data = read_json(path)
    try:
        if data["format"] != FORMAT or data["key"] != key:
            return None
        texts, groups, bounds = data["texts"], data["groups"], data["bounds"]
        targets = {
            name: tuple((index, bit) for index, bit in pairs)
            for name, pairs in data["targets"].items()
        }
        ok = (
            isinstance(texts, list)
            and all(isinstance(t, str) for t in texts)
            and isinstance(groups, int)
            and isinstance(bounds, list)
            and len(bounds) == len(texts)
            and all(isinstance(b, int) for b in bounds)
            and {pair for pairs in targets.values() for pair in pairs} <= expected
        )
    except (ValueError, KeyError, TypeError):  # damaged, or not what this code writes
        return None
    if not ok:
        return None
    return Layout(texts=texts, targets=targets, groups=groups, bounds=bounds)


def _write(path: Path, key: str, made: Layout) -> None:
    write_json(
        path,
        {
            "format": FORMAT,
            "key": key,
            "texts": made.texts,
            "targets": {
                name: [list(pair) for pair in pairs] for name, pairs in made.targets.items()
            },
            "groups": made.groups,
            "bounds": made.bounds,
        },
    )


# --- the outline of the compiled rules (layout.Outline), beside the layout ----------------------


def cached_outline(ruleset_sha256: str, rules: int, compute: Callable[[], Outline]) -> Outline:
    """The outline from the cache if a sound one for `rules` rules is there, else `compute()`
    (then cached). Sound: one entry per rule, known status bits and statuses, and value sets
    of known fields whose values the fields can take."""
    return _cached(
        "outline",
        ruleset_sha256,
        "outline",
        compute,
        lambda path, key: _read_outline(path, key, rules),
        _write_outline,
    )


def _write_outline(path: Path, key: str, made: Outline) -> None:
    write_json(
        path,
        {
            "format": FORMAT,
            "key": key,
            "bits": [list(bits) for bits in made.bits],
            "defaults": [[str(status), value] for status, value in made.defaults],
            "value_sets": {
                name: [sorted(values, key=repr) for values in sets]
                for name, sets in made.value_sets.items()
            },
        },
    )


def _read_outline(path: Path, key: str, rules: int) -> Outline | None:
    data = read_json(path)
    try:
        if data["format"] != FORMAT or data["key"] != key:
            return None
        bits = [tuple(b) for b in data["bits"]]
        defaults = [(RuleStatus(status), value) for status, value in data["defaults"]]
        value_sets = {
            name: [frozenset(values) for values in sets]
            for name, sets in data["value_sets"].items()
        }
        ok = (
            len(bits) == len(defaults) == rules
            and all(type(bit) is int and bit in STATUS_BITS for b in bits for bit in b)
            and all(value is None or type(value) is bool for _, value in defaults)
            and all(name in FIELDS_BY_NAME for name in value_sets)
            and all(
                isinstance(v, str | int | float)
                for sets in value_sets.values()
                for values in sets
                for v in values
            )
        )
        if ok:  # every value one its field can take (raises ValueError otherwise)
            for name, sets in value_sets.items():
                for values in sets:
                    ruled_out_key(name, values)
    except (ValueError, KeyError, TypeError, AttributeError):  # damaged, or not ours
        return None
    return Outline(bits, defaults, value_sets) if ok else None
