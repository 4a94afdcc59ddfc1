"""Replace each case id by a keyed pseudonym, so ids that are identifiers can still be screened.

A registry keyed by dates of birth, phone or NHS numbers is refused by the identifier guard
(engine/io/case_ids.py). With `--pseudonymise-ids KEYFILE` each id becomes `p-` and 24 letters
(96 bits) of its HMAC-SHA256 under a random 32-byte key kept in KEYFILE, before the guard looks
at it. The same id and key give the same pseudonym in every worker and every run,
so results join back to the source through whoever holds the key (who recomputes the pseudonym
of each original id); without the key the pseudonyms cannot be recomputed, even by trying every
date of birth, as a plain hash of so few possible values could.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError

if TYPE_CHECKING:  # pyarrow only where a batch runs: Screener imports this module
    from engine.io.tables import Chunk

__all__ = [
    "PREFIX",
    "load_key",
    "pseudonym",
    "pseudonymise_chunk",
    "pseudonymise_row",
    "read_key",
]

PREFIX = "p-"
KEY_BYTES = 32
_LETTERS = 24  # of 16: 96 bits
# hex digits written as letters: a pseudonym holds no digit, so the guard never takes one for a
# date or a number (and no two ids share a pseudonym unless 96 bits of HMAC collide)
_AS_LETTERS = str.maketrans("0123456789abcdef", "bcdfghjkmnpqrstv")


def load_key(path: str) -> bytes:
    """The key in KEYFILE (64 hex digits), or a new random key written there with mode 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the key file: {exc.strerror or exc}") from None
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
    return key


def read_key(path: str) -> bytes:
    """The key in an existing KEYFILE (to join results back: pseudonym(read_key(path), id))."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read(4 * KEY_BYTES).strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:  # the file's content is a secret: never shown
        raise UsageError(
            f"{path}: not a key file ({2 * KEY_BYTES} hex digits); give a new path to create one"
        )
    return key


def pseudonym(key: bytes, case_id: str) -> str:
    """The pseudonym of one case id under `key`."""
    digest = hmac.new(key, case_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:_LETTERS].translate(_AS_LETTERS)


def _id_text(value: object) -> str | None:
    """A case id as the text it is hashed from: whole floats as integers (a spreadsheet's
    101.0 is the 101 of the source); None for no id, or a structure (refused as it is)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return str(value)
    return None


def pseudonymise_row(key: bytes, row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a row with its case_id pseudonymised (an absent or empty id stays as it is)."""
    text = _id_text(row.get("case_id"))
    if not text:
        return dict(row)
    return {**row, "case_id": pseudonym(key, text)}


def pseudonymise_chunk(key: bytes, chunk: Chunk) -> Chunk:
    """A chunk with every row's case_id pseudonymised; rows that could not be parsed unchanged."""
    rows = [
        (n, pseudonymise_row(key, row) if isinstance(row, dict) else row) for n, row in chunk.rows
    ]
    import pyarrow as pa

    batch = chunk.batch
    if batch is not None and "case_id" in batch.schema.names:
        position = batch.schema.get_field_index("case_id")
        column = batch.column(position)
        if not pa.types.is_nested(column.type):
            batch = batch.set_column(position, "case_id", pseudonymise_column(key, column))
    return dataclasses.replace(chunk, rows=rows, batch=batch)


def pseudonymise_column(key: bytes, column: Any) -> Any:
    """An Arrow case_id column (not nested) with every id pseudonymised, as text: an empty id
    stays empty, and a value that is no id becomes null (a missing case_id)."""
    import pyarrow as pa

    ids = [
        pseudonym(key, t) if (t := _id_text(v)) else (v if isinstance(v, str) else None)
        for v in column.to_pylist()
    ]
    return pa.array(ids, pa.string())
