"""`miss-screen inspect`: a scan report of a cohort before it is screened, and a draft mapping.

For each column: the field it seems to feed (by its name, a synonym from columns.yaml or a
close spelling, with a confidence; by its values when they are ICD-10-CM codes), the share of
its values that place in that field, and, for enumerated and boolean fields only, the most
common values that do not (only values the identifier guard lets through: every other value is
a count). For each field of the data dictionary: the columns that feed it and how many rules
that can change a verdict (red flag or major) stay unevaluable while none does. The cohort is
read in chunks (bounded memory); `draft_mapping` writes what the scan found as a mapping file
the researcher edits (docs/mapping.md). Like OHDSI's WhiteRabbit, but knowing what a screen needs.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, FieldType
from engine.errors import CaseInputError, LinesError
from engine.io.cases import FIELD_ALIASES, validate_case
from engine.io.deid import escape_text, identifier_kinds, looks_like_person, showable
from engine.io.tables import SAMPLE_ROWS, InputFormat, TableReader, detect_format
from engine.mapping.spec import (
    TO_KG,
    TO_M,
    UNITS_BY_FIELD_UNIT,
    ColumnMapping,
    ColumnSpec,
    MappingFile,
    identifier_lines,
    parse_number,
)
from engine.rules.ruleset import Ruleset
from engine.yamlsource import parse_yaml

SYNONYMS_FILE = Path(__file__).with_name("columns.yaml")
FUZZY_CUTOFF = 0.8  # a name this close to a field's name or synonym is suggested, as fuzzy
DRAFT_CONFIDENCE = 0.8  # the draft maps a column matched at least this well ...
DRAFT_PLACED = 0.9  # ... whose values place at least this often (else it is left commented)
CODED_SHARE = 0.5  # a column whose sampled values are this often ICD-10-CM codes is coded
TOP_VALUES = 10  # unplaceable values shown per column
MAX_DISTINCT = 5000  # distinct unplaceable values counted per column; the rest only as "other"
VERDICT_SEVERITIES = ("red_flag", "major")
_UNIT = re.compile(r"^(?P<name>.*?)\s*[(\[]\s*(?P<unit>[^()\[\]]{1,12})\s*[)\]]\s*$")
_KNOWN_UNITS = {"lb", "lbs", "in", "cm", "mm", "m", "kg", "g", "%", "deg", "kg/m2", "kg/m²"}
_KNOWN_UNITS |= {"years", "weeks", "days"}
_UNIT_ALIASES = {"lbs": "lb", "kg/m²": "kg/m2"}
_ICD_LIKE = re.compile(r"[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?")
_SPLITS = (";", "|", ",")


class InspectError(LinesError):
    """A cohort inspect refuses (identifier-named columns), one line per problem."""


def name_key(text: str) -> str:
    """A column or field name as compared: letters and digits only, lower case."""
    return re.sub(r"[^0-9a-z%]+", "", text.lower()).replace("tumour", "tumor")


@functools.cache
def _synonyms() -> tuple[dict[str, str], dict[str, str]]:
    """(name key -> field, name key -> measure) from columns.yaml and the field aliases."""
    data = parse_yaml(SYNONYMS_FILE.read_text(encoding="utf-8")).data
    fields = {name_key(f): f for f in INPUT_FIELDS}
    for alias, target in FIELD_ALIASES.items():
        fields.setdefault(name_key(alias), target)
    for target, names in data["fields"].items():
        for name in names:
            fields.setdefault(name_key(str(name)), target)
    measures = {name_key(str(n)): m for m, names in data["measures"].items() for n in names}
    return fields, measures


@dataclass(frozen=True)
class NameMatch:
    """What a column's name says: a field (or a measure for the BMI), how, how surely, a unit."""

    field: str | None = None
    measure: str | None = None
    how: str = "none"  # exact, synonym, fuzzy, codes, none
    confidence: float = 0.0
    unit: str | None = None


