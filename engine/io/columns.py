"""Check an input's column names before any row is screened, naming no value from the data.

A first line of data read as a header (no header row) would put a date of birth or a name in
the "column names"; such names are recognised and never printed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from engine.dictionary import DERIVED_FIELDS, INPUT_FIELDS
from engine.io.deid import (
    check_deidentified,
    escape_text,
    kind_words,
    looks_like_person,
    scan_columns,
    shown_name,
)

_NUMBER = re.compile(r"\s*[+-]?(?:\d+[.,]?\d*|[.,]\d+)(?:[eE][+-]?\d+)?\s*")


def _label(column: str, position: int) -> str:
    shown = shown_name(column, INPUT_FIELDS)
    return shown if shown is not None else f"column {position} (name withheld: it may be data)"


def _data_like(column: str) -> str | None:
    """Why a column name looks like a value rather than a name, or None."""
    kinds = looks_like_person(column)
    if kinds:
        return f"looks like {kind_words(kinds)}"
    if _NUMBER.fullmatch(column):
        return "is a number"
    return None


def column_problems(
    source: str,
    columns: list[str],
    sample: Iterable[Mapping[str, object]],
    allowed: Collection[str],
    *,
    ignore_unknown: bool,
) -> tuple[list[str], list[str]]:
    """(problems, unknown columns to ignore) for one input's columns; each problem one line."""
    data_like = [
        f"column {n} {why}"
        for n, column in enumerate(columns, 1)
        if column not in allowed and (why := _data_like(column)) is not None
    ]
    if data_like:
        return [
            f"{source}: the first line looks like a row of data, not a header "
            f"({'; '.join(data_like[:5])}); the file needs a header row of field names"
        ], []
    problems: list[str] = []
    position = {c: n for n, c in reversed(list(enumerate(columns, 1)))}
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        named = ", ".join(_label(c, position[c]) for c in repeated)
        problems.append(f"{source}: columns named more than once: {named}")
    if "case_id" not in columns:
        problems.append(f"{source}: no case_id column; every row needs an anonymised id")
    for column in columns:
        if column in DERIVED_FIELDS:
            problems.append(
                f"{source}: column '{column}' is a derived attribute computed by the "
                "rules; remove it from the input"
            )
    findings = check_deidentified(columns, sample, allowed)
    for finding in findings:
        shown = shown_name(finding.column, INPUT_FIELDS)
        if shown is None and scan_columns([finding.column]) and not _data_like(finding.column):
            shown = escape_text(finding.column)  # a name that names its kind ("Geburtsdatum")
        column = f"column '{shown}'" if shown else _label(finding.column, position[finding.column])
        if finding.column == "case_id":  # the ids themselves: pseudonymise, never allow
            problems.append(
                f"{source}: column 'case_id' holds identifiers ({finding.kind}): "
                f"{finding.reason}; use study codes, or pseudonymise the ids with a key you "
                "keep: --pseudonymise-ids KEYFILE"
            )
            continue
        problems.append(
            f"{source}: {column} looks like a direct identifier ({finding.kind}): "
            f"{finding.reason}; remove it, or pass --allow-column {shown or 'NAME'} "
            "if it is not one"
        )
    flagged = {f.column for f in findings}
    unknown = [
        c for c in columns if c not in INPUT_FIELDS and c not in DERIVED_FIELDS and c not in flagged
    ]
    unshown = [c for c in unknown if shown_name(c, INPUT_FIELDS) is None]
    if unshown:
        labels = ", ".join(_label(c, position[c]) for c in unshown)
        problems.append(
            f"{source}: columns whose names look like data: {labels}; give them field names "
            "(or remove them)"
        )
    elif unknown and not ignore_unknown:
        problems.append(
            f"{source}: columns not in the data dictionary: {', '.join(unknown)}; "
            "rename them, or leave out --strict-columns to skip them"
        )
    return problems, unknown
