"""The mapping file (docs/mapping.md): a registry export's columns, codes and units as fields.

A mapping is applied to each raw row before validation, so everything it does is visible and
undone by removing it: columns are renamed, values looked up in per-column maps or in a code
system (ICD-10-CM, from the code lists the FHIR mapper uses, rules/terminology/codes.yaml),
lengths and weights converted to the field's unit, BMI computed from weight and height, and
constants filled in for a whole file. Several columns may feed one field; the mapping states
their precedence, and two that give different values make a row error naming both columns,
never a silent pick. Values the mapping does not place pass on unchanged: validation (and the
value normaliser) decides them and names the field when it cannot.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from engine.dictionary import DERIVED_FIELDS, FIELDS_BY_NAME, INPUT_FIELDS
from engine.errors import CaseInputError, CaseProblem, LinesError
from engine.io.cases import FIELD_ALIASES, read_text, validate_case
from engine.io.deid import check_deidentified, escape_text, showable, shown_case_id
from engine.models import Scalar
from engine.yamlsource import DuplicateKeyError, YamlError, parse_yaml

MAX_MAPPING_BYTES = 1_000_000
MEASURES = ("weight", "height")
# unit conversions: into the field's unit (lengths in mm), or into kg and m for the BMI
TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}
TO_KG = {"kg": 1.0, "g": 0.001, "lb": 0.45359237}
TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001, "in": 0.0254}
UNITS_BY_FIELD_UNIT = {"mm": TO_MM}
UNITS_BY_MEASURE = {"weight": TO_KG, "height": TO_M}
CONVERTED_DIGITS = 6  # 4.53 cm * 10 is 45.300000000000004 mm: rounded back to 45.3
BMI_DIGITS = 1  # BMI is recorded to one decimal; the computed one is rounded alike
CONSTANTS = "constants"  # how a constant is named in a disagreement
_ICD_CODE = re.compile(r"([A-Z][0-9][0-9A-Z])\.?([0-9A-Z]{1,4})?")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)")
_SPACES = re.compile(r"\s+")


class MappingError(LinesError):
    """A mapping file that cannot be used: one line per problem, naming the file and the key."""


def _did_you_mean(name: str) -> str:
    alias = FIELD_ALIASES.get(name.strip().lower())
    close = [alias] if alias else difflib.get_close_matches(name, INPUT_FIELDS, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_field(name: str) -> str:
    if name in DERIVED_FIELDS:
        raise ValueError(f"'{name}' is a derived attribute computed by the rules, not an input")
    if name not in INPUT_FIELDS:
        raise ValueError(f"'{name}' is not a field of the data dictionary{_did_you_mean(name)}")
    return name


def _checked_value(name: str, value: Scalar) -> Scalar:
    """A value a mapping gives a field, checked exactly as a case value (no respelling)."""
    try:
        _, values = validate_case({"case_id": "mapping", name: value}, "<mapping>")
    except CaseInputError as exc:
        raise ValueError("; ".join(p.message for p in exc.problems)) from None
    return values.get(name, value)


def value_key(value: object) -> str:
    """A cell as a values map compares it: text, case and runs of spaces ignored."""
    return _SPACES.sub(" ", str(value).strip()).casefold()


class ColumnSpec(BaseModel):
    """What one source column gives: a field, and how its values become that field's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    field: str | None = None
    values: dict[str, Scalar | None] = {}
    codes: Literal["icd10cm"] | None = None
    split: str | None = None
    unit: str | None = None
    measure: Literal["weight", "height"] | None = None
    blank: Scalar | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, name: str | None) -> str | None:
        return None if name is None else _check_field(name)

    @field_validator("values", mode="before")
    @classmethod
    def _text_keys(cls, given: Any) -> Any:
        if not isinstance(given, dict):
            return given
        keys: dict[str, Any] = {}
        for key, value in given.items():
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                raise ValueError(f"value {key!r}: quote each key of values, e.g. 'Y': true")
            folded = value_key(key)
            if folded in keys:
                raise ValueError(f"value '{key}' is listed twice (case and spaces are ignored)")
            keys[folded] = value
        return keys

    @field_validator("split")
    @classmethod
    def _separator(cls, given: str | None) -> str | None:
        if given is not None and not 1 <= len(given.strip() or given) <= 3:
            raise ValueError("split is a separator of 1 to 3 characters, such as ';'")
        return given

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.field is None and self.codes is None and self.measure is None:
            raise ValueError(
                "give the field it feeds (field:), a code system (codes:) or a measure"
            )
        if self.measure is not None and self.field is not None:
            raise ValueError("a measure (weight or height) gives the BMI; it takes no field")
        if self.measure is not None:
            table = UNITS_BY_MEASURE[self.measure]
            if self.unit not in table:
                raise ValueError(f"{self.measure} needs a unit: one of {', '.join(table)}")
        elif self.unit is not None:
            spec = FIELDS_BY_NAME[self.field] if self.field else None
            table = UNITS_BY_FIELD_UNIT.get(spec.unit if spec else "", {})
            if self.unit not in table:
                raise ValueError(
                    f"unit '{self.unit}' cannot be converted to {self.field}"
                    + (f"; one of {', '.join(table)}" if table else " (a unit of mm only)")
                )
        if (self.values or self.blank is not None) and self.field is None:
            raise ValueError("values and blank need the field they give (field:)")
        if self.field is not None:
            checked = {}
            for key, value in self.values.items():
                try:
                    checked[key] = None if value is None else _checked_value(self.field, value)
                except ValueError as exc:
                    raise ValueError(f"values: {escape_text(key)}: {exc}") from None
            object.__setattr__(self, "values", checked)
            if self.blank is not None:
                try:
                    object.__setattr__(self, "blank", _checked_value(self.field, self.blank))
                except ValueError as exc:
                    raise ValueError(f"blank: {exc}") from None
        return self


