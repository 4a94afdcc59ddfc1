"""The de-identification guard refuses cohorts with direct identifiers and never shows a value."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.dictionary import FIELDS, INPUT_FIELDS, SEGMENTS
from engine.io.deid import IdentifierFinding, check_deidentified, scan_columns, scan_values

CLEAN_ROWS: list[dict[str, object]] = [
    {
        "case_id": "S-0193",
        "age_years": 54,
        "sex": "female",
        "bmi": 27.5,
        "diabetes": False,
        "diagnosis": "disc_herniation",
        "region": "lumbar",
        "levels": 1,
        "lowest_level": "L4-L5",
        "herniation_location": "paracentral",
        "slip_percent": 0,
        "surgeon_mis_cases": 120,
    },
    {
        "case_id": "SYN-0000001",
        "age_years": 90,
        "sex": "male",
        "bmi": 31.25,
        "diabetes": True,
        "diagnosis": "fracture",
        "region": "thoracic",
        "levels": 2,
        "lowest_level": "T12-L1",
        "tlics_morphology": "burst",
        "sva_mm": -12.5,
        "surgeon_mis_cases": 100000,
    },
    {
        "case_id": "cohortA.17",
        "age_years": 71,
        "sex": "unknown",
        "dexa_t_score": -2.6,
        "diagnosis": "tumor",
        "region": "cervical",
        "lowest_level": "C7-T1",
        "sins_collapse": "none_gt50_involved",
        "schwab_pi_ll": "++",
        "surgeon_mis_cases": None,
    },
]


def kinds(findings: list[IdentifierFinding]) -> dict[str, str]:
    return {f.column: f.kind for f in findings}


def as_csv(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The same rows as a CSV reader delivers them: every value is text, missing is ''."""
    return [{k: "" if v is None else str(v).lower() for k, v in row.items()} for row in rows]


# ------------------------------------------------------------------------------------------
# The "done when"
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "rows", "column", "kind"),
    [
        pytest.param(
            ["case_id", "patient_name", "age_years"],
            [{"case_id": "S-1", "patient_name": "x", "age_years": 60}],
            "patient_name",
            "name",
            id="patient_name-column",
        ),
        pytest.param(
            ["case_id", "dob", "bmi"],
            [{"case_id": "S-1", "dob": "1961", "bmi": 25.0}],
            "dob",
            "date",
            id="dob-column",
        ),
        pytest.param(
            ["case_id", "contact", "bmi"],
            [{"case_id": "S-1", "contact": "j.smith@example.org", "bmi": 25.0}],
            "contact",
            "email",
            id="email-values",
        ),
        pytest.param(
            ["case_id", "notes", "bmi"],
            [{"case_id": "S-1", "notes": "call (212) 555-0147", "bmi": 25.0}],
            "notes",
            "phone",
            id="phone-values",
        ),
    ],
)
def test_a_cohort_with_identifiers_is_refused_naming_the_column(
    columns: list[str], rows: list[dict[str, object]], column: str, kind: str
) -> None:
    findings = check_deidentified(columns, rows)
    assert findings, "the guard let identifiers through"
    assert (column, kind) in {(f.column, f.kind) for f in findings}
    assert all(f.column == column for f in findings)  # nothing else in these rows is flagged


@pytest.mark.parametrize("name", [spec.name for spec in FIELDS])
def test_every_data_dictionary_field_name_passes(name: str) -> None:
    assert scan_columns([name]) == []


@pytest.mark.parametrize("name", INPUT_FIELDS)
def test_every_input_field_passes_in_other_spellings(name: str) -> None:
    camel = "".join(part.capitalize() for part in name.split("_"))
    variants = [name.upper(), camel, camel[0].lower() + camel[1:], name.replace("_", "-")]
    assert scan_columns(variants) == []


def test_all_input_fields_at_once_pass() -> None:
    assert scan_columns(INPUT_FIELDS) == []


def test_realistic_clean_rows_pass() -> None:
    columns = sorted({k for row in CLEAN_ROWS for k in row})
    assert scan_values(CLEAN_ROWS, columns) == []
    assert scan_values(as_csv(CLEAN_ROWS), columns) == []
    assert check_deidentified(columns, CLEAN_ROWS) == []


def test_allowed_suppresses_a_false_positive() -> None:
    columns = ["case_id", "site_name", "study_period"]
    rows = [{"case_id": "S-1", "site_name": "north", "study_period": "March 2020"}]
    assert kinds(check_deidentified(columns, rows)) == {"site_name": "name", "study_period": "date"}
    assert check_deidentified(columns, rows, allowed={"site_name", "study_period"}) == []
    assert scan_columns(["site_name"], allowed=["site_name"]) == []
    assert scan_values(rows, columns, allowed=("study_period",)) == []


