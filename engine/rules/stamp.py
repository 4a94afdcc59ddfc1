"""A loaded ruleset's sha256 stamp, kept on disk between processes (rules cache).

The stamp is the sha256 of the ruleset's canonical JSON (Ruleset.canonical): every rule's
metadata dumped and its conditions written back as text, about 250 kB of JSON at each start
(2 % of a cold `screen`). It depends only on the texts of the files loaded, in the order they
were read, and on the code that parses and dumps them, so it is kept under a key made of
those: the sha256 of every text (yamlsource.ParsedCache.seen), the source of the rules
package, the data dictionary, the models and the YAML reader, the Python and pydantic
versions. An entry that is missing, damaged or under another key is ignored (the stamp is
computed and the entry written again); a ruleset built otherwise (a copy changed in memory)
computes its own.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
from pathlib import Path

import pydantic

from engine.cachedir import prune, read_json, write_json
from engine.rules.ruleset import Ruleset
from engine.yamlsource import ParsedCache

FORMAT = 1
KEEP = 8  # stamps kept (other rules directories, other versions of the code)
ENGINE = Path(__file__).resolve().parent.parent  # the engine package
SOURCES = ("rules", "dictionary.py", "models.py", "yamlsource.py")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@functools.cache
def code_digest() -> str:
    """sha256 of every source file the stamp depends on (SOURCES), by relative path; OSError
    when there is none to read. Read once per process, as that code was imported once."""
    digest = hashlib.sha256()
    found = []
    for name in SOURCES:
        path = ENGINE / name
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    if not any(p.name == "ruleset.py" for p in found):
        raise FileNotFoundError(ENGINE / "rules" / "ruleset.py")
    for path in found:
        digest.update(path.relative_to(ENGINE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def stamp_key(parsed: ParsedCache) -> str:
    versions = "{}.{}".format(*sys.version_info[:2]) + f"\0{pydantic.VERSION}"
    parts = [str(FORMAT), code_digest(), versions, *parsed.seen]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def stamp_from_cache(ruleset: Ruleset, parsed: ParsedCache) -> None:
    """Give `ruleset` its sha256 from the cache, or compute it and keep it there; nothing
    without a cache folder (ParsedCache.path)."""
    if parsed.path is None or not parsed.seen:
        return
    try:
        key = stamp_key(parsed)
    except OSError:  # a source file unreadable: no key we can trust
        return
    path = parsed.path.parent / f"stamp-{key}.json"
    data = read_json(path)
    found = data.get("sha256") if isinstance(data, dict) and data.get("key") == key else None
    if isinstance(found, str) and _SHA256.fullmatch(found):
        ruleset.__dict__["sha256"] = found  # the cached_property's own slot: read, not computed
        return
    write_json(path, {"key": key, "sha256": ruleset.sha256})
    prune(path.parent, "stamp-*.json", KEEP)
