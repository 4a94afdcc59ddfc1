"""A loaded and checked ruleset, kept on disk between processes (rules cache).

Loading the bundled rules took about 30 ms of every start even with the parsed YAML cached
(yamlsource.ParsedCache): reading 90 documents, validating them into models, parsing some 170
conditions and checking the whole. A checked ruleset depends only on what the loader can see
in the rules folder and on the code that loads it, so it is kept as JSON under a key made of
both; read back, it costs one JSON document, the models' validation and the condition trees
rebuilt node by node, about a fifth of the load.

What the key holds (`Snapshot`): every entry of the rules folder and of each folder in it (its
name, its kind, and where a link leads), and the bytes of every YAML file among them. That is
all the loader reads (it lists `*.yaml`, `*/*.yaml` and folders' `*.yaml`), plus a few files it
does not; any change there (an edit, a file added, renamed or removed, a link pointed
elsewhere) is another key. Anything else in the folder (a special file, a file the loader's
size limit refuses, an entry that cannot be read) and no entry is read or written: the loader
runs as it always did and reports what it finds. Also in the key: the source of the code the
load depends on (stamp.code_digest), the Python, pydantic and PyYAML versions.

What the entry holds is data, never code: each rule file's model as its JSON dump (validated
again when read back) and each condition as a tree of the condition module's own node types,
named from a fixed list. An entry is written only after the load it stands for succeeded, the
folder is unchanged since the key was taken, and reading the entry back gives a ruleset equal
to the one loaded (same models, conditions, paths and stamp). An entry that is missing,
damaged, from other rules or code, or that fails validation is ignored.

Where: engine.cachedir (`$MISS_SCREEN_CACHE_DIR`, empty for none).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pydantic

from engine.cachedir import cache_dir, prune, read_json, write_json
from engine.dictionary import FIELDS_BY_NAME
from engine.models import ConstraintFile, DerivedFile, PolicyFile, RuleFile
from engine.rules import condition as C
from engine.rules.ruleset import Constraint, DerivedRule, Rule, Ruleset
from engine.rules.stamp import code_digest
from engine.yamlsource import parser_digest

FORMAT = 1
KEEP = 8  # rulesets kept (other rules folders, other versions of the code)
# the condition trees' node types, by name: the only classes an entry can name
NODES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        C.FieldRef,
        C.Const,
        C.Arith,
        C.Compare,
        C.Member,
        C.Known,
        C.And,
        C.Or,
        C.Not,
        C.Truth,
    )
}
_FIELD_COUNTS = {name: len(fields(cls)) for name, cls in NODES.items()}


@dataclass(frozen=True)
class Snapshot:
    """What the loader can see in a rules folder, as one sha256 (the entry's key)."""

    root: Path
    key: str

    @classmethod
    def of(cls, root: Path, limit: int) -> Snapshot | None:
        """The folder's snapshot; None when it holds anything the key cannot stand for (a
        special file, a YAML file over `limit` bytes, an entry that cannot be read)."""
        digest = hashlib.sha256()
        versions = f"{sys.version_info[0]}.{sys.version_info[1]}\0{pydantic.VERSION}"
        try:
            head = [str(FORMAT), code_digest(), versions, parser_digest()]
            digest.update("\0".join(head).encode() + b"\0")
            digest.update(os.fsencode(os.path.realpath(root)) + b"\0\0")
            folders = _entries(root, digest, limit)
            for folder in folders:
                _entries(folder, digest, limit)
        except (OSError, _Unkept):
            return None
        return cls(root, digest.hexdigest())


class _Unkept(Exception):
    """Something in the folder that no key stands for: nothing is read or written."""


def _entries(folder: Path, digest: Any, limit: int) -> list[Path]:
    """Add the entries of `folder` to `digest`; the folders among them, to list next."""
    found: list[Path] = []
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        mode = entry.stat(follow_symlinks=True).st_mode  # a dangling link: OSError, no key
        link = os.path.realpath(entry.path) if entry.is_symlink() else ""
        if stat.S_ISDIR(mode):
            kind = "d"
            found.append(Path(entry.path))
        elif stat.S_ISREG(mode):
            kind = "f"
        else:
            raise _Unkept(entry.path)  # a pipe or a device: the loader may block on it
        # names as the system gives them (bytes: any name, UTF-8 or not)
        digest.update(f"{kind}\0".encode() + os.fsencode(entry.name) + b"\0")
        digest.update(os.fsencode(link) + b"\0")
        # every case of .yaml: a file system that ignores case opens Policy.YAML as policy.yaml
        if kind == "f" and entry.name.casefold().endswith(".yaml"):
            with open(entry.path, "rb") as handle:
                raw = handle.read(limit + 1)
            if len(raw) > limit:
                raise _Unkept(entry.path)
            digest.update(hashlib.sha256(raw).digest())
    digest.update(b"\0")
    return found


def _entry_path(snapshot: Snapshot) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"ruleset-{snapshot.key}.json"


def read(snapshot: Snapshot) -> Ruleset | None:
    """The ruleset kept for this snapshot, if a sound one is there."""
    path = _entry_path(snapshot)
    if path is None:
        return None
    data = read_json(path)
    try:
        if data["format"] != FORMAT or data["key"] != snapshot.key:
            return None
        return _decode(data, snapshot.root)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError):
        return None  # ValueError covers pydantic's ValidationError