# ------------------------------------------------------------------------------------------
# Column names
# ------------------------------------------------------------------------------------------

NAME_CASES = {
    "name": [
        "PatientName", "patient_name", "PATIENTNAME", "patientname", "name", "Name",
        "first_name", "FirstName", "surname", "last_name", "lastName", "full_name",
        "given_name", "middle_name", "maiden_name", "initials", "pt_initials", "forename",
        "surgeon_name", "mother_name", "next_of_kin", "Prénom_Name",
    ],
    "date": [
        "DOB", "dob", "date_of_birth", "DateOfBirth", "dateOfBirth", "birthdate", "birth_date",
        "birthday", "admission_date", "AdmitDate", "ADMITDATE", "discharge_date",
        "dischargeDate", "date_of_death", "death_date", "dod", "surgery_date",
        "date_of_surgery", "date", "visit_dt", "admitted_on", "birth_month", "day_of_birth",
        "timestamp", "created_datetime",
    ],
    "address": [
        "street", "street_address", "address", "Address", "home_address", "addr_line1",
        "city", "town", "county", "latitude", "lat_lon", "place_of_birth", "street_name",
    ],
    "zip": ["zip", "zipcode", "zip_code", "ZIPCode", "Zip+4", "zip4", "postcode", "postal_code"],
    "phone": [
        "phone", "Phone", "telephone", "tel", "tel_no", "fax", "fax_number", "mobile",
        "mobile_number", "cell", "home_phone", "PHONENUMBER", "contact_number",
    ],
    "email": ["email", "e_mail", "eMail", "E-Mail", "email_address", "EmailAddress", "mail"],
    "ssn": ["ssn", "SSN", "social_security", "social_security_number", "national_id", "tax_id"],
    "mrn": [
        "mrn", "MRN", "medical_record_number", "MedicalRecordNo", "nhs_number", "NHSNumber",
        "nhs_no", "hospital_number", "patient_id", "PatientID", "chart_no", "encounter_id",
        "visit_id", "chi_number",
    ],
    "account": [
        "account", "account_number", "acct_no", "plan_id", "health_plan_id", "beneficiary",
        "beneficiary_number", "member_id", "insurance_number", "policy_no", "medicare",
        "username",
    ],
    "licence": [
        "licence", "license", "licence_number", "drivers_license", "passport",
        "passport_no", "certificate_number",
    ],
    "vehicle": ["vin", "VIN", "plate", "licence_plate", "license_plate", "plate_number"],
    "device": [
        "device_id", "DeviceID", "serial", "serial_number", "SerialNo", "implant_id",
        "implant_serial", "udi", "mac_address", "imei",
    ],
    "url": ["url", "URL", "website", "homepage", "profile_url", "link"],
    "ip": ["ip", "IP", "ip_address", "IPAddress", "ipAddr", "ipv4", "IPv6", "client_ip"],
    "photo": ["photo", "face_photo", "photograph", "headshot", "photo_id", "face"],
    "biometric": ["fingerprint", "finger_print", "biometric_id", "retina_scan", "voiceprint"],
}  # fmt: skip
NAME_PARAMS = [
    pytest.param(name, kind, id=f"{kind}:{name}")
    for kind, names in NAME_CASES.items()
    for name in names
]


@pytest.mark.parametrize(("name", "kind"), NAME_PARAMS)
def test_identifier_column_names_are_flagged(name: str, kind: str) -> None:
    assert kinds(scan_columns(["case_id", name, "bmi"])) == {name: kind}


NOT_IDENTIFIERS = [
    # substrings and look-alikes: ip in slip/hip/ship, name in rule_name, date in candidate
    "slip_percent", "prior_surgery_same_level", "hip_fracture", "relationship", "ipsilateral",
    "rule_name", "rule_names", "file_name", "filename", "procedure_name", "technique_name",
    "candidate_for_fusion", "update_flag", "zipper", "diagnosis", "region", "location",
    # an anonymised study id, and the year alone, are allowed
    "case_id", "study_id", "subject_id", "record_id", "birth_year", "year_of_birth",
    "surgery_year", "age", "age_years", "age_at_surgery",
    # spine words that share a stem with an identifier
    "anterior_plate", "plate_fixation", "endplate_sclerosis", "serial_imaging",
    "cell_saver_used", "mobile_segment", "postop_dysphonia", "claudication", "facet_angle",
    "lat_flexion_deg", "image_quality", "mri_image", "photon_dose",
    # durations and counts are not dates
    "symptom_duration_months", "operative_time_min", "days_to_discharge", "visit_count",
    # categories, not numbers
    "insurance_type", "device_type", "admission_type", "discharge_disposition", "sex", "state",
    "country",
]  # fmt: skip