def match_name(column: str) -> NameMatch:
    """The field a column name means: exact (1.0), a synonym (0.9) or a close spelling."""
    unit = None
    parsed = _UNIT.match(column)
    base = column
    if parsed and parsed["unit"].strip().lower() in _KNOWN_UNITS:
        base, unit = parsed["name"], parsed["unit"].strip().lower()
        unit = _UNIT_ALIASES.get(unit, unit)
    key = name_key(base)
    fields, measures = _synonyms()
    if key in measures:
        return NameMatch(measure=measures[key], how="synonym", confidence=0.9, unit=unit)
    exact = {name_key(f): f for f in INPUT_FIELDS}
    if key in exact:
        return NameMatch(exact[key], how="exact", confidence=1.0, unit=unit)
    if key in fields:
        return NameMatch(fields[key], how="synonym", confidence=0.9, unit=unit)
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=FUZZY_CUTOFF)
    if close:
        ratio = difflib.SequenceMatcher(None, key, close[0]).ratio()
        return NameMatch(fields[close[0]], how="fuzzy", confidence=round(ratio, 2), unit=unit)
    return NameMatch(unit=unit)


@dataclass
class ColumnScan:
    """One column: what it maps to and how its values fare there."""

    column: str
    match: NameMatch
    spec: ColumnSpec | None = None
    values: int = 0  # non-blank cells
    placed: int = 0  # cells whose every value places in the field
    unplaced: Counter[str] = field(default_factory=Counter)  # showable values of enum/boolean
    unplaced_other: int = 0  # values not shown (free text, numbers, or past MAX_DISTINCT)

    @property
    def placed_pct(self) -> float | None:
        return round(100 * self.placed / self.values, 1) if self.values else None

    @property
    def gives(self) -> str | None:
        """The field (or `bmi via weight`) the column feeds, as a report names it."""
        if self.spec is None:
            return None
        if self.spec.measure:
            return f"bmi (as {self.spec.measure})"
        if self.spec.field:
            return self.spec.field
        return "codes only"

    def as_json(self) -> dict[str, Any]:
        return {
            "column": escape_text(self.column),
            "field": self.gives,
            "how": self.match.how if self.spec is not None else "none",
            "confidence": self.match.confidence if self.spec is not None else 0.0,
            "unit": self.spec.unit if self.spec is not None else None,
            "codes": self.spec.codes if self.spec is not None else None,
            "split": self.spec.split if self.spec is not None else None,
            "values": self.values,
            "placed": self.placed,
            "placed_pct": self.placed_pct,
            "unplaced_top": [{"value": v, "count": n} for v, n in self.top_unplaced],
            "unplaced_not_shown": self.unplaced_other,
        }

    @property
    def top_unplaced(self) -> list[tuple[str, int]]:
        return sorted(self.unplaced.items(), key=lambda item: (-item[1], item[0]))[:TOP_VALUES]


@dataclass
class FieldScan:
    field: str
    columns: list[str]
    verdict_rules: int  # red-flag and major rules that read it (directly or through a derived one)

    def as_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "fed_by": [escape_text(c) for c in self.columns],
            "verdict_rules": self.verdict_rules,
            "unevaluable_without_it": 0 if self.columns else self.verdict_rules,
        }


@dataclass
class ScanReport:
    source: str
    rows: int
    columns: list[ColumnScan]
    fields: list[FieldScan]
    unreadable: int = 0  # rows that could not be parsed at all (batch would reject them)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.rows,
            "rows_unreadable": self.unreadable,
            "columns": [c.as_json() for c in self.columns],
            "fields": [f.as_json() for f in self.fields],
        }

    @property
    def blocking(self) -> list[FieldScan]:
        """Fields no column feeds that verdict-changing rules read, most rules first."""
        missing = [f for f in self.fields if not f.columns and f.verdict_rules]
        return sorted(missing, key=lambda f: (-f.verdict_rules, f.field))


# --- scanning ------------------------------------------------------------------------------------


def _looks_coded(values: list[Any]) -> tuple[bool, str | None]:
    """Whether sampled values are mostly ICD-10-CM codes, and the separator of several in one."""
    texts = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not texts:
        return False, None
    split = next((s for s in _SPLITS if sum(s in t for t in texts) > 0), None)
    parts = [p.strip().upper() for t in texts for p in (t.split(split) if split else [t])]
    coded = sum(bool(_ICD_LIKE.fullmatch(p)) and not p.isdigit() for p in parts if p)
    if coded < CODED_SHARE * len(parts):
        return False, None
    return True, split if split and any(split in t for t in texts) else None