class MappingFile(BaseModel):
    """A whole mapping file, as written (docs/mapping.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    columns: dict[str, ColumnSpec]
    constants: dict[str, Scalar] = {}
    precedence: dict[str, list[str]] = {}
    ignore: list[str] = []

    @field_validator("columns", mode="before")
    @classmethod
    def _text_columns(cls, given: Any) -> Any:
        if not isinstance(given, dict):
            return given
        for key in given:
            if not isinstance(key, str):
                raise ValueError(f"column {key!r}: quote each column name")
        # `Gender: sex` is short for `Gender: {field: sex}`
        return {k: {"field": v} if isinstance(v, str) else v for k, v in given.items()}

    @field_validator("constants")
    @classmethod
    def _constant_values(cls, given: dict[str, Scalar]) -> dict[str, Scalar]:
        checked = {}
        for name, value in given.items():
            try:
                checked[_check_field(name)] = _checked_value(name, value)
            except ValueError as exc:
                raise ValueError(f"{escape_text(name)}: {exc}") from None
        return checked

    @model_validator(mode="after")
    def _sources(self) -> MappingFile:
        specs = self.specs
        fed: dict[str, list[str]] = {}
        for column, spec in specs.items():
            if spec.field is not None:
                fed.setdefault(spec.field, []).append(column)
        problems = []
        for name, columns in fed.items():
            stated = self.precedence.get(name)
            if len(columns) > 1 and stated is None:
                problems.append(
                    f"columns {', '.join(map(repr, columns))} all feed {name}: say which comes "
                    f"first under precedence: {{{name}: [{', '.join(columns)}]}}"
                )
        for name, stated in self.precedence.items():
            _check_field(name)
            if sorted(stated) != sorted(fed.get(name, [])):
                problems.append(
                    f"precedence of {name} lists {', '.join(map(repr, stated))}; it must list "
                    f"each column that feeds {name} once: {', '.join(map(repr, fed.get(name, [])))}"
                )
        measures = [s.measure for s in specs.values() if s.measure]
        if measures and sorted(measures) != sorted(MEASURES):
            problems.append("give one weight column and one height column, or neither")
        if measures and "bmi" in fed:
            problems.append("bmi is given by a column and by weight and height: keep one of them")
        both = sorted(set(self.ignore) & set(self.columns))
        if both:
            problems.append(f"columns both mapped and ignored: {', '.join(both)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def specs(self) -> dict[str, ColumnSpec]:
        """Every source column and what it gives."""
        return self.columns


@dataclass(frozen=True)
class _Source:
    column: str
    spec: ColumnSpec


class ColumnMapping:
    """A checked mapping file, ready to apply to rows (immutable; safe across threads)."""

    def __init__(self, spec: MappingFile, sha256: str, source: str = "<mapping>") -> None:
        self.spec = spec
        self.sha256 = sha256
        self.source = source
        specs = spec.specs
        order = {c: float(n) for n, c in enumerate(specs)}
        for stated in spec.precedence.values():  # the stated order, where the first one stood
            base = min(order[c] for c in stated)
            for rank, column in enumerate(stated):
                order[column] = base + rank / (len(stated) + 1)
        sources = tuple(_Source(c, s) for c, s in sorted(specs.items(), key=lambda i: order[i[0]]))
        self._consumed = frozenset(specs) | frozenset(spec.ignore)
        self._icd: dict[str, list[tuple[str, Any]]] = {}
        if any(s.codes for s in specs.values()):
            from engine.fhir.terminology import load_terminology  # only a coded column needs it

            self._icd = load_terminology().icd10cm
        # the common line, a rename of the one source of its field, is copied as it is; every
        # other source goes through found-and-compared (apply)
        shared = {f for pairs in self._icd.values() for f, _ in pairs} | set(spec.constants)
        fed = Counter(s.spec.field for s in sources if s.spec.field)
        self._renames = tuple(
            (s.column, s.spec.field)
            for s in sources
            if s.spec.field
            and s.spec.field not in shared
            and fed[s.spec.field] == 1
            and s.spec == ColumnSpec(field=s.spec.field)
        )
        renamed = {column for column, _ in self._renames}
        self._sources = tuple(s for s in sources if s.column not in renamed)
        self._renamed_fields = frozenset(f for _, f in self._renames)

    def __eq__(self, other: object) -> bool:  # a worker's config compares the mapping it holds
        return isinstance(other, ColumnMapping) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)

    # --- what it reads and gives -------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        """Fields the mapping can give, in data-dictionary order."""
        given = {s.spec.field for s in self._sources if s.spec.field} | self._renamed_fields
        given |= set(self.spec.constants)
        if any(s.spec.measure for s in self._sources):
            given.add("bmi")
        for source in self._sources:
            if source.spec.codes:
                given |= {f for pairs in self._icd.values() for f, _ in pairs}
        return tuple(f for f in INPUT_FIELDS if f in given)

    def output_columns(self, columns: Sequence[str]) -> list[str]:
        """The columns a row has after mapping: unmapped ones as they are, then each field the
        mapping gives (a column already named as a field is a source of it, listed once)."""
        kept = [c for c in columns if c not in self._consumed]
        return kept + [f for f in self.fields if f not in kept]

    def sources_of(self, name: str) -> list[str]:
        """The columns that feed a field by name (`Record ID: case_id`), in precedence order."""
        direct = [column for column, field in self._renames if field == name]
        return direct + [s.column for s in self._sources if s.spec.field == name]

    def read_columns(self, columns: Sequence[str]) -> list[str]:
        """The columns of an input the mapping reads or ignores by name (the rest pass on)."""
        return [c for c in columns if c in self._consumed]

    def view(
        self, columns: Sequence[str], sample: Sequence[Mapping[str, Any]]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """An input's columns and sample rows as they are after mapping, for the column checks
        a batch makes before screening (rows the mapping refuses are left out of the sample)."""
        mapped = []
        for row in sample:
            try:
                mapped.append(self.apply(row))
            except CaseInputError:
                continue
        return self.output_columns(columns), mapped

    def identifier_problems(
        self,
        source: str,
        columns: Sequence[str],
        sample: Sequence[Mapping[str, Any]],
        allowed: Collection[str],
    ) -> list[str]:
        """The identifier guard on the columns the mapping reads (an `MRN: case_id` line does
        not let a record number through): named, since the mapping file names them."""
        read = self.read_columns(columns)
        return identifier_lines(source, read, sample, allowed, "read by the mapping")

    # --- applying it ------------------------------------------------------------------------------

    def apply(
        self, row: Mapping[str, Any], source: str = "<input>", number: int | None = None
    ) -> dict[str, Any]:
        """One raw row as case values; CaseInputError naming the columns when they disagree."""
        out = {k: v for k, v in row.items() if k not in self._consumed}
        found: dict[str, list[tuple[str, Any]]] = {}
        problems: list[CaseProblem] = []
        weight = height = None
        clash = not self._renamed_fields.isdisjoint(out)  # a column named as a renamed field
        get = row.get
        for column, name in self._renames:
            raw = get(column)
            if raw is None or raw == "" or _blank(raw):  # the first two: most blanks, fast
                continue
            if clash:
                found.setdefault(name, []).append((column, raw))
            else:
                out[name] = raw
        for item in self._sources:
            column, spec = item.column, item.spec
            raw = row.get(column)
            if _blank(raw):
                if spec.blank is not None and spec.field:
                    found.setdefault(spec.field, []).append((column, spec.blank))
                continue
            if spec.measure is not None:
                measured = parse_number(raw)
                if measured is None:
                    problems.append(_not_a_number("bmi", column, raw))
                elif spec.measure == "weight":
                    weight = measured * TO_KG[str(spec.unit)]
                else:
                    height = measured * TO_M[str(spec.unit)]
                continue
            for name, value in self.place(spec, raw):
                if name == spec.field and spec.unit is not None:
                    converted = parse_number(value)
                    if converted is None:
                        problems.append(_not_a_number(name, column, raw))
                        continue
                    value = round(converted * TO_MM[spec.unit], CONVERTED_DIGITS)
                found.setdefault(name, []).append((column, value))
        if weight is not None and height is not None:
            bmi = _bmi(weight, height)
            if bmi is None:
                problems.append(CaseProblem("bmi", "the weight and height given make no BMI"))
            else:
                found.setdefault("bmi", []).append(("weight and height", bmi))
        for name, value in self.spec.constants.items():
            found.setdefault(name, []).append((CONSTANTS, value))
        for name, given in found.items():
            if not _blank(out.get(name)):  # a column named as the field: a source like any
                given.insert(0, (name, out[name]))
            first_column, first = given[0]
            for column, value in given[1:]:
                if not _same(name, first, value):
                    problems.append(_disagreement(name, first_column, first, column, value))
                    break
            out[name] = first
        if problems:
            case_id = out.get("case_id")
            raise CaseInputError(
                source,
                problems,
                row=number,
                case_id=shown_case_id(str(case_id)) if case_id else None,
            )
        return out

    def place(self, spec: ColumnSpec, raw: Any) -> list[tuple[str, Any]]:
        """(field, value) pairs one cell gives: from its values map, its code system, or as is."""
        parts = [p for p in str(raw).split(spec.split) if p.strip()] if spec.split else [raw]
        placed: list[tuple[str, Any]] = []
        text: list[Any] = []  # parts that are not codes: values for the field
        for part in parts:
            key = value_key(part)
            if spec.field is not None and key in spec.values:
                placed.append((spec.field, spec.values[key]))
                continue
            coded = self._coded(part) if spec.codes else None
            if coded is None:
                text.append(part)
            else:  # a code the lists do not know ([]) sets nothing
                placed.extend(coded)
        if spec.field is not None and all(name != spec.field for name, _ in placed):
            if text:  # validation decides it, and names the field if it cannot
                placed.append((spec.field, text[0] if len(text) == 1 else raw))
            elif not placed:  # only codes, none known: refused by validation, never dropped
                placed.append((spec.field, raw))
        return [(n, v) for n, v in placed if v is not None]

    def _coded(self, value: Any) -> list[tuple[str, Any]] | None:
        """The (field, value) pairs an ICD-10-CM code sets ([] for a code the lists do not
        know), or None when the value is not shaped like a code."""
        match = _ICD_CODE.fullmatch(str(value).strip().upper())
        if match is None:
            return None
        plain = match[1] + (match[2] or "")
        found: dict[str, Any] = {}  # a code is a descendant of every listed prefix of it
        for end in range(len(plain), 2, -1):  # M80.08XA: fracture (M80.08), osteoporosis (M80)
            for name, value in self._icd.get(plain[:end], ()):
                found.setdefault(name, value)
        return list(found.items())


def _bmi(kg: float, metres: float) -> float | None:
    """kg / m², to one decimal; None for a height or weight no person has (0, negative, huge)."""
    if kg <= 0 or metres <= 0:
        return None
    try:
        bmi = kg / metres**2
    except (OverflowError, ZeroDivisionError):  # 1e-200 m squared is 0.0
        return None
    return round(bmi, BMI_DIGITS) if math.isfinite(bmi) else None


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def parse_number(value: object) -> float | None:
    """A number from a cell: a decimal point or a decimal comma, nothing else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = value
    else:
        text = str(value).strip()
        if len(text) > 64 or not _NUMBER.fullmatch(text):
            return None
        number = float(text.replace(",", "."))
    try:
        return float(number) if math.isfinite(number) else None
    except OverflowError:  # an integer beyond any float
        return None


