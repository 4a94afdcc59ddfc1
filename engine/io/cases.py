"""Read one case (YAML or JSON file, stdin, or --set pairs) and validate it."""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from engine.dictionary import (
    DERIVED_FIELDS,
    FIELDS_BY_NAME,
    INPUT_FIELDS,
    SETTING_FIELDS,
    FieldType,
)
from engine.errors import CaseInputError, CaseProblem
from engine.io.deid import (
    case_id_identifier_kinds,
    identifier_id_message,
    showable,
    shown_case_id,
    shown_name,
    withheld_reason,
)
from engine.io.normalise import Change, normalise_row, spelling_key
from engine.jsonsource import JsonInputError, RepeatedKeyError, loads_strict, place
from engine.models import Case, Scalar, SiteProfile
from engine.yamlsource import DuplicateKeyError, YamlError, parse_yaml

MAX_CASE_BYTES = 1_000_000
_PROBLEM_WORDS = {
    "greater_than_equal": "is out of range",
    "less_than_equal": "is out of range",
    "literal_error": "is not a valid value",
    "int_from_float": "is not a whole number",
    "int_parsing": "is not a whole number",
    "int_type": "is not a whole number",
    "float_parsing": "is not a number",
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "bool_parsing": "is not a boolean",
    "bool_type": "is not a boolean",
    "string_type": "is not text",
    "string_pattern_mismatch": "is not a valid id",
    "value_error": "is not valid",
}


_TYPE_WORDS = {
    FieldType.boolean: "is not a boolean",
    FieldType.integer: "is not a whole number",
    FieldType.number: "is not a number",
}


_PLAIN = frozenset({str, int, float, bool})
_TEXT = frozenset({str})


def validate_case(
    raw: Mapping[str, Any], source: str, row: int | None = None
) -> tuple[str, dict[str, Scalar]]:
    """Validate raw case values; return the case_id and the known values (nulls dropped).

    Values are normalised first (engine.io.normalise: `Male`, `HNP`, `L4/5`, `Y`, `31,5`), the
    same for every entry point; what cannot be placed is refused with field and reason.
    """
    case_id, values, _ = validate_counted(raw, source, row)
    return case_id, values


def validate_counted(
    raw: Mapping[str, Any], source: str, row: int | None = None
) -> tuple[str, dict[str, Scalar], list[Change]]:
    """validate_case, with the values the normaliser changed (a batch counts them per field)."""
    problems: list[CaseProblem] = []
    # the common case, checked in one pass: text keys and plain scalar values
    clean: Mapping[str, Any] = {
        k: v
        for k, v in raw.items()
        if v is not None and (type(v) is not str or v != "" or k == "case_id")
    }
    if not (_PLAIN.issuperset(map(type, clean.values())) and _TEXT.issuperset(map(type, raw))):
        clean = {}
        for key, value in raw.items():
            if not isinstance(key, str):
                problems.append(CaseProblem(None, f"field names must be text, got {key!r}"))
            elif isinstance(value, dict | list | tuple | set):
                problems.append(CaseProblem(key, "expected a single value, got a nested structure"))
            elif value is not None and not (
                isinstance(value, str) and value == "" and key != "case_id"
            ):
                clean[key] = value
    clean, changes, contradictions = normalise_row(clean)
    problems.extend(contradictions)
    try:
        case = Case.model_validate(clean)
    except ValidationError as exc:
        problems.extend(_problem(err) for err in exc.errors())
    else:
        kinds = case_id_identifier_kinds(str(clean["case_id"]))
        if kinds:  # a valid id in form, but an identifier: a date, a phone number, a name...
            problems.append(CaseProblem("case_id", identifier_id_message(kinds)))
    if problems:
        case_id = shown_case_id(clean.get("case_id", raw.get("case_id")))
        raise CaseInputError(source, problems, row=row, case_id=case_id)
    values = case.model_dump(exclude_none=True)
    return values.pop("case_id"), values, changes