@pytest.mark.parametrize("name", NOT_IDENTIFIERS)
def test_ordinary_column_names_are_not_flagged(name: str) -> None:
    assert scan_columns([name]) == []


def test_scan_columns_keeps_column_order_and_plain_reasons() -> None:
    findings = scan_columns(["zip", "case_id", "email", "DOB"])
    assert [f.column for f in findings] == ["zip", "email", "DOB"]
    assert findings[0] == IdentifierFinding(
        "zip", "zip", "column name suggests a ZIP or postal code"
    )
    assert all(f.reason.startswith("column name suggests ") for f in findings)


# ------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------

VALUE_CASES = {
    "email": ["jane.doe@example.org", "J_SMITH+spine@hospital.nhs.uk", "mailto:a.b@c.io"],
    "phone": [
        "212-555-0147", "(212) 555-0147", "212.555.0147", "212 555 0147", "+1 212 555 0147",
        "+1-212-555-0147", "+12125550147", "+44 20 7946 0958", "+44 (0)20 7946 0958",
        "020 7946 0958", "07700 900123", "+49 30 901820", "tel 0161 496 0000",
    ],
    "ssn": ["078-05-1120", "078 05 1120", "SSN 078-05-1120"],
    "date": [
        "1961-03-12", "1961/03/12", "12/03/1961", "03/12/1961", "3/12/61", "12-03-1961",
        "12.03.1961", "12 Mar 1961", "12-Mar-61", "12th March 1961", "March 12, 1961",
        "Mar 12 1961", "March 1961", "03/1961", "1961-03-12T08:30:00Z",
        "2020-01-01 10:00:00", "admitted 2020-01-01",
    ],
    "url": ["https://example.org/patient/17", "http://10.0.0.1/x", "www.example.com"],
    "ip": ["192.168.0.1", "10.0.0.254", "2001:db8::1", "fe80::1%eth0", "::1"],
    "zip": ["90210-1234"],
    "device": ["00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e"],
}  # fmt: skip
VALUE_PARAMS = [
    pytest.param(value, kind, id=f"{kind}:{value}")
    for kind, values in VALUE_CASES.items()
    for value in values
]


@pytest.mark.parametrize(("value", "kind"), VALUE_PARAMS)
def test_identifier_values_are_flagged(value: str, kind: str) -> None:
    findings = scan_values([{"notes": value}], ["notes"])
    assert [(f.column, f.kind) for f in findings] == [("notes", kind)]


VALUE_FALSE_POSITIVES = [
    "27.5", "2020", "1961", "1", "0", "54", "-7.25", "100000", "-150", "3.14159265358979",
    "0.123456789", "1234567890.5", "1.2345678901234567e-05", "1e+20", "12345678901234",
    "L4-L5", "T12-L1", "C7-T1", "L5-S1", "disc_herniation", "none_gt50_involved", "gt50",
    "++", "+", "true", "yes", "no", "decompression", "may", "S-0193", "SYN-0000001",
    "cohortA.17", "ACC-003", "2019-2020", "10-20", "10:30", "12:30:45", "2.0.28", "1.10.20",
    "v1.2.3", "30/70", "1:2",
]  # fmt: skip


@pytest.mark.parametrize("value", VALUE_FALSE_POSITIVES)
def test_ordinary_values_are_not_flagged(value: str) -> None:
    assert scan_values([{"x": value}], ["x"]) == []


@pytest.mark.parametrize(
    "value", [54, 1961, 27.5, 2125550147, 19610312, -150, True, False, None, float("nan")]
)
def test_numbers_and_booleans_are_never_examined(value: object) -> None:
    assert scan_values([{"x": value}], ["x"]) == []


def test_date_objects_from_parquet_are_dates() -> None:
    rows: list[dict[str, object]] = [
        {"when": dt.date(1961, 3, 12)},
        {"when": dt.datetime(2020, 1, 1, 9, 30)},
    ]
    assert kinds(scan_values(rows, ["when"])) == {"when": "date"}
    assert scan_values([{"when": dt.time(9, 30)}], ["when"]) == []


def test_dictionary_columns_are_still_flagged_by_their_values() -> None:
    rows: list[dict[str, object]] = [
        {"case_id": "1961-03-12", "age_years": "12/03/1961", "sex": "f@example.org"},
        {"case_id": "212-555-0147", "age_years": 61, "sex": "female"},
    ]
    found = {(f.column, f.kind) for f in check_deidentified(["case_id", "age_years", "sex"], rows)}
    assert found == {
        ("case_id", "date"),
        ("case_id", "phone"),
        ("age_years", "date"),
        ("sex", "email"),
    }


