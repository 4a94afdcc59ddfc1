"""A case as a FHIR R4 collection Bundle, with the codes the mapper reads (its inverse).

Used to write the sample bundles under cases/fhir/ and by the round-trip tests; only fields the
mapper can read are written (MAPPED_FIELDS). The Patient has no name or identifier.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from engine.dictionary import SEGMENTS
from engine.fhir.terminology import UCUM, default_terminology_dir, load_terminology

_ORDER_FIELDS = ("planned_procedure", "mis_technique", "levels", "lowest_level", "region")
_VERIFIED = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def mapped_fields(terminology: Path | None = None) -> frozenset[str]:
    """Every case field the mapper can set from FHIR."""
    doc = _doc(terminology)
    names = {"case_id", "age_years", "sex", *_ORDER_FIELDS}
    names.update(q["field"] for q in doc["quantities"])
    names.update(c["field"] for c in doc["coded"])
    names.update(c["field"] for c in doc["conditions"])
    return frozenset(names)


def _doc(terminology: Path | None) -> Any:
    folder = terminology or default_terminology_dir()
    return yaml.safe_load((folder / "codes.yaml").read_text(encoding="utf-8"))


def case_to_bundle(
    case: dict[str, Any], reference_date: dt.date, terminology: Path | None = None
) -> dict[str, Any]:
    """A collection Bundle holding the mappable fields of `case` (others are left out)."""
    doc = _doc(terminology)
    term = load_terminology(terminology)
    urls = term.urls
    subject = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}
    resources: list[dict[str, Any]] = []
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if "sex" in case:
        patient["gender"] = case["sex"]
    if "age_years" in case:
        born = reference_date.replace(year=reference_date.year - int(case["age_years"]))
        patient["birthDate"] = born.isoformat()
    resources.append(patient)
    observed = (reference_date - dt.timedelta(days=7)).isoformat()

    def observation(system: str, code: str, value: dict[str, Any]) -> None:
        resources.append(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": urls[system], "code": code}]},
                "subject": subject,
                "effectiveDateTime": observed,
                **value,
            }
        )

    done: set[str] = set()
    for q in doc["quantities"]:
        name = q["field"]
        if name in case and name not in done:
            done.add(name)
            quantity = {
                "value": case[name],
                "unit": q["units"][0],
                "system": UCUM,
                "code": q["units"][0],
            }
            observation(q["system"], str(q["code"]), {"valueQuantity": quantity})
    for c in doc["coded"]:
        name = c["field"]
        if name in case:
            answer = next(a for a in c["answers"] if a["value"] is bool(case[name]))
            concept = {"coding": [{"system": urls[answer["system"]], "code": str(answer["code"])}]}
            observation(c["system"], str(c["code"]), {"valueCodeableConcept": concept})

    def icd_code(name: str, value: Any) -> str | None:
        """A code that sets only this value (else one that also names a diagnosis)."""
        codes = [
            str(code)
            for cond in doc["conditions"]
            if cond["field"] == name and cond["value"] == value
            for code in cond.get("icd10cm", [])
        ]
        for code in codes:
            if term.condition_values(urls["icd10cm"], code) == [(name, value)]:
                return code
        return codes[0] if codes else None

    def condition(code: str, refuted: bool) -> None:
        status = "refuted" if refuted else "confirmed"
        resources.append(
            {
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"system": _CLINICAL, "code": "active"}]},
                "verificationStatus": {"coding": [{"system": _VERIFIED, "code": status}]},
                "code": {"coding": [{"system": urls["icd10cm"], "code": code}]},
                "subject": subject,
                # ruled out at this encounter: an old refutation excludes no acute condition
                **({"recordedDate": reference_date.isoformat()} if refuted else {}),
            }
        )

    for cond in doc["conditions"]:
        name = cond["field"]
        if name == "diagnosis" or name not in case or name in done:
            continue
        done.add(name)
        code = icd_code(name, True)
        if code is not None:
            condition(code, refuted=not case[name])
    reason = icd_code("diagnosis", case["diagnosis"]) if "diagnosis" in case else None
    if reason is not None:
        condition(reason, refuted=False)
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": subject,
    }
    codes = [f"procedure-{case['planned_procedure']}"] if "planned_procedure" in case else []
    codes += [f"technique-{case['mis_technique']}"] if "mis_technique" in case else []
    if codes:
        order["code"] = {"coding": [{"system": term.local, "code": c} for c in codes]}
    sites = []
    if "lowest_level" in case:
        low = SEGMENTS.index(case["lowest_level"])
        span = SEGMENTS[max(0, low - int(case.get("levels", 1)) + 1) : low + 1]
        sites += [{"coding": [{"system": term.local, "code": f"segment-{s}"}]} for s in span]
    if "region" in case:
        code = next(c for (s, c), v in term.body_sites.items() if v == case["region"])
        sites.append({"coding": [{"system": urls["snomed"], "code": code}]})
    if sites:
        order["bodySite"] = sites
    if reason is not None:
        order["reasonCode"] = [{"coding": [{"system": urls["icd10cm"], "code": reason}]}]
    if codes or sites:
        resources.append(order)
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }
