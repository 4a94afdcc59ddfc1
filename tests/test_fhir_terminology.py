"""Every mapped code is checked against its source: ICD-10-CM against the release packaged in
simple-icd-10-cm; LOINC and SNOMED CT codes each name the page they were confirmed on, and every
SNOMED CT code has a valid SCTID check digit; each planned_procedure value has SNOMED CT codes or
says why not; the local CodeSystem is a valid R4 CodeSystem that agrees with the data dictionary."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import simple_icd_10_cm as icd
import yaml
from fhir.resources.R4B.codesystem import CodeSystem
from stdnum import verhoeff

from engine.dictionary import FIELDS_BY_NAME, INPUT_FIELDS, MIS_TECHNIQUES, SEGMENTS
from engine.errors import RuleFileError
from engine.fhir.terminology import load_terminology

TERMS = Path(__file__).resolve().parent.parent / "rules" / "terminology"
DOC = yaml.safe_load((TERMS / "codes.yaml").read_text())
CODESYSTEM = json.loads((TERMS / "miss-screen-codesystem.json").read_text())
SNOMED = "http://snomed.info/sct"


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
    for proc in DOC["procedures"]:
        unconfirmed += [s["code"] for s in proc.get("snomed", []) if not s.get("confirmed")]
    unconfirmed += [s["code"] for s in DOC["spine_procedures"] if not s.get("confirmed")]
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


# --- SNOMED CT procedure codes (ServiceRequest.code -> planned_procedure) ----------------------


def _snomed_codes() -> list[str]:
    """Every SNOMED CT code in codes.yaml, whatever section holds it."""
    codes = [str(s["code"]) for cond in DOC["conditions"] for s in cond.get("snomed", [])]
    codes += [
        str(e["code"]) for e in [*DOC["coded"], *DOC["body_sites"]] if e["system"] == "snomed"
    ]
    codes += [str(a["code"]) for c in DOC["coded"] for a in c["answers"] if a["system"] == "snomed"]
    codes += [str(s["code"]) for p in DOC["procedures"] for s in p.get("snomed", [])]
    codes += [str(s["code"]) for s in DOC["spine_procedures"]]
    return codes


def _procedure_entries() -> list[dict[str, Any]]:
    return [s for p in DOC["procedures"] for s in p.get("snomed", [])] + DOC["spine_procedures"]


def test_every_procedure_code_names_the_page_and_display_it_was_confirmed_with() -> None:
    entries = _procedure_entries()
    assert len(entries) >= 20
    for entry in entries:
        assert isinstance(entry["code"], str), entry  # quoted in the YAML, as the loader requires
        source = entry.get("confirmed", "")
        assert re.fullmatch(r"https://\S+ \(.+\)", source), entry  # "<url> (<display>)"


def test_no_procedure_code_is_listed_twice_or_for_two_values() -> None:
    codes = [str(e["code"]) for e in _procedure_entries()]
    assert len(codes) == len(set(codes))


def test_every_snomed_code_has_a_valid_check_digit_and_is_a_concept_id() -> None:
    codes = _snomed_codes()
    assert len(codes) > 30
    assert [c for c in codes if not verhoeff.is_valid(c)] == []
    # the partition identifier (2nd and 3rd digits from the right): 00 or 10 = a concept
    assert [c for c in codes if c[-3:-1] not in ("00", "10")] == []
    # the check would catch a one-digit slip in any of them
    slipped = [c[:-2] + str((int(c[-2]) + 1) % 10) + c[-1] for c in codes]
    assert [c for c in slipped if verhoeff.is_valid(c)] == []


def test_each_planned_procedure_value_is_covered_or_says_why_not() -> None:
    values = FIELDS_BY_NAME["planned_procedure"].values
    listed = [p["value"] for p in DOC["procedures"]]
    assert sorted(listed) == sorted(values)
    for entry in DOC["procedures"]:
        has_codes, why = bool(entry.get("snomed")), str(entry.get("uncovered") or "").strip()
        assert has_codes != bool(why), entry["value"]
    covered = {p["value"] for p in DOC["procedures"] if p.get("snomed")}
    assert {"discectomy", "decompression", "fusion"} <= covered


def test_no_cpt_code_is_shipped() -> None:
    text = (TERMS / "codes.yaml").read_text().lower()
    assert "ama-assn.org" not in text
    assert [s for s in DOC["systems"] if "cpt" in s or "cpt" in DOC["systems"][s]["url"]] == []


def test_the_loader_reads_the_procedures_it_lists() -> None:
    term = load_terminology(TERMS)
    for entry in DOC["procedures"]:
        for item in entry.get("snomed", []):
            assert term.spine_procedure(SNOMED, item["code"]) == (True, entry["value"])
    for item in DOC["spine_procedures"]:
        assert term.spine_procedure(SNOMED, item["code"]) == (True, None)
    assert term.spine_procedure("http://loinc.org", "3418002") == (False, None)
    assert term.spine_procedure(SNOMED, "609588000") == (False, None)  # total knee replacement


def _broken(procedures: Any, spine: Any = None) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    doc["procedures"] = procedures
    if spine is not None:
        doc["spine_procedures"] = spine
    return doc


def _edit(index: int, **changes: Any) -> list[Any]:
    procedures = copy.deepcopy(DOC["procedures"])
    procedures[index].update(changes)
    return procedures


_FIRST = DOC["procedures"][0]["snomed"][0]
_OTHER = DOC["procedures"][1]["snomed"][0]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_broken(_edit(0, value="microdiscectomy")), "not a planned_procedure value"),
        (_broken(DOC["procedures"][1:]), "list each planned_procedure value once"),
        (_broken(_edit(0, uncovered="no reason")), "either `snomed` codes or `uncovered`"),
        (_broken(_edit(0, snomed=[])), "either `snomed` codes or `uncovered`"),
        (_broken(_edit(0, snomed=[{"code": _FIRST["code"]}])), "does not say where"),
        (_broken(_edit(0, snomed=[_FIRST, _OTHER])), "listed twice"),
        (_broken(_edit(0, snomed=[{**_FIRST, "code": 3418002}])), "quoted string"),
        (_broken(_edit(0, snomed=[{**_FIRST, "code": "22630"}])), "not a SNOMED CT identifier"),
        (_broken(DOC["procedures"], spine=[_FIRST]), "listed twice"),
    ],
)
def test_the_loader_rejects_a_bad_procedures_section(
    doc: dict[str, Any], message: str, tmp_path: Path
) -> None:
    (tmp_path / "codes.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RuleFileError, match=re.escape(message)):
        load_terminology(tmp_path)