def _problem(err: Any) -> CaseProblem:
    loc = err["loc"]
    name = str(loc[0]) if loc else None
    value = err.get("input")
    if err["type"] == "extra_forbidden" and name is not None:
        if name in DERIVED_FIELDS:
            return CaseProblem(
                name, "is a derived attribute computed by the rules; remove it from the input", None
            )
        alias = FIELD_ALIASES.get(name.strip().lower())
        close = [alias] if alias else difflib.get_close_matches(name, INPUT_FIELDS, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        shown = shown_name(name, INPUT_FIELDS)
        if shown is None:
            return CaseProblem(None, f"unknown field (name withheld: it may be data){hint}")
        return CaseProblem(None, f"unknown field '{shown}'{hint}")
    if err["type"] == "missing":
        return CaseProblem(name, "is required")
    spec = FIELDS_BY_NAME.get(name or "")
    words = _PROBLEM_WORDS.get(err["type"], "is not valid")
    if err["type"] == "value_error" and spec is not None:  # raised by our before-validators
        words = _TYPE_WORDS.get(spec.type, words)
    expected = f"; expected {spec.expected()}" if spec else ""
    hint = ""
    if spec is not None and spec.values and isinstance(value, str) and len(value) <= 100:
        hint = _enum_hint(value, spec.values)
    shown = _show(value, name, spec.values if spec else ())
    if name == "case_id" and shown is None and isinstance(value, str | int):
        kinds = case_id_identifier_kinds(str(value)[:4096])  # a YAML or JSON integer too
        if kinds:  # not an id in form, and an identifier: say how to pseudonymise it
            return CaseProblem(name, f"the value given {words}; {identifier_id_message(kinds)}")
    if shown is None:  # the row is still refused: field and reason named, value withheld
        return CaseProblem(
            name, f"the value given {words}{expected}{hint} ({withheld_reason(value)})"
        )
    return CaseProblem(name, f"{shown} {words}{expected}{hint}", value)


# Field names a clinician types for a data-dictionary field: a "did you mean", never a rename.
FIELD_ALIASES = {
    "age": "age_years",
    "gender": "sex",
    "level": "lowest_level",
    "spinal_level": "lowest_level",
    "procedure": "planned_procedure",
    "technique": "mis_technique",
    "surgeon_experience": "surgeon_mis_cases",
    "slip": "slip_percent",
    "sva": "sva_mm",
    "pi": "pelvic_incidence_deg",
    "ll": "lumbar_lordosis_deg",
    "cobb": "coronal_cobb_deg",
    "tlics": "tlics_score",
    "sins": "sins_score",
    "cauda_equina": "cauda_equina_syndrome",
    "ces": "cauda_equina_syndrome",
}
_SEGMENT = re.compile(r"^([a-z])(\d+)\1(\d+)$")  # l4l5: also typed L4-5


def _keys(choice: str) -> set[str]:
    key = spelling_key(choice)
    segment = _SEGMENT.match(key)
    return {key, f"{segment[1]}{segment[2]}{segment[3]}"} if segment else {key}


def _enum_hint(value: str, choices: tuple[str, ...]) -> str:
    """The nearest valid value, compared as spelt by spelling_key; several equally near (or a
    prefix of several) are listed, never one picked."""
    key = spelling_key(value)
    prefixed = [c for c in choices if any(k.startswith(key) for k in _keys(c))] if key else []
    if len(prefixed) > 1:
        return f" (ambiguous: one of {', '.join(prefixed)})"
    by_key = {k: c for c in choices for k in _keys(c)}
    close = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    if not close:
        return ""
    best = difflib.SequenceMatcher(None, key, close[0]).ratio()
    tied = sorted(
        {by_key[k] for k in close if difflib.SequenceMatcher(None, key, k).ratio() == best}
    )
    if len(tied) > 1:
        return f" (ambiguous: one of {', '.join(tied)})"
    return f" (did you mean '{tied[0]}'?)"


def _show(value: Any, name: str | None, choices: tuple[str, ...]) -> str | None:
    """The value as an error shows it, or None when it might identify someone."""
    if name == "case_id":
        shown_id = shown_case_id(value)
        return f"'{shown_id}'" if shown_id is not None else None
    if not showable(value, choices):
        return None
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_text(path: str, what: str = "case", limit: int = MAX_CASE_BYTES) -> str:
    """Read a file (or stdin for '-') as UTF-8 text, refusing binary, empty input and input
    larger than `limit` bytes (a case: 1 MB; a FHIR Bundle may pass a larger limit)."""
    source = "<stdin>" if path == "-" else path
    try:  # never more than the limit: /dev/zero or a huge file must not fill the memory
        if path == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as handle:
                raw = handle.read(limit + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CaseInputError(
            source, [CaseProblem(None, f"cannot read {what} file: {reason}")]
        ) from None
    if len(raw) > limit:
        shown = f"{limit // 2**20} MB" if limit % 2**20 == 0 else f"{round(limit / 1e6)} MB"
        raise CaseInputError(source, [CaseProblem(None, f"{what} file is larger than {shown}")])
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CaseInputError(
            source,
            [CaseProblem(None, f"{what} file is not UTF-8 text (it is UTF-16); save it as UTF-8")],
        )
    if b"\x00" in raw:
        raise CaseInputError(
            source, [CaseProblem(None, f"{what} file is binary, not YAML or JSON")]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CaseInputError(
            source, [CaseProblem(None, f"{what} file is not UTF-8 text")]
        ) from None
    if not text.strip():
        raise CaseInputError(source, [CaseProblem(None, f"{what} file is empty")])
    return text


def parse_mapping(text: str, source: str, what: str = "case") -> dict[str, Any]:
    """Parse YAML or JSON text that must hold one mapping of field names to values."""
    try:
        data = loads_strict(text) if source.endswith(".json") else parse_yaml(text).data
    except JsonInputError as exc:
        raise CaseInputError(source, [CaseProblem(None, json_problem(exc))]) from None
    except DuplicateKeyError as exc:
        key = shown_name(exc.key, INPUT_FIELDS)
        named = f"'{key}'" if key is not None else "(name withheld)"
        line = f" at line {exc.line}" if exc.line else ""
        problem = CaseProblem(
            None, f"key {named} is given more than once{line}; give each field once"
        )
        raise CaseInputError(source, [problem]) from None
    except json.JSONDecodeError as exc:
        problem = CaseProblem(None, f"malformed JSON at line {exc.lineno}: {exc.msg}")
        raise CaseInputError(source, [problem]) from None
    except YamlError as exc:
        line = f" at line {exc.line}" if exc.line else ""
        raise CaseInputError(source, [CaseProblem(None, f"{exc}{line}")]) from None
    except (RecursionError, ValueError):  # nested too deeply, or an integer with 4,300+ digits
        problem = CaseProblem(None, f"{what} file is nested too deeply or holds a value too long")
        raise CaseInputError(source, [problem]) from None
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "nothing"
        problem = CaseProblem(None, f"expected a mapping of field names to values, got {kind}")
        raise CaseInputError(source, [problem])
    return data


def json_problem(exc: JsonInputError) -> str:
    """A refused JSON document in words: the place and the key by name only, never a value."""

    def show(key: str) -> str | None:
        return shown_name(key, INPUT_FIELDS)

    if isinstance(exc, RepeatedKeyError):
        where = f" at {place((*exc.path, exc.key or ''), show)}" if exc.path else ""
        key = show(exc.key or "")
        named = f"'{key}'" if key is not None else "(name withheld)"
        return f"key {named} is given more than once{where}; give each field once"
    where = f" at {place(exc.path, show)}" if exc.path else ""
    return f"{exc}{where}; give a number or leave the field out"


def read_case(path: str) -> tuple[str, dict[str, Scalar]]:
    """Read and validate one case file (YAML or JSON), or stdin for '-'."""
    source = "<stdin>" if path == "-" else path
    return validate_case(parse_mapping(read_text(path), source), source)


def parse_set_options(pairs: list[str]) -> dict[str, Any]:
    """Turn repeated `--set field=value` options into raw case values (YAML scalars)."""
    raw: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            shown = shown_name(pair.strip(), INPUT_FIELDS)
            got = f", got {shown!r}" if shown is not None else ""
            problem = CaseProblem(None, f"--set expects FIELD=VALUE{got}")
            raise CaseInputError("--set", [problem])
        try:
            value = parse_yaml(text).data if text.strip() else None
        except (YamlError, RecursionError, ValueError):
            value = text
        raw[name.strip()] = value
    raw.setdefault("case_id", "cli-case")
    return raw


PER_TECHNIQUE_SETTINGS = ("surgeon_mis_cases",)  # may be given per mis_technique


def read_site(path: str) -> SiteProfile:
    """Read a site profile: setting fields applied to every case that lacks them.

    `surgeon_mis_cases` may also be a mapping of mis_technique to a number of cases
    (`{mis_tlif: 80, endoscopic_discectomy: 5}`); engine.screen.prepare picks the case's.
    """
    text = read_text(path, "site profile")
    return check_site(parse_mapping(text, path, "site profile"), path)


def check_site(settings: Mapping[str, Any], source: str = "<site>") -> SiteProfile:
    """Validate a site profile given as a mapping, as `--site FILE` is (read_site)."""
    path = source
    data = dict(settings)
    problems = [
        CaseProblem(
            None,
            f"{_quoted_name(key)} is not a setting field; "
            f"a site profile holds only: {', '.join(SETTING_FIELDS)}",
        )
        for key in data
        if key not in SETTING_FIELDS
    ]
    if problems:
        raise CaseInputError(path, problems)
    per_technique = {
        key: data.pop(key) for key in PER_TECHNIQUE_SETTINGS if isinstance(data.get(key), dict)
    }
    _, values = validate_case({**data, "case_id": "site"}, path)
    profile: SiteProfile = dict(values)
    for key, given in per_technique.items():
        profile[key] = _per_technique(key, given, path)
    return profile


def _per_technique(key: str, given: dict[Any, Any], path: str) -> dict[str, int]:
    """A setting given per technique: each key a mis_technique, each value valid for `key`."""
    techniques = FIELDS_BY_NAME["mis_technique"].values
    if not given:
        problem = CaseProblem(key, "is an empty mapping; give one number or one per mis_technique")
        raise CaseInputError(path, [problem])
    problems: list[CaseProblem] = []
    numbers: dict[str, int] = {}
    for technique, value in given.items():
        if technique not in techniques:
            close = difflib.get_close_matches(str(technique), techniques, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            shown = _show(technique, "mis_technique", techniques)
            problems.append(
                CaseProblem(
                    key,
                    f"{shown or 'a key (withheld: it may be data)'} is not a mis_technique{hint}; "
                    f"expected one of {', '.join(techniques)}",
                )
            )
            continue
        try:
            _, checked = validate_case({"case_id": "site", key: value}, path)
        except CaseInputError as exc:
            problems += [
                CaseProblem(f"{key}.{technique}", p.message, p.value) for p in exc.problems
            ]
            continue
        if key not in checked:  # null: unknown for this technique, as if not listed
            continue
        number = checked[key]
        assert isinstance(number, int)  # noqa: S101  # an integer field, validated above
        numbers[str(technique)] = number
    if problems:
        raise CaseInputError(path, problems)
    return numbers


def _quoted_name(key: object) -> str:
    shown = shown_name(key, INPUT_FIELDS)
    return f"'{shown}'" if shown is not None else "a key (name withheld: it may be data)"