def _canonical(name: str, value: Any) -> Any:
    """A value as validation reads it, to compare two sources (raw text when it is invalid)."""
    try:
        _, values = validate_case({"case_id": "compare", name: value}, "<mapping>")
    except CaseInputError:
        return value_key(value)
    return values.get(name)


def _same(name: str, one: Any, other: Any) -> bool:
    if one == other:
        return True
    return bool(_canonical(name, one) == _canonical(name, other))


def _shown(name: str, value: Any) -> str:
    spec = FIELDS_BY_NAME.get(name)
    if showable(value, spec.values if spec else ()):
        return repr(value) if isinstance(value, str) else json.dumps(value)
    return "a value withheld"


def _label(column: str) -> str:
    return "the constants" if column == CONSTANTS else f"column '{escape_text(column)}'"


def _disagreement(name: str, first: str, one: Any, second: str, other: Any) -> CaseProblem:
    if first == second:
        return CaseProblem(
            name,
            f"{_label(first)} holds both {_shown(name, one)} and {_shown(name, other)}; "
            "correct the row, or map one of them differently",
        )
    return CaseProblem(
        name,
        f"{_label(first)} gives {_shown(name, one)} but {_label(second)} gives "
        f"{_shown(name, other)}; correct the row, or map one of them differently",
    )


