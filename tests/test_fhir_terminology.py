"""Every mapped code is checked against its source: ICD-10-CM against the release packaged in
simple-icd-10-cm; LOINC and SNOMED CT codes each name the page they were confirmed on; the local
CodeSystem is a valid R4 CodeSystem that agrees with the data dictionary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import simple_icd_10_cm as icd
import yaml
from fhir.resources.R4B.codesystem import CodeSystem

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, MIS_TECHNIQUES, SEGMENTS

TERMS = Path(__file__).resolve().parent.parent / "rules" / "terminology"
DOC = yaml.safe_load((TERMS / "codes.yaml").read_text())
CODESYSTEM = json.loads((TERMS / "miss-screen-codesystem.json").read_text())


def _local_codes(concepts: list[dict[str, Any]]) -> set[str]:
    return {c["code"] for c in concepts} | {
        code for c in concepts for code in _local_codes(c.get("concept", []))
    }


def test_every_icd10cm_code_is_in_the_release() -> None:
    codes = [c for cond in DOC["conditions"] for c in cond.get("icd10cm", [])]
    assert len(codes) > 30
    assert [c for c in codes if not icd.is_valid_item(c)] == []


def test_every_loinc_and_snomed_code_names_where_it_was_confirmed() -> None:
    unconfirmed = []
    for entry in [*DOC["quantities"], *DOC["coded"], *DOC["body_sites"]]:
        if entry["system"] != "local" and not entry.get("confirmed"):
            unconfirmed.append(entry["code"])
    for coded in DOC["coded"]:
        unconfirmed += [a["code"] for a in coded["answers"] if not a.get("confirmed")]
    for cond in DOC["conditions"]:
        unconfirmed += [s["code"] for s in cond.get("snomed", []) if not s.get("confirmed")]
    assert unconfirmed == []


def test_every_system_states_source_and_version() -> None:
    for spec in DOC["systems"].values():
        assert spec["url"]
        assert spec["version"]
        assert spec["source"]


def test_fields_and_values_are_dictionary_ones() -> None:
    for entry in [*DOC["quantities"], *DOC["coded"], *DOC["conditions"]]:
        assert entry["field"] in INPUT_FIELDS
    for cond in DOC["conditions"]:
        spec = FIELDS_BY_NAME[cond["field"]]
        assert cond["value"] in spec.domain
    assert {s["value"] for s in DOC["body_sites"]} == set(FIELDS_BY_NAME["region"].values)


def test_local_codesystem_is_valid_r4_and_matches_the_dictionary() -> None:
    CodeSystem.model_validate(CODESYSTEM)
    assert CODESYSTEM["url"] == DOC["systems"]["local"]["url"]
    assert CODESYSTEM["version"] == DOC["systems"]["local"]["version"]
    codes = _local_codes(CODESYSTEM["concept"])
    assert {f"segment-{s}" for s in SEGMENTS} <= codes
    assert {f"technique-{t}" for t in MIS_TECHNIQUES} <= codes
    assert {f"procedure-{p}" for p in FIELDS_BY_NAME["planned_procedure"].values} <= codes
    local = {q["code"] for q in DOC["quantities"] if q["system"] == "local"}
    assert local <= codes