def suggest(column: str, sample: list[Any]) -> tuple[NameMatch, ColumnSpec | None]:
    """The spec a column seems to want, from its name and its sampled values (or None)."""
    match = match_name(column)
    coded, split = _looks_coded(sample)
    if match.measure is not None:
        units = {"weight": TO_KG, "height": TO_M}[match.measure]
        if match.unit in units:
            return match, ColumnSpec(measure=match.measure, unit=match.unit)  # type: ignore[arg-type]
        return match, None
    target = match.field
    if coded:
        if target not in (None, "diagnosis"):
            target = None
        how = match.how if target else "codes"
        match = NameMatch(target, how=how, confidence=max(match.confidence, 0.9), unit=None)
        return match, ColumnSpec(field=target, codes="icd10cm", split=split)
    if target is None:
        return match, None
    unit = None
    spec = FIELDS_BY_NAME[target]
    if (
        match.unit
        and match.unit in UNITS_BY_FIELD_UNIT.get(spec.unit, {})
        and match.unit != spec.unit
    ):
        unit = match.unit
    return match, ColumnSpec(field=target, unit=unit)


def _places_any(name: str, value: Any) -> bool:
    """_places for any cell: a list or a mapping (JSONL, Parquet) is not a value of a field."""
    return isinstance(value, str | int | float | bool) and _places(name, value)


@functools.lru_cache(maxsize=65536)
def _places(name: str, value: Any) -> bool:  # cached by (field, value): hashable values only
    """Whether a value is valid for a field once read as every input is (the normaliser)."""
    try:
        validate_case({"case_id": "inspect", name: value}, "<inspect>")
    except CaseInputError:
        return False
    return True


def _data_like(column: str, *, strict: bool = False) -> bool:
    """A header cell that is a value (a date, a phone number, a number; with `strict`, a
    name-shaped one too): never shown. Not strict alone: `Primary Dx` is shaped like a name."""
    kinds = looks_like_person(column) if strict else identifier_kinds(column)
    return bool(kinds) or parse_number(column) is not None


def _rows(reader: TableReader) -> Iterator[dict[str, Any] | None]:
    """Every row, None for one that cannot be parsed (a malformed record)."""
    for chunk in reader.chunks(0):
        for _, row in chunk.materialized():
            yield row if isinstance(row, dict) else None


def scan(
    path: str,
    ruleset: Ruleset,
    *,
    input_format: InputFormat | None = None,
    allowed: Collection[str] = (),
) -> ScanReport:
    """Scan a cohort (CSV, JSONL or Parquet), streaming; InspectError on identifier columns."""
    reader = TableReader(path, detect_format(path, input_format))
    sample = reader.sample(SAMPLE_ROWS)
    data_like = [n for n, c in enumerate(reader.columns, 1) if _data_like(c)]
    if data_like:  # then a name-shaped cell is data too (John Smith beside a birth date)
        data_like = [n for n, c in enumerate(reader.columns, 1) if _data_like(c, strict=True)]
        raise InspectError(
            [
                f"{reader.source}: the first line looks like a row of data, not a header "
                f"(columns {', '.join(map(str, data_like[:5]))}); the file needs a header row"
            ]
        )
    problems = identifier_lines(
        reader.source, reader.columns, sample, allowed, "by its name or values"
    )
    if problems:
        raise InspectError(problems)
    scans: list[ColumnScan] = []
    for column in reader.columns:
        match, spec = suggest(column, [row.get(column) for row in sample])
        scans.append(ColumnScan(column, match, spec))
    draft = _draft_specs(scans)
    mapping = ColumnMapping(MappingFile(columns=draft), "", "<draft>") if draft else None
    rows = unreadable = 0
    for row in _rows(reader):
        rows += 1
        if row is None:
            unreadable += 1
            continue
        for scan_ in scans:
            _count(scan_, row.get(scan_.column), mapping)
    return ScanReport(reader.source, rows, scans, _field_scans(scans, ruleset), unreadable)


def _count(scan_: ColumnScan, raw: Any, mapping: ColumnMapping | None) -> None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return
    scan_.values += 1
    spec = scan_.spec
    if spec is None or mapping is None:
        scan_.unplaced_other += 1
        return
    if spec.measure is not None:
        ok = parse_number(raw) is not None
    else:
        pairs = mapping.place(spec, raw)
        if spec.unit is not None:
            ok = bool(pairs) and all(parse_number(v) is not None for _, v in pairs)
        else:
            ok = bool(pairs) and all(_places_any(n, v) for n, v in pairs)
    if ok:
        scan_.placed += 1
        return
    target = FIELDS_BY_NAME.get(spec.field or "")
    enumerated = target is not None and target.type in (FieldType.enum, FieldType.boolean)
    text = str(raw).strip()
    if (
        enumerated
        and showable(text, target.values if target else ())
        and (text in scan_.unplaced or len(scan_.unplaced) < MAX_DISTINCT)
    ):
        scan_.unplaced[text] += 1
    else:
        scan_.unplaced_other += 1


def _verdict_rules(ruleset: Ruleset) -> Counter[str]:
    counts: Counter[str] = Counter()
    for rule in ruleset.rules:
        if rule.meta.severity.value in VERDICT_SEVERITIES:
            counts.update(ruleset.explanation_inputs[rule.id])
    return counts


def _field_scans(scans: list[ColumnScan], ruleset: Ruleset) -> list[FieldScan]:
    rules = _verdict_rules(ruleset)
    fed: dict[str, list[str]] = {}
    for scan_ in scans:
        if scan_.spec is None:
            continue
        if scan_.spec.measure:
            fed.setdefault("bmi", []).append(scan_.column)
        elif scan_.spec.field:
            fed.setdefault(scan_.spec.field, []).append(scan_.column)
    return [FieldScan(name, fed.get(name, []), rules[name]) for name in INPUT_FIELDS]


# --- the draft mapping ---------------------------------------------------------------------------


def _draft_specs(scans: list[ColumnScan]) -> dict[str, ColumnSpec]:
    """The best column per field, matched surely enough; both measures or neither."""
    best: dict[str, ColumnScan] = {}
    chosen: dict[str, ColumnSpec] = {}
    for scan_ in scans:
        spec = scan_.spec
        if spec is None or scan_.match.confidence < DRAFT_CONFIDENCE:
            continue
        if spec.field is None and spec.measure is None:  # codes only: no field to compete for
            chosen[scan_.column] = spec
            continue
        key = spec.field or f"measure:{spec.measure}"
        if key not in best or scan_.match.confidence > best[key].match.confidence:
            best[key] = scan_
    for scan_ in best.values():
        assert scan_.spec is not None  # noqa: S101  # only scans with a spec are kept
        chosen[scan_.column] = scan_.spec
    measures = {s.measure for s in chosen.values() if s.measure}
    if measures != {"weight", "height"} or any(s.field == "bmi" for s in chosen.values()):
        chosen = {c: s for c, s in chosen.items() if not s.measure}
    order = {s.column: n for n, s in enumerate(scans)}
    return dict(sorted(chosen.items(), key=lambda item: order[item[0]]))