def keep(snapshot: Snapshot, ruleset: Ruleset, again: Callable[[], Snapshot | None]) -> None:
    """Write the entry of a ruleset just loaded, if `again()` (the folder's snapshot now)
    still has the key it was loaded under and the entry reads back as that ruleset."""
    path = _entry_path(snapshot)
    if path is None:
        return
    now = again()
    if now is None or now.key != snapshot.key:
        return  # a file changed while it was loaded: the ruleset may stand for neither
    try:
        data = {"format": FORMAT, "key": snapshot.key, **_encode(ruleset, snapshot.root)}
        # read back as a later process will: from the JSON text
        back = _decode(json.loads(json.dumps(data)), snapshot.root)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError):
        return  # a value JSON cannot hold (bytes in a golden case, say)
    if back != ruleset or back.sha256 != ruleset.sha256:
        return  # something JSON does not give back exactly (a date in a golden case, say)
    write_json(path, data)
    prune(path.parent, "ruleset-*.json", KEEP)


# --- to and from JSON ---------------------------------------------------------------------------


def _encode(ruleset: Ruleset, root: Path) -> dict[str, Any]:
    def where(path: str) -> str:
        return Path(path).relative_to(root).as_posix()

    def dump(model: pydantic.BaseModel) -> Any:
        # the keys the file gave, no more: the model read back has the same fields set
        return model.model_dump(mode="json", exclude_unset=True)

    return {
        "name": ruleset.name,
        "version": ruleset.version,
        "sha256": ruleset.sha256,
        "policy": dump(ruleset.policy),
        "rules": [
            [where(r.path), dump(r.meta), _tree(r.scope), _tree(r.when)] for r in ruleset.rules
        ],
        "derived": [
            [
                where(d.path),
                dump(d.meta),
                d.spec.name,
                _tree(d.expression),
                [[_tree(cond), value] for cond, value in d.bands],
                _tree(d.condition),
                [[name, points] for name, points in d.points],
                d.supplied_total,
            ]
            for d in ruleset.derived
        ],
        "constraints": [
            [
                dump(c.meta),
                c.spec.name,
                [[_tree(cond), list(allowed)] for cond, allowed in c.narrowings],
            ]
            for c in ruleset.constraints
        ],
    }


def _decode(data: dict[str, Any], root: Path) -> Ruleset:
    rules = tuple(
        Rule(
            meta=RuleFile.model_validate(meta),
            path=str(root / where),
            scope=_condition(scope, optional=True),
            when=_condition(when),
        )
        for where, meta, scope, when in data["rules"]
    )
    derived = tuple(
        DerivedRule(
            meta=DerivedFile.model_validate(meta),
            path=str(root / where),
            spec=FIELDS_BY_NAME[spec],
            expression=_expression(expression),
            bands=tuple((_condition(cond), value) for cond, value in bands),
            condition=_condition(condition, optional=True),
            points=tuple((str(name), dict(points)) for name, points in points_),
            supplied_total=total,
        )
        for where, meta, spec, expression, bands, condition, points_, total in data["derived"]
    )
    constraints = tuple(
        Constraint(
            meta=ConstraintFile.model_validate(meta),
            spec=FIELDS_BY_NAME[spec],
            narrowings=tuple(
                (_condition(cond), frozenset(allowed)) for cond, allowed in narrowings
            ),
        )
        for meta, spec, narrowings in data["constraints"]
    )
    ruleset = Ruleset(
        name=str(data["name"]),
        version=str(data["version"]),
        directory=str(root),
        rules=rules,
        derived=derived,
        constraints=constraints,
        policy=PolicyFile.model_validate(data["policy"]),
    )
    sha256 = data["sha256"]
    if not isinstance(sha256, str) or len(sha256) != 64:
        raise ValueError("no sha256")
    ruleset.__dict__["sha256"] = sha256  # the cached_property's own slot
    return ruleset