def _not_a_number(name: str, column: str, raw: Any) -> CaseProblem:
    shown = _shown(name, raw) if showable(raw) else "the value given"
    return CaseProblem(name, f"{_label(column)}: {shown} is not a number")


def identifier_lines(
    source: str,
    columns: Sequence[str],
    sample: Sequence[Mapping[str, Any]],
    allowed: Collection[str],
    why: str,
) -> list[str]:
    """The identifier guard's findings on columns a mapping names, one error line each."""
    return [
        f"{source}: column '{escape_text(f.column)}' ({why}) looks like a direct identifier "
        f"({f.kind}): {f.reason}; remove it, or pass --allow-column "
        f"'{escape_text(f.column)}' if it is not one"
        for f in check_deidentified(columns, sample, allowed)
    ]


# --- loading ---------------------------------------------------------------------------------


def load_mapping(given: str | Path | Mapping[str, Any]) -> ColumnMapping:
    """A mapping from a YAML (or JSON) file, or from the same structure as a dict; checked."""
    if isinstance(given, Mapping):
        data: Any = dict(given)
        text = json.dumps(data, sort_keys=True, default=str)
        source = "<mapping>"
    else:
        source = str(given)
        try:
            text = read_text(source, "mapping", MAX_MAPPING_BYTES)
        except CaseInputError as exc:
            raise MappingError([f"{source}: {p.message}" for p in exc.problems]) from None
        try:
            data = parse_yaml(text).data
        except DuplicateKeyError as exc:
            line = f":{exc.line}" if exc.line else ""
            raise MappingError([f"{source}{line}: {exc}"]) from None
        except YamlError as exc:
            line = f":{exc.line}" if exc.line else ""
            raise MappingError([f"{source}{line}: {exc}"]) from None
        except (RecursionError, ValueError):
            raise MappingError([f"{source}: nested too deeply or a value too long"]) from None
    if not isinstance(data, dict):
        raise MappingError([f"{source}: expected a mapping with a columns: section"])
    try:
        spec = MappingFile.model_validate(data)
    except ValidationError as exc:
        raise MappingError(
            [f"{source}: {_where(err['loc'])}{_message(err['msg'])}" for err in exc.errors()]
        ) from None
    return ColumnMapping(spec, hashlib.sha256(text.encode()).hexdigest(), source)


def _message(text: str) -> str:
    return text.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _where(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the file's keys (`columns: Gender: values:`)."""
    keys = [
        str(k) for k in loc if k not in ("str", "ColumnSpec") and not str(k).startswith("function-")
    ]
    return "".join(f"{escape_text(k)}: " for k in keys)
