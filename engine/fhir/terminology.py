"""The code lists under rules/terminology/ as lookup tables (loaded once per directory)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_PACKAGE = Path(__file__).resolve().parent.parent
SYSTEM_NAMES = {"loinc": "LOINC", "snomed": "SNOMED CT", "icd10cm": "ICD-10-CM", "local": "local"}
UCUM = "http://unitsofmeasure.org"
_ICD10CM = re.compile(r"[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?")


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

    @property
    def local(self) -> str:
        return self.urls["local"]

    def system_name(self, url: str) -> str:
        for short, known in self.urls.items():
            if known == url:
                return SYSTEM_NAMES[short]
        return "unknown system"

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
    return term