def test_reason_counts_hits_among_sampled_values() -> None:
    rows = [{"contact": f"p{i}@example.org" if i < 3 else ""} for i in range(200)]
    rows += [{"contact": "none"}] * 10
    (finding,) = scan_values(rows, ["contact"])
    assert finding.reason == "3 of 13 sampled values look like email addresses"
    (single,) = scan_values([{"c": "x@example.org"}], ["c"])
    assert single.reason == "1 of 1 sampled value looks like email addresses"


def test_min_hits_sets_the_threshold() -> None:
    rows = [{"c": "x@example.org"}, {"c": "y@example.org"}, {"c": "plain"}]
    assert scan_values(rows, ["c"], min_hits=3) == []
    assert kinds(scan_values(rows, ["c"], min_hits=2)) == {"c": "email"}
    with pytest.raises(ValueError, match="min_hits"):
        scan_values(rows, ["c"], min_hits=0)


def test_only_the_named_columns_are_scanned() -> None:
    rows = [{"a": "x@example.org", "b": "1961-03-12"}]
    assert kinds(scan_values(rows, ["a"])) == {"a": "email"}


def test_one_value_counts_for_each_kind_it_holds_but_an_ssn_is_not_also_a_phone() -> None:
    rows = [{"c": "078-05-1120"}, {"c": "x@example.org, 1961-03-12"}]
    assert {f.kind for f in scan_values(rows, ["c"])} == {"ssn", "email", "date"}


def test_check_deidentified_gives_one_finding_per_column_and_kind_sorted_by_column() -> None:
    columns = ["zip", "dob", "case_id", "email"]
    rows = [{"dob": "1961-03-12", "email": "x@example.org", "zip": "90210-1234", "case_id": "S-1"}]
    findings = check_deidentified(columns, rows)
    assert [(f.column, f.kind) for f in findings] == [
        ("dob", "date"),
        ("email", "email"),
        ("zip", "zip"),
    ]
    assert findings[0].reason.startswith("column name suggests")  # the name finding is kept


def test_check_deidentified_accepts_a_one_shot_iterator() -> None:
    rows = iter([{"notes": "x@example.org"}])
    assert kinds(check_deidentified(["notes"], rows)) == {"notes": "email"}


# ------------------------------------------------------------------------------------------
# No value ever leaves the guard
# ------------------------------------------------------------------------------------------

SECRETS = {
    "notes": "Jane Q. Publicova, jane.publicova@example.org",
    "contact": "+44 20 7946 0958",
    "ssn": "078-05-1120",
    "dob": "1961-03-12",
    "home": "https://publicova.example.net/home",
    "ip": "203.0.113.77",
    "zip": "90210-1234",
    "mac": "00:1A:2B:3C:4D:5E",
    "case_id": "12 Mar 1961",
    "when": "March 12, 1961",
}


def _fragments(value: str) -> set[str]:
    """The value and every run of three or more letters or digits in it."""
    return {value} | set(re.findall(r"[A-Za-z]{3,}|\d{3,}", value))


def test_no_sampled_value_appears_in_any_finding() -> None:
    rows = [SECRETS, {**SECRETS, "case_id": "S-1"}]
    findings = check_deidentified(list(SECRETS), rows)
    assert {f.column for f in findings} == set(SECRETS)
    words_in_reasons = " ".join(f.reason for f in findings)
    for column, value in SECRETS.items():
        for fragment in _fragments(value) - set(SECRETS):
            for finding in findings:
                assert fragment not in finding.reason, (column, finding)
                assert fragment not in finding.kind, (column, finding)
                assert fragment not in repr(finding), (column, finding)
    assert "sampled values look like" in words_in_reasons


# ------------------------------------------------------------------------------------------
# Property: numbers, booleans and enum values never look like identifiers
# ------------------------------------------------------------------------------------------

ENUM_VALUES = sorted(
    {str(v) for spec in FIELDS for v in spec.values} | set(SEGMENTS) | {"true", "false"}
)
SCALARS = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(ENUM_VALUES),
    st.none(),
)
TEXT_FORMS = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda x: f"{x:.2f}"),
    st.sampled_from(ENUM_VALUES).map(str.upper),
    st.builds(
        lambda prefix, sep, n, width: f"{prefix}{sep}{n:0{width}d}",
        st.sampled_from(["S", "SYN", "P", "case", "cohortA", "MS"]),
        st.sampled_from(["-", "_", ".", ""]),
        st.integers(min_value=0, max_value=9_999_999),
        st.integers(min_value=1, max_value=7),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(INPUT_FIELDS), st.one_of(SCALARS, TEXT_FORMS))))
def test_numbers_booleans_enums_and_study_ids_never_trigger_value_findings(
    rows: list[dict[str, object]],
) -> None:
    assert scan_values(rows, INPUT_FIELDS) == []
