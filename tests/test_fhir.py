"""FHIR R4 input (issue 19 items 1-3): golden bundles, round trip, unknown stays unknown,
malformed bundles never crash, and nothing identifying is ever written."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from engine.cli import app
from engine.errors import UserError
from engine.fhir import FhirInputError, fhir_to_case, read_bundle
from engine.fhir.export import case_to_bundle, mapped_fields
from engine.io.cases import validate_case
from engine.screen import screen_values

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "cases" / "fhir"
EXAMPLES = sorted((ROOT / "cases" / "examples").glob("*.yaml"))
REF = dt.date(2025, 6, 15)
LOINC, ICD, UCUM = (
    "http://loinc.org",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://unitsofmeasure.org",
)
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
EXPECTED = yaml.safe_load((SAMPLES / "expected.yaml").read_text())


def resources(bundle: dict[str, Any]) -> list[Any]:
    return read_bundle(json.dumps(bundle))


def bmi(value: float, unit: str = "kg/m2", when: str = "2025-06-01") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "39156-5"}]},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "system": UCUM, "code": unit},
    }


def condition(code: str, status: str | None = None, recorded: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": ICD, "code": code}]},
        "subject": {"reference": "Patient/p"},
    }
    if status:
        cond["verificationStatus"] = {"coding": [{"system": VER, "code": status}]}
    if status == "refuted":  # ruled out at this encounter unless a test says otherwise
        cond["recordedDate"] = recorded or REF.isoformat()
    return cond


# --- golden bundles -----------------------------------------------------------------------------


def test_at_least_ten_golden_bundles() -> None:
    assert len(EXPECTED) >= 10
    assert {p.name for p in SAMPLES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_bundle_maps_as_hand_checked(name: str) -> None:
    bundle = json.loads((SAMPLES / name).read_text())
    example = yaml.safe_load(
        (ROOT / "cases" / "examples" / name.replace(".json", ".yaml")).read_text()
    )
    case, provenance, warnings = fhir_to_case(
        resources(bundle), REF, hook_instance=example["case_id"]
    )
    assert case == EXPECTED[name]["case"]
    assert {k: str(v) for k, v in provenance.items()} == EXPECTED[name]["provenance"]
    assert warnings == []
    # every mapped value is the example's own (the hand check, kept true)
    assert all(example[k] == v for k, v in case.items())


# --- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_round_trip_gives_the_same_verdict(path: Path, ruleset: Any, evaluators: Any) -> None:
    example = yaml.safe_load(path.read_text())
    case_id, values = validate_case(example, str(path))
    mappable = mapped_fields()
    subset = {k: v for k, v in values.items() if k in mappable}
    back, _, warnings = fhir_to_case(
        resources(case_to_bundle(example, REF)), REF, hook_instance=case_id
    )
    back.pop("case_id")
    lost = {k: v for k, v in subset.items() if k not in back}
    assert lost in ({}, {"diagnosis": "other"})  # "other" has no code, so it stays unknown
    assert warnings == []
    evaluator = evaluators["reference"]
    before = screen_values(case_id, subset, ruleset, evaluator).result.verdict
    after = screen_values(case_id, {**back, **lost}, ruleset, evaluator).result.verdict
    assert before == after
    full = screen_values(case_id, values, ruleset, evaluator).result.verdict
    rest = {k: v for k, v in values.items() if k not in back}
    assert screen_values(case_id, {**back, **rest}, ruleset, evaluator).result.verdict == full


# --- unknown stays unknown, units, dates, anonymity of the case --------------------------------


def test_missing_condition_stays_unknown_and_refuted_sets_false() -> None:
    case, prov, _ = fhir_to_case([condition("G83.4", "refuted")], REF)
    assert case["cauda_equina_syndrome"] is False
    assert str(prov["cauda_equina_syndrome"]) == "Condition ICD-10-CM G83.4"
    assert "myelopathy" not in case
    assert "diabetes" not in case
    case, _, _ = fhir_to_case([condition("G83.4", "unconfirmed")], REF)
    assert "cauda_equina_syndrome" not in case
    case, _, _ = fhir_to_case([condition("E11.9", "confirmed")], REF)  # a descendant of E11
    assert case["diabetes"] is True


@pytest.mark.parametrize("recorded", ["2009-03-01", "2025-06-10", "2025-06-16", None])
def test_an_old_or_undated_refutation_excludes_no_red_flag(recorded: str | None) -> None:
    """A cauda equina syndrome ruled out years (or days) ago, or undated, says nothing of
    today: the red flag stays unknown, to be asked, with a warning that names no date."""
    cond = condition("G83.4", "refuted")
    cond.pop("recordedDate")
    if recorded:
        cond["recordedDate"] = recorded
    case, _, warnings = fhir_to_case([cond], REF)
    assert "cauda_equina_syndrome" not in case
    assert any("cauda_equina_syndrome" in w and "left unknown" in w for w in warnings)
    assert not any(recorded in w for w in warnings if recorded)


def test_a_refutation_the_day_before_still_counts_and_stable_conditions_need_no_date() -> None:
    case, _, warnings = fhir_to_case([condition("G83.4", "refuted", "2025-06-14")], REF)
    assert case["cauda_equina_syndrome"] is False
    assert warnings == []
    diabetes = condition("E11", "refuted")
    diabetes.pop("recordedDate")
    case, _, _ = fhir_to_case([diabetes], REF)
    assert case["diabetes"] is False  # a chronic condition ruled out stays ruled out


def test_confirmed_wins_over_refuted_with_a_warning() -> None:
    case, _, warnings = fhir_to_case([condition("G83.4", "refuted"), condition("G83.4")], REF)
    assert case["cauda_equina_syndrome"] is True
    assert any("cauda_equina_syndrome" in w for w in warnings)


def test_wrong_unit_is_a_warning_and_the_value_is_not_used() -> None:
    case, _, warnings = fhir_to_case([bmi(26.0, unit="kg")], REF)
    assert "bmi" not in case
    assert any(w.startswith("bmi:") and "kg/m2" in w for w in warnings)


def test_out_of_range_value_is_a_warning() -> None:
    case, _, warnings = fhir_to_case([bmi(260.0)], REF)
    assert "bmi" not in case
    assert any("out of range" in w for w in warnings)


def test_latest_observation_wins_and_future_ones_are_ignored() -> None:
    obs = [bmi(31.0, when="2024-01-01"), bmi(27.5, when="2025-05-01"), bmi(40.0, when="2026-01-01")]
    case, _, warnings = fhir_to_case(obs, REF)
    assert case["bmi"] == 27.5
    assert any("after the reference date" in w for w in warnings)


def test_patient_reduced_to_capped_age_and_sex_and_id_never_used() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "MRN12345",
        "gender": "female",
        "birthDate": "1920-02-03",
    }
    case, prov, _ = fhir_to_case([patient], REF, salt=b"s")
    assert case["age_years"] == 90
    assert case["sex"] == "female"
    assert "MRN12345" not in json.dumps(case)
    assert case["case_id"].startswith("fhir-")
    assert set(case) == {"case_id", "age_years", "sex"}
    again, _, _ = fhir_to_case([patient], REF, salt=b"s")
    other, _, _ = fhir_to_case([patient], REF, salt=b"t")
    assert again["case_id"] == case["case_id"] != other["case_id"]
    hooked, prov, _ = fhir_to_case(
        [patient], REF, hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    )
    assert hooked["case_id"] == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert str(prov["case_id"]) == "hookInstance"


def test_partial_birth_date_counts_the_birthday_as_not_passed() -> None:
    case, _, _ = fhir_to_case([{"resourceType": "Patient", "birthDate": "1980"}], REF)
    assert case["age_years"] == 44


def test_one_bad_entry_is_a_named_warning_not_a_lost_record() -> None:
    bad = {
        "resourceType": "Observation",
        "status": "no-such-status",
        "note": [{"text": "Jane Roe"}],
    }
    case, _, warnings = fhir_to_case([bad, bmi(30.0)], REF)
    assert case["bmi"] == 30.0
    assert warnings == ["entry 0 (Observation): not a valid R4 Observation; skipped"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"resourceType": "Patient"}', "expected a FHIR Bundle"),
        ('{"resourceType": "Bundle", "type": "document"}', "Bundle type must be"),
        ('{"resourceType": "Bundle", "type": "collection", "entry": 3}', "must be a list"),
    ],
)
def test_unreadable_input_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(FhirInputError, match=message):
        read_bundle(text, "x.json")


# --- malformed bundles: a warning or a clear error, never a crash -------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_VALID = [r for n in sorted(EXPECTED)[:3] for r in resources(json.loads((SAMPLES / n).read_text()))]
_KEYS = [
    "resourceType",
    "status",
    "code",
    "valueQuantity",
    "verificationStatus",
    "birthDate",
    "gender",
    "bodySite",
    "reasonCode",
    "effectiveDateTime",
    "coding",
    "value",
    "system",
]


def _mutate(data: Any, draw: Any) -> Any:
    out = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 4))):
        target = out[draw(st.integers(0, len(out) - 1))]
        while isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target)))
            if isinstance(target[key], dict | list) and target[key]:
                target = target[key] if isinstance(target[key], dict) else target[key][0]
            else:
                break
        if isinstance(target, dict):
            target[draw(st.sampled_from(_KEYS))] = draw(_json)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_resources_never_crash(data: Any) -> None:
    entries = (
        _mutate(_VALID, data.draw)
        if data.draw(st.booleans())
        else data.draw(st.lists(_json, max_size=5))
    )
    case, provenance, warnings = fhir_to_case(entries, REF)
    assert all(isinstance(w, str) for w in warnings)
    assert set(provenance) == set(case)
    validate_case(case, "fhir")  # whatever is mapped is a valid case


@settings(max_examples=100, deadline=None)
@given(doc=_json)
def test_any_json_document_is_a_bundle_or_one_clear_error(doc: Any) -> None:
    try:
        entries = read_bundle(json.dumps(doc))
    except UserError as exc:
        message = str(exc)
    else:
        message = "read"
        fhir_to_case(entries, REF)
    assert message


# --- nothing identifying is ever written --------------------------------------------------------

SECRETS = [
    "Zebulon",
    "Quxworth",
    "MRN-99871234",
    "1961-04-17",
    "2025-05-30",
    "221B Baker",
    "555-0199",
    "zq@example.org",
    "secret-patient-id",
    "Dr Hibbert",
    "knee pain since",
]


def identifying_bundle() -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "id": "secret-patient-id",
        "identifier": [{"system": "urn:mrn", "value": "MRN-99871234"}],
        "name": [{"family": "Quxworth", "given": ["Zebulon"]}],
        "gender": "male",
        "birthDate": "1961-04-17",
        "address": [{"line": ["221B Baker"]}],
        "telecom": [
            {"system": "phone", "value": "555-0199"},
            {"system": "email", "value": "zq@example.org"},
        ],
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Zebulon Quxworth</div>',
        },
    }
    obs = bmi(29.0, when="2025-05-30")
    obs["note"] = [{"text": "knee pain since Zebulon fell"}]
    obs["performer"] = [{"display": "Dr Hibbert"}]
    bad_unit = bmi(29.0, unit="Quxworth", when="2025-05-30")
    cond = condition("M51.16")
    cond["note"] = [{"text": "MRN-99871234 Zebulon Quxworth"}]
    cond["recordedDate"] = "2025-05-30"
    broken = {"resourceType": "Condition", "code": "Zebulon Quxworth MRN-99871234"}
    weird = {"resourceType": "Zebulon Quxworth"}
    order = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/secret-patient-id", "display": "Zebulon Quxworth"},
        "code": {
            "coding": [
                {
                    "system": "http://miss-screen.example.org/fhir/CodeSystem/spine",
                    "code": "procedure-discectomy",
                    "display": "Dr Hibbert",
                }
            ],
            "text": "knee pain since 1961-04-17",
        },
        "bodySite": [
            {
                "coding": [
                    {
                        "system": "http://miss-screen.example.org/fhir/CodeSystem/spine",
                        "code": "segment-L4-L5",
                    }
                ]
            }
        ],
        "reasonCode": [{"coding": [{"system": ICD, "code": "M51.16Zebulon"}]}],
        "authoredOn": "2025-05-30",
    }
    entries = [patient, obs, bad_unit, cond, broken, weird, order]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"fullUrl": "urn:uuid:secret-patient-id", "resource": r} for r in entries],
    }


def test_mapper_output_holds_nothing_identifying() -> None:
    mapped = fhir_to_case(resources(identifying_bundle()), REF)
    written = json.dumps(
        [mapped.case, {k: str(v) for k, v in mapped.provenance.items()}, mapped.warnings]
    )
    assert [s for s in SECRETS if s in written] == []
    assert mapped.case["age_years"] == 64
    assert mapped.case["diagnosis"] == "disc_herniation"


@pytest.mark.parametrize("output_format", ["text", "json", "brief"])
def test_cli_writes_nothing_identifying(output_format: str, tmp_path: Path) -> None:
    bundle = tmp_path / "record.json"
    bundle.write_text(json.dumps(identifying_bundle()))
    cli = [sys.executable, "-c", "import cli; cli.main()"]
    done = subprocess.run(
        [
            *cli,
            "screen",
            "--fhir",
            "-",
            "--format",
            output_format,
            "--reference-date",
            "2025-06-15",
            "--set",
            "region=lumbar",
        ],
        input=bundle.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = done.stdout + done.stderr
    assert [s for s in SECRETS if s in written] == []
    assert "warning:" in done.stderr  # the bad entries were named, not dropped silently
    if output_format == "text":
        assert "Observation LOINC 39156-5" in done.stdout
        assert "region" in done.stdout


# --- SNOMED CT procedure codes on the ServiceRequest ---------------------------------------------

SNOMED = "http://snomed.info/sct"
CODES = yaml.safe_load((ROOT / "rules" / "terminology" / "codes.yaml").read_text())
PROCEDURE_CODES = [
    (str(s["code"]), p["value"]) for p in CODES["procedures"] for s in p.get("snomed", [])
]


def order(*codings: tuple[str, str], status: str = "draft") -> dict[str, Any]:
    """A ServiceRequest with these (system, code) codings and no local code anywhere."""
    return {
        "resourceType": "ServiceRequest",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        "bodySite": [{"coding": [{"system": SNOMED, "code": "122496007"}]}],  # lumbar spine
    }


@pytest.mark.parametrize(("code", "value"), PROCEDURE_CODES)
def test_an_order_coded_only_in_snomed_is_a_spine_order_with_its_procedure(
    code: str, value: str
) -> None:
    mapped = fhir_to_case([order((SNOMED, code))], REF)
    assert mapped.spine_orders == 1
    assert mapped.case["planned_procedure"] == value
    assert str(mapped.provenance["planned_procedure"]) == f"ServiceRequest.code SNOMED CT {code}"
    assert mapped.case["region"] == "lumbar"
    assert mapped.warnings == []


@pytest.mark.parametrize("code", [str(s["code"]) for s in CODES["spine_procedures"]])
def test_a_generic_spine_code_is_a_spine_order_with_the_procedure_left_unknown(code: str) -> None:
    mapped = fhir_to_case([order((SNOMED, code))], REF)
    assert mapped.spine_orders == 1
    assert "planned_procedure" not in mapped.case


@pytest.mark.parametrize(
    "coding",
    [
        (SNOMED, "609588000"),  # Total knee replacement (IPS Free Set): not a spine operation
        (SNOMED, "118442004"),  # Drainage of abscess: names no site
        (SNOMED, "not-a-code"),
        (LOINC, "55705006"),  # a spinal fusion code under another system is not one
        (ICD, "3418002"),
        ("http://www.ama-assn.org/go/cpt", "22630"),  # CPT is not mapped (AMA-licensed)
    ],
)
def test_an_order_without_a_mapped_spine_code_is_not_screened(coding: tuple[str, str]) -> None:
    mapped = fhir_to_case([order(coding)], REF)
    assert mapped.spine_orders == 0
    assert "planned_procedure" not in mapped.case
    assert "region" not in mapped.case


@pytest.mark.parametrize("status", ["completed", "revoked", "entered-in-error"])
def test_a_snomed_coded_order_no_longer_planned_is_not_screened(status: str) -> None:
    mapped = fhir_to_case([order((SNOMED, "55705006"), status=status)], REF)
    assert mapped.spine_orders == 0
    assert "planned_procedure" not in mapped.case


def test_codes_that_disagree_on_the_procedure_keep_the_first_with_a_warning() -> None:
    local = "http://miss-screen.example.org/fhir/CodeSystem/spine"
    mapped = fhir_to_case([order((local, "procedure-fusion"), (SNOMED, "3418002"))], REF)
    assert mapped.case["planned_procedure"] == "fusion"
    assert (
        str(mapped.provenance["planned_procedure"]) == "ServiceRequest.code local procedure-fusion"
    )
    assert any("SNOMED CT 3418002 disagrees" in w for w in mapped.warnings)
    agreeing = fhir_to_case([order((SNOMED, "55705006"), (SNOMED, "50172003"))], REF)
    assert agreeing.case["planned_procedure"] == "fusion"
    assert agreeing.warnings == []


def test_a_bundle_larger_than_a_case_file_is_read(tmp_path: Path) -> None:
    """An EHR export outgrows a case file's 1 MB: a 2 MB Bundle (padded with unrelated
    resources) is screened, not refused."""
    bundle = json.loads((SAMPLES / "disc-herniation-l4-l5.json").read_text())
    filler = {"resource": {"resourceType": "Basic", "code": {"text": "x" * 1000}}}
    bundle["entry"] += [filler] * 2000
    path = tmp_path / "big.json"
    path.write_text(json.dumps(bundle))
    assert path.stat().st_size > 2_000_000
    done = CliRunner().invoke(
        app,
        ["screen", "--fhir", str(path), "--reference-date", REF.isoformat(), "--format", "brief"],
    )
    assert "larger than" not in done.stderr
    assert done.exit_code == 0, done.stderr


def test_made_up_resource_types_are_never_named_in_a_warning() -> None:
    """A resourceType is text the sender chose: only real R4B types are named, at most 10."""
    made_up = [{"resourceType": f"JaneDoeMrn{chr(65 + i)}"} for i in range(20)]
    real = [{"resourceType": name} for name in ("MedicationRequest", "Basic", "Encounter")]
    _, _, warnings = fhir_to_case(made_up + real, REF)
    text = " ".join(warnings)
    assert "JaneDoe" not in text
    assert "MedicationRequest" in text
    assert "other" in text
