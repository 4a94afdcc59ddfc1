"""Build CDS Hooks requests from the sample FHIR bundles (cases/fhir/), as an EHR would send
them: the Patient and Conditions and the latest Observations as prefetch, the spine
ServiceRequest as a draft order."""

from __future__ import annotations

import copy
import uuid
from typing import Any

LOINC_KEYS = {
    "39156-5": "bmi",
    "72166-2": "smoking",
    "82810-3": "pregnancy",
    "38267-1": "dxa",
    "38263-0": "dxa",
    "104938-6": "dxa",
}
PATIENT_ID = "example-patient"


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def request_of(
    bundle: dict[str, Any], hook: str = "order-select", hook_instance: str | None = None
) -> dict[str, Any]:
    """A CDS Hooks request carrying the bundle's resources (every prefetch key sent)."""
    keys: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("conditions", "refutedConditions", "bmi", "smoking", "pregnancy", "dxa")
    }
    keys["alignment"] = []
    patient: dict[str, Any] | None = None
    orders: list[dict[str, Any]] = []
    for entry in bundle["entry"]:
        resource = copy.deepcopy(entry["resource"])
        kind = resource["resourceType"]
        if kind == "Patient":
            patient = {**resource, "id": PATIENT_ID}
        elif kind == "ServiceRequest":
            resource["id"] = f"order-{len(orders) + 1}"
            orders.append(resource)
        elif kind == "Condition":
            statuses = [
                c.get("code") for c in resource.get("verificationStatus", {}).get("coding", [])
            ]
            keys["refutedConditions" if "refuted" in statuses else "conditions"].append(resource)
        elif kind == "Observation":
            codes = [c.get("code") for c in resource.get("code", {}).get("coding", [])]
            key = next((LOINC_KEYS[c] for c in codes if c in LOINC_KEYS), "alignment")
            keys[key].append(resource)
    prefetch: dict[str, Any] = {"patient": patient}
    prefetch.update({k: searchset(v) if v else None for k, v in keys.items()})
    context: dict[str, Any] = {
        "userId": "Practitioner/example",
        "patientId": PATIENT_ID,
        "draftOrders": searchset(orders),
    }
    if hook == "order-select":
        context["selections"] = [f"ServiceRequest/{o['id']}" for o in orders]
    return {
        "hook": hook,
        "hookInstance": hook_instance or str(uuid.uuid4()),
        "context": context,
        "prefetch": prefetch,
    }
