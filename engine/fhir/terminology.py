"""The code lists under rules/terminology/ as lookup tables (loaded once per directory)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.dictionary import FIELDS_BY_NAME
from engine.errors import RuleFileError

_PACKAGE = Path(__file__).resolve().parent.parent
SYSTEM_NAMES = {"loinc": "LOINC", "snomed": "SNOMED CT", "icd10cm": "ICD-10-CM", "local": "local"}
UCUM = "http://unitsofmeasure.org"
_ICD10CM = re.compile(r"[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?")
_SCTID = re.compile(r"[1-9][0-9]{5,17}")  # a SNOMED CT identifier: 6 to 18 digits


def default_terminology_dir() -> Path:
    """rules/terminology of this copy of miss-screen (packaged or in the checkout)."""
    packaged = _PACKAGE / "bundled_rules" / "terminology"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "rules" / "terminology"


@dataclass(frozen=True)
class Quantity:
    field: str
    system: str
    code: str
    units: tuple[str, ...]


@dataclass(frozen=True)
class Coded:
    field: str
    system: str
    code: str
    answers: dict[tuple[str, str], bool]


@dataclass
class Terminology:
    """Lookups from (system URL, code) to what a case field takes."""

    urls: dict[str, str]  # short name -> system URL
    quantities: dict[tuple[str, str], Quantity] = field(default_factory=dict)
    coded: dict[tuple[str, str], Coded] = field(default_factory=dict)
    icd10cm: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)  # code -> [(field, v)]
    snomed_conditions: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    body_sites: dict[tuple[str, str], str] = field(default_factory=dict)
    procedures: dict[str, str] = field(default_factory=dict)  # SNOMED CT code -> planned_procedure
    spine_procedures: frozenset[str] = frozenset()  # SNOMED CT: a spine operation of unsaid kind
    uncovered_procedures: dict[str, str] = field(default_factory=dict)  # value -> why no code

    @property
    def local(self) -> str:
        return self.urls["local"]

    def system_name(self, url: str) -> str:
        for short, known in self.urls.items():
            if known == url:
                return SYSTEM_NAMES[short]
        return "unknown system"

    def spine_procedure(self, url: str, code: str) -> tuple[bool, str | None]:
        """(is this ServiceRequest.code a spine operation, the planned_procedure it says)."""
        if url != self.urls["snomed"]:
            return False, None
        if code in self.procedures:
            return True, self.procedures[code]
        return code in self.spine_procedures, None

    def condition_values(self, url: str, code: str) -> list[tuple[str, Any]]:
        """The (field, value) pairs a condition code sets; ICD-10-CM matches descendants too."""
        if url == self.urls["snomed"]:
            return self.snomed_conditions.get(code, [])
        if url != self.urls["icd10cm"]:
            return []
        if not _ICD10CM.fullmatch(code):  # only a well-formed code may be echoed in provenance
            return []
        plain = code.replace(".", "")
        for end in range(len(plain), 2, -1):
            found = self.icd10cm.get(plain[:end])
            if found:
                return found
        return []


@functools.cache
def load_terminology(folder: Path | None = None) -> Terminology:
    """Read codes.yaml of a terminology folder (default: the bundled one)."""
    path = (folder or default_terminology_dir()) / "codes.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    urls = {name: str(spec["url"]) for name, spec in doc["systems"].items()}
    term = Terminology(urls=urls)
    for q in doc["quantities"]:
        key = (urls[q["system"]], str(q["code"]))
        term.quantities[key] = Quantity(q["field"], q["system"], str(q["code"]), tuple(q["units"]))
    for c in doc["coded"]:
        answers = {(urls[a["system"]], str(a["code"])): bool(a["value"]) for a in c["answers"]}
        key = (urls[c["system"]], str(c["code"]))
        term.coded[key] = Coded(c["field"], c["system"], str(c["code"]), answers)
    for cond in doc["conditions"]:
        pair = (cond["field"], cond["value"])
        for code in cond.get("icd10cm", []):
            term.icd10cm.setdefault(str(code).replace(".", ""), []).append(pair)
        for entry in cond.get("snomed", []):
            term.snomed_conditions.setdefault(str(entry["code"]), []).append(pair)
    for site in doc["body_sites"]:
        term.body_sites[(urls[site["system"]], str(site["code"]))] = site["value"]
    _load_procedures(term, doc, path)
    return term


def _load_procedures(term: Terminology, doc: dict[str, Any], path: Path) -> None:
    """The `procedures` and `spine_procedures` sections, checked: every planned_procedure value
    once, either with confirmed SNOMED CT codes or a reason it has none; no code twice."""
    values = FIELDS_BY_NAME["planned_procedure"].values
    problems: list[str] = []
    seen: set[str] = set()

    def code_of(entry: Any, where: str) -> str | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("code"), str):
            problems.append(f"{where}: each code is a quoted string under `code`")
            return None
        code = str(entry["code"])
        if not _SCTID.fullmatch(code):
            problems.append(f"{where}: {code!r} is not a SNOMED CT identifier")
        if not str(entry.get("confirmed") or "").strip():
            problems.append(f"{where}: {code} does not say where it was confirmed")
        if code in seen:
            problems.append(f"{where}: {code} is listed twice")
        seen.add(code)
        return code

    listed: list[str] = []
    for entry in doc.get("procedures") or []:
        value = entry.get("value") if isinstance(entry, dict) else None
        if value not in values:
            problems.append(f"procedures: {value!r} is not a planned_procedure value")
            continue
        listed.append(value)
        codes, why = entry.get("snomed") or [], str(entry.get("uncovered") or "").strip()
        if bool(codes) == bool(why):
            problems.append(f"procedures {value}: give either `snomed` codes or `uncovered`")
        if why:
            term.uncovered_procedures[value] = why
        for item in codes:
            code = code_of(item, f"procedures {value}")
            if code:
                term.procedures[code] = value
    if sorted(listed) != sorted(values):
        problems.append(f"procedures: list each planned_procedure value once ({', '.join(values)})")
    spine = {code_of(e, "spine_procedures") for e in doc.get("spine_procedures") or []}
    term.spine_procedures = frozenset(c for c in spine if c)
    if problems:
        raise RuleFileError("; ".join(problems), path=str(path))