def draft_mapping(report: ScanReport) -> str:
    """The scan as a mapping file to edit: sure columns mapped, the rest commented with why."""
    specs = _draft_specs(report.columns)
    kept = {c: s for c, s in specs.items() if _draftable(report, c)}
    lines = [
        f"# Draft mapping of {report.source}, written by `miss-screen inspect --write-map`.",
        "# Check every line against your data dictionary before use; format: docs/mapping.md.",
        "# Columns left out are listed, commented, at the end with the reason.",
        "columns:",
    ]
    by_name = {s.column: s for s in report.columns}
    for column, spec in kept.items():
        scan_ = by_name[column]
        note = f"  # {scan_.match.how} {scan_.match.confidence:.2f}"
        if scan_.placed_pct is not None:
            note += f", {scan_.placed_pct} % of values place"
        lines.append(f"  {_quote(column)}: {_spec_text(spec)}{note}")
        if scan_.top_unplaced:
            shown = ", ".join(f"{_quote(v)}: ?" for v, _ in scan_.top_unplaced[:5])
            lines.append(f"  #   values not placed; map them under values: {{{shown}}}")
    left = [s for s in report.columns if s.column not in kept]
    if left:
        lines.append("# Not mapped (add a line above to use one):")
    for scan_ in left:
        if scan_.spec is None:
            why = "no field found by its name or values"
        elif scan_.column in specs:
            why = f"only {scan_.placed_pct} % of its values place in {scan_.gives}"
        elif scan_.match.confidence < DRAFT_CONFIDENCE:
            why = f"{scan_.gives}? only a {scan_.match.how} match ({scan_.match.confidence:.2f})"
        else:
            why = f"{scan_.gives} is fed by a closer column"
        lines.append(f"#   {_quote(scan_.column)}: {why}")
    ignored = [s.column for s in left]
    if ignored:
        lines.append("ignore: [" + ", ".join(_quote(c) for c in ignored) + "]")
    missing = report.blocking
    if missing:
        lines.append("# Fields no column feeds that red-flag or major rules read (rules):")
        lines.append("#   " + ", ".join(f"{f.field} ({f.verdict_rules})" for f in missing[:12]))
        if any(f.field == "region" for f in missing):
            lines.append("# A value true of every row (a lumbar registry) can be a constant:")
            lines.append("# constants: {region: lumbar}")
    return "\n".join(lines) + "\n"


def _draftable(report: ScanReport, column: str) -> bool:
    scan_ = next(s for s in report.columns if s.column == column)
    return scan_.values == 0 or scan_.placed >= DRAFT_PLACED * scan_.values


def _spec_text(spec: ColumnSpec) -> str:
    if spec.field and not (spec.codes or spec.unit or spec.split or spec.measure):
        return spec.field
    parts = [f"{k}: {_quote(str(v))}" for k, v in spec.model_dump(exclude_defaults=True).items()]
    return "{" + ", ".join(parts) + "}"


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_ .()%/-]*")


def _quote(text: str) -> str:
    """A YAML scalar for a name or value: plain when safe, else single-quoted."""
    if (
        _PLAIN.fullmatch(text)
        and text.lower() not in ("yes", "no", "true", "false", "null", "on", "off", "y", "n")
        and ": " not in text
    ):
        return text
    return "'" + text.replace("'", "''") + "'"


def render_text(report: ScanReport) -> str:
    """The scan for a terminal: columns, then fields that verdict-changing rules miss."""
    out = [f"{report.source}: {report.rows} rows, {len(report.columns)} columns"]
    if report.unreadable:
        out.append(f"{report.unreadable} rows cannot be read at all (batch rejects them)")
    out.append("")
    out.append(f"{'column':<28} {'field':<32} {'match':<14} {'values':>7} {'placed':>7}")
    for scan_ in report.columns:
        match = f"{scan_.match.how} {scan_.match.confidence:.2f}" if scan_.spec else "-"
        placed = f"{scan_.placed_pct}%" if scan_.placed_pct is not None and scan_.spec else "-"
        out.append(
            f"{escape_text(scan_.column, 28):<28} {scan_.gives or '-':<32} {match:<14} "
            f"{scan_.values:>7} {placed:>7}"
        )
        if scan_.top_unplaced:
            shown = ", ".join(f"{v!r} ({n})" for v, n in scan_.top_unplaced)
            out.append(f"{'':<28}   not placed: {shown}")
        if scan_.unplaced_other and scan_.spec is not None:
            out.append(f"{'':<28}   not placed and not shown: {scan_.unplaced_other}")
    out += ["", "Fields no column feeds, by the red-flag and major rules left unevaluable:"]
    blocking = report.blocking
    out += [
        f"  {f.field:<34} {f.verdict_rules} rule{'s' if f.verdict_rules != 1 else ''}"
        for f in blocking
    ] or ["  none"]
    return "\n".join(out) + "\n"


def render_html(report: ScanReport) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("engine.mapping", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
    )
    return env.get_template("inspect.html.j2").render(
        data=report.as_json(), blocking=report.blocking
    )


__all__ = [
    "ColumnScan",
    "FieldScan",
    "InspectError",
    "ScanReport",
    "draft_mapping",
    "match_name",
    "render_html",
    "render_text",
    "scan",
]