def _tree(node: Any) -> Any:
    """A condition or expression tree as JSON: a node as {"n": type, "a": [fields]}, a
    tuple as a list, a scalar as itself."""
    if isinstance(node, tuple):
        return [_tree(item) for item in node]
    kind = NODES.get(type(node).__name__)
    if kind is not None and type(node) is kind:
        return {"n": kind.__name__, "a": [_tree(getattr(node, f.name)) for f in fields(kind)]}
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise TypeError(f"not a condition tree: {type(node).__name__}")


def _node(data: Any) -> Any:
    """The tree _tree wrote; TypeError or KeyError for anything else, a node whose fields are
    not what the parser makes included (an unknown operator or field, a child of the wrong
    kind), so that a damaged entry is ignored rather than failing a later step."""
    if isinstance(data, list):
        return tuple(_node(item) for item in data)
    if isinstance(data, dict):
        name, args = data["n"], data["a"]
        if not isinstance(args, list) or len(args) != _FIELD_COUNTS[name]:
            raise TypeError("a node with the wrong number of fields")
        node = NODES[name](*(_node(arg) for arg in args))
        if not _sound(node):
            raise TypeError(f"a {name} node the parser would not make")
        return node
    if data is None or isinstance(data, bool | int | float | str):
        return data
    raise TypeError(f"not a condition tree: {type(data).__name__}")


_EXPRESSIONS = (C.FieldRef, C.Const, C.Arith)
_CONDITIONS = (C.Compare, C.Member, C.Known, C.And, C.Or, C.Not, C.Truth)


def _sound(node: Any) -> bool:
    """Whether each field of a node holds what the condition parser puts there."""
    if isinstance(node, C.FieldRef):
        return node.name in FIELDS_BY_NAME
    if isinstance(node, C.Const | C.Truth):
        return isinstance(node.value, bool) or (
            isinstance(node, C.Const) and isinstance(node.value, int | float | str)
        )
    if isinstance(node, C.Arith):
        sides = (node.left, node.right)
        return node.op in C.ARITH_OPS and all(isinstance(s, _EXPRESSIONS) for s in sides)
    if isinstance(node, C.Compare):
        known = node.op in C.NEGATED_OP and node.field in FIELDS_BY_NAME
        return known and isinstance(node.rhs, _EXPRESSIONS)
    if isinstance(node, C.Member):
        values = isinstance(node.values, tuple) and all(
            isinstance(v, bool | int | float | str) for v in node.values
        )
        return values and node.field in FIELDS_BY_NAME and isinstance(node.negated, bool)
    if isinstance(node, C.Known):
        return node.field in FIELDS_BY_NAME and isinstance(node.negated, bool)
    if isinstance(node, C.And | C.Or):
        items = node.items
        return (
            isinstance(items, tuple)
            and bool(items)
            and all(isinstance(i, _CONDITIONS) for i in items)
        )
    if isinstance(node, C.Not):
        return isinstance(node.item, _CONDITIONS)
    return False


def _condition(data: Any, optional: bool = False) -> Any:
    """A whole condition (None where `optional` and absent)."""
    found = _node(data)
    if (found is None and optional) or isinstance(found, _CONDITIONS):
        return found
    raise TypeError("not a condition")


def _expression(data: Any) -> Any:
    """A whole arithmetic expression, or None."""
    found = _node(data)
    if found is None or isinstance(found, _EXPRESSIONS):
        return found
    raise TypeError("not an expression")
