"""The one value normaliser: what a clinician or an export writes, as the dictionary spells it.

Every way a case comes in (a case file, `--set`, a batch row, `Screener.screen`, `screen_many`,
`screen_frame`, the web form, the FHIR mapper) reaches `cases.validate_case`, which calls
`normalise_row` first. It is driven by data: the data dictionary (each field's type, its values,
the spine segments) and synonyms.yaml beside this file (other spellings, each under its field).
A value is changed only when it means exactly one value of its field (`Male`, `HNP`, `L4/5`,
`Y`, `31,5`, a case id read as the number 101.0); anything else is left as given, for validation
to refuse with its field, row and reason. Numeric sex codes are never guessed: registries code
them differently, so only a mapping file may state them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from engine.dictionary import FIELDS, SEGMENTS, FieldGroup, FieldSpec, FieldType
from engine.errors import CaseProblem
from engine.yamlsource import parse_yaml

SYNONYMS_FILE = Path(__file__).with_name("synonyms.yaml")
_SEPARATORS = re.compile(r"[\s/_\-\u2013.]+")
_DECIMAL_COMMA = re.compile(r"\s*[+-]?\d+,\d+\s*")
_THOUSANDS = re.compile(r"\s*[+-]?\d{1,3},\d{3}\s*")  # 1,234: a thousand, or 1.234? never read
_ID_FLOAT_TEXT = re.compile(r"(\d+)\.0+")  # an id a spreadsheet wrote as a float: 101.0
# one level or span: L4-L5, L4/5, l4l5, L45, L5S1, C5/6, T12-L1, L3-L5, L3 to L5
_LEVEL = re.compile(r"([CTLS])(\d{1,2})(-|/|\u2013|TO)?([CTLS])?(\d{1,2})")
_LIST = re.compile(r"\s*(?:[,;+&]|\bAND\b)\s*")
_VERTEBRAE = tuple(
    dict.fromkeys(vertebra for segment in SEGMENTS for vertebra in segment.split("-"))
)
_VERTEBRA_INDEX = {vertebra: n for n, vertebra in enumerate(_VERTEBRAE)}


def spelling_key(text: str) -> str:
    """A value as compared: case and separators (space, -, /, _, .) ignored."""
    return _SEPARATORS.sub("", text.strip().lower())


@dataclass(frozen=True)
class Change:
    """One value the normaliser changed: its field, what was given and what it became."""

    field: str
    given: object
    value: object

    @property
    def example(self) -> str | None:
        """`M → male` for a summary, or None for a case id (never shown: it is the person's key).

        Every other given value was placed by the dictionary, the synonyms table, the level
        reader or the number reader, so it is a vocabulary word or a number, never free text.
        """
        if self.field == "case_id":
            return None
        return f"{_text(self.given)} → {_text(self.value)}"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


@dataclass(frozen=True)
class Synonyms:
    """synonyms.yaml as read: the boolean words, and per field each spelling key's value."""

    booleans: dict[str, bool]
    fields: dict[str, dict[str, str]]


@cache
def synonyms() -> Synonyms:
    """The synonyms table (read once); a key given twice in the file is an error, never the last."""
    data = parse_yaml(SYNONYMS_FILE.read_text(encoding="utf-8")).data
    booleans = {
        str(word).strip().lower(): meaning == "true"
        for meaning, words in data["booleans"].items()
        for word in words
    }
    fields = {
        field: {spelling_key(str(word)): str(value) for word, value in words.items()}
        for field, words in data["fields"].items()
    }
    return Synonyms(booleans, fields)


def parse_levels(text: str) -> tuple[str, ...] | None:
    """The segments a level text names, cranial first, or None when it names none unambiguously.

    `L4/5`, `L4-5`, `l4l5`, `L45`, `L5S1`, `C5/6`, `T12-L1` name one segment; a span `L3-L5`
    (or `L3-5`, `L3 to L5`) names the segments between its ends (L3-L4, L4-L5); a list
    `L4-5, L5-S1` names each. Digits run together (`L45`, `C56`) are read only in the cervical
    and lumbar spine, where no vertebra has two digits (`T12` is a vertebra, not T1-T2); a single
    vertebra (`L5`) or a descending pair is no segment.
    """
    found: set[int] = set()
    for part in _LIST.split(text.strip().upper()):
        match = _LEVEL.fullmatch(part.replace(" ", ""))
        if match is None:
            return None
        first_region, first, separator, second_region, second = match.groups()
        if separator is None and second_region is None and (len(first) + len(second) != 2):
            return None
        if separator is None and second_region is None and first_region not in "CL":
            return None
        top = _VERTEBRA_INDEX.get(f"{first_region}{int(first)}")
        bottom = _VERTEBRA_INDEX.get(f"{second_region or first_region}{int(second)}")
        if top is None or bottom is None or bottom <= top:
            return None
        if bottom - top > 1 and separator not in ("-", "\u2013", "TO"):
            return None  # L3/5 is no notation for a span
        found.update(range(top, bottom))
    return tuple(SEGMENTS[n] for n in sorted(found)) or None


def _enum_fixer(spec: FieldSpec) -> Callable[[Any], Any]:
    values = frozenset(spec.values)
    keys = {spelling_key(value): value for value in spec.values}
    keys.update(synonyms().fields.get(spec.name, {}))

    def fix(given: Any) -> Any:
        if type(given) is not str or given in values:
            return given
        return keys.get(spelling_key(given), given)

    return fix


def _boolean_fixer(words: Mapping[str, bool]) -> Callable[[Any], Any]:
    def fix(given: Any) -> Any:
        if type(given) is str:
            return words.get(given.strip().lower(), given)
        if type(given) is float and given in (0.0, 1.0):  # a boolean column with gaps, via pandas
            return given == 1.0
        return given

    return fix


def _number(given: Any) -> Any:
    """A decimal comma read as a point (`31,5`); `1,234` stays as given: which is it?"""
    if (
        type(given) is str
        and "," in given
        and _DECIMAL_COMMA.fullmatch(given)
        and not _THOUSANDS.fullmatch(given)
    ):
        return float(given.replace(",", "."))
    return given


def _case_id(given: Any) -> Any:
    """A case id as text: the number 101 or 101.0 as `101`, the text `101.0` too, spaces cut."""
    if type(given) is str:
        if given[-1:] == "0" and (match := _ID_FLOAT_TEXT.fullmatch(given.strip())):
            return match[1]
        return given.strip() if given[:1].isspace() or given[-1:].isspace() else given
    if type(given) is int:
        return str(given)
    if type(given) is float and math.isfinite(given):
        return str(int(given)) if given.is_integer() else repr(given)
    return given


def _fixers() -> dict[str, Callable[[Any], Any]]:
    words = synonyms().booleans
    fixers: dict[str, Callable[[Any], Any]] = {}
    for spec in FIELDS:
        if spec.group is FieldGroup.derived:
            continue  # supplied, it is refused whatever its spelling
        if spec.name == "case_id":
            fixers[spec.name] = _case_id
        elif spec.type is FieldType.enum and spec.values != SEGMENTS:
            fixers[spec.name] = _enum_fixer(spec)
        elif spec.type is FieldType.boolean:
            fixers[spec.name] = _boolean_fixer(words)
        elif spec.type is FieldType.number:
            fixers[spec.name] = _number
    return fixers


_FIXERS = _fixers()
LEVEL_FIELDS = frozenset(
    spec.name for spec in FIELDS if spec.values == SEGMENTS and spec.group is not FieldGroup.derived
)
_SEGMENT_SET = frozenset(SEGMENTS)


def normalise_value(field: str, given: Any) -> Any:
    """The value `given` means in `field`, or `given` unchanged when it means none for sure."""
    if field in LEVEL_FIELDS:
        if type(given) is str and given not in _SEGMENT_SET:
            segments = parse_levels(given)
            return segments[-1] if segments else given
        return given
    fix = _FIXERS.get(field)
    return given if fix is None else fix(given)


def normalise_row(
    raw: Mapping[str, Any],
) -> tuple[Mapping[str, Any], list[Change], list[CaseProblem]]:
    """A row's values normalised, what changed, and any contradiction the normaliser found.

    A span in a level field (`L3-L5`: two segments, the lowest L4-L5) also states `levels`:
    given and different, the row is refused (never a silent pick); not given, it is filled.
    The row comes back as given (the same object) when nothing changed.
    """
    changes: list[Change] = []
    problems: list[CaseProblem] = []
    row: dict[str, Any] | None = None
    for name, given in raw.items():
        if name in LEVEL_FIELDS:
            if type(given) is not str or given in _SEGMENT_SET:
                continue
            segments = parse_levels(given)
            if not segments:
                continue
            value: Any = segments[-1]
            if len(segments) > 1:
                problem = _span_levels(raw, name, given, len(segments), changes)
                if problem is not None:
                    problems.append(problem)
                    continue
        else:
            fix = _FIXERS.get(name)
            if fix is None:
                continue
            value = fix(given)
            if value is given:
                continue
        if row is None:
            row = dict(raw)
        row[name] = value
        if not (type(given) is str and type(value) is bool and given in ("true", "false")):
            changes.append(Change(name, given, value))
    if row is not None:
        for change in changes:
            row[change.field] = change.value
    return (raw if row is None else row), changes, problems


def _span_levels(
    raw: Mapping[str, Any], name: str, given: str, count: int, changes: list[Change]
) -> CaseProblem | None:
    """Check (or fill) `levels` against a span of `count` segments; a problem if they differ."""
    stated = raw.get("levels")
    if stated is None or stated == "":
        changes.append(Change("levels", given, count))
        return None
    try:
        number = float(stated)
    except (TypeError, ValueError):
        return None  # an unreadable levels is refused by validation, with its own reason
    if number == count:
        return None
    return CaseProblem(
        name,
        f"'{given}' spans {count} segments but levels is {_text(stated)}; "
        "give the lowest segment (such as L4-L5), or correct levels",
    )


def synonym_words() -> frozenset[str]:
    """Every spelling the synonyms table knows, lower-case: clinical words, never identifiers."""
    table = synonyms()
    return frozenset(table.booleans) | frozenset(
        key for words in table.fields.values() for key in words
    )
