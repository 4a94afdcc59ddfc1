"""CDS Hooks service (issue 19 items 4-5): contract tests through FastAPI's TestClient.

Discovery shape, each status code, no JSON null or empty value in any response, the CDS Hooks
response invariants (cards: uuid, summary < 140 characters, indicator enum, source.label; the
FHIR tooling invariants cds-resp-1..7), feedback, the round trip against `screen --fhir`,
property tests of malformed requests, and the identifier test.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.dictionary import SETTING_FIELDS
from engine.screener import Screener
from engine.service.app import ServiceConfig, create_app
from engine.service.auth import sandbox_jwks
from engine.service.cards import INDICATOR, SUMMARY_LIMIT, indicator_of
from engine.service.cds import INLINE_BODY, PREFETCH, REQUIRED_PREFETCH, SERVICES
from tests.cds_requests import request_of, searchset
from tests.conftest import RULESET

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "cases" / "sites" / "teaching-hospital.yaml"
BUNDLES = sorted((ROOT / "cases" / "fhir").glob("*.json"))
DISC = ROOT / "cases" / "fhir" / "disc-herniation-l4-l5.json"
URL = "/cds-services/miss-screen"
VERDICT_IN_SUMMARY = re.compile(r"\(([a-z_]+)\)")


def screener() -> Screener:
    return Screener.from_ruleset(RULESET, site=str(SITE))


def client(**config: Any) -> TestClient:
    return TestClient(create_app(ServiceConfig(screener=screener(), **config)))


@pytest.fixture(scope="module")
def dev() -> TestClient:
    return client(dev=True, cors_origins=("https://sandbox.cds-hooks.org",))


def disc_request(**changes: Any) -> dict[str, Any]:
    request = request_of(json.loads(DISC.read_text()))
    request.update(changes)
    return request


def walk(value: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from walk(item, f"{path}[{number}]")


def assert_no_null_or_empty(body: Any) -> None:
    """No JSON null, empty string, list or object anywhere, but `cards` (always present)."""
    for path, value in walk(body):
        if path == "$.cards":
            continue
        assert value is not None, path
        assert value not in ("", [], {}), path


def assert_card_invariants(card: dict[str, Any]) -> None:
    """CDS Hooks 2.0 Card, and the FHIR tooling invariants cds-resp-1..7 of CDSHooksResponse."""
    assert uuid.UUID(card["uuid"])  # uuid: for feedback
    assert isinstance(card["summary"], str)
    assert 0 < len(card["summary"]) < SUMMARY_LIMIT
    assert card["indicator"] in ("info", "warning", "critical")  # required, enum
    assert isinstance(card["source"]["label"], str)
    assert card["source"]["label"]
    if "url" in card["source"]:
        assert card["source"]["url"].startswith(("http://", "https://"))  # absolute
    suggestions = card.get("suggestions", [])
    # cds-resp-6: suggestions need a selectionBehavior, which is at-most-one or any
    assert not suggestions or card.get("selectionBehavior") in ("at-most-one", "any")
    # cds-resp-1: at-most-one allows at most one recommended suggestion
    if card.get("selectionBehavior") == "at-most-one":
        assert sum(bool(s.get("isRecommended")) for s in suggestions) <= 1
    for suggestion in suggestions:
        assert suggestion["label"]
        for action in suggestion.get("actions", []):
            assert action["description"]  # cds-resp-5
            assert action["type"] in ("create", "update", "delete")
            if action["type"] == "delete":  # cds-resp-2
                assert "resourceId" in action
                assert "resource" not in action
        # cds-resp-7
        assert suggestion.get("actionSelectionBehavior", "all") in ("all", "any", "at-most-one")
    for reason in card.get("overrideReasons", []):
        assert reason["display"]
        assert reason["code"]
    for link in card.get("links", []):
        assert link["label"]
        assert link["url"]
        assert link["type"] in ("absolute", "smart")
        assert link["type"] == "smart" or "appContext" not in link  # cds-resp-3


def assert_operation_outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"]
    assert all(i["severity"] and i["code"] for i in body["issue"])
    assert_no_null_or_empty(body)
    assert "Traceback" not in response.text
    return body


def card_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert_no_null_or_empty(body)
    (card,) = body["cards"]
    assert_card_invariants(card)
    return card


# --- discovery -----------------------------------------------------------------------------


def test_discovery_lists_one_service_per_hook_with_prefetch_and_ruleset(dev: TestClient) -> None:
    response = dev.get("/cds-services")
    assert response.status_code == 200
    body = response.json()
    assert_no_null_or_empty(body)
    services = {s["id"]: s for s in body["services"]}
    assert {s: services[s]["hook"] for s in services} == {
        "miss-screen": "order-select",
        "miss-screen-order-sign": "order-sign",
    }
    stamp = RULESET.stamp
    for service in services.values():
        assert service["description"]
        assert service["title"]
        assert service["prefetch"] == PREFETCH
        assert set(REQUIRED_PREFETCH) <= set(service["prefetch"])
        for template in service["prefetch"].values():
            assert "{{context.patientId}}" in template
        ext = service["extension"]["org.example.miss-screen"]
        assert ext["ruleset"] == {
            "name": stamp.name,
            "version": stamp.version,
            "sha256": stamp.sha256,
        }
        assert ext["devMode"] is True
        assert "DEV MODE" in service["description"]
    codes = " ".join(services["miss-screen"]["prefetch"].values())
    for loinc in ("39156-5", "72166-2", "82810-3", "38267-1"):  # BMI, smoking, pregnancy, DXA
        assert loinc in codes


def test_discovery_says_nothing_of_dev_mode_when_not_in_it(tmp_path: Path) -> None:
    body = (
        client(trusted_issuers={"https://ehr.example.org": sandbox_jwks()})
        .get("/cds-services")
        .json()
    )
    for service in body["services"]:
        assert "DEV" not in service["description"]
        assert service["extension"]["org.example.miss-screen"]["devMode"] is False


def test_the_interactive_api_pages_are_served_in_dev_mode_only(dev: TestClient) -> None:
    """/docs and /redoc run scripts from a CDN on the service's origin: a developer's aid. The
    OpenAPI JSON stays, in either mode (it runs nothing)."""
    production = client(trusted_issuers={"https://ehr.example.org": sandbox_jwks()})
    for path in ("/docs", "/redoc"):
        assert production.get(path).status_code == 404
        assert dev.get(path).status_code == 200
    assert production.get("/openapi.json").json()["info"]["title"] == "miss-screen"


# --- the card ------------------------------------------------------------------------------


@pytest.mark.parametrize("service_id", sorted(SERVICES))
def test_a_spine_order_gets_one_card_on_either_service(dev: TestClient, service_id: str) -> None:
    hook = SERVICES[service_id]
    request = request_of(json.loads(DISC.read_text()), hook=hook)
    card = card_of(dev.post(f"/cds-services/{service_id}", json=request))
    result = screener().screen(_mapped_case(request))
    assert f"({result.verdict.value})" in card["summary"]
    assert card["indicator"] == indicator_of(result)
    assert card["source"]["label"] == f"{RULESET.stamp.name} {RULESET.stamp.version}"
    assert "never an order to operate" in card["detail"]
    assert card["summary"].startswith("DEV ")
    assert "DEV MODE" in card["detail"]


def _mapped_case(request: dict[str, Any]) -> dict[str, Any]:
    """The case the service screens, mapped here the same way (for expected values)."""
    import datetime as dt

    from engine.fhir import fhir_to_case

    prefetch = request["prefetch"]
    resources: list[Any] = [prefetch["patient"]] if prefetch.get("patient") else []
    for key, value in prefetch.items():
        if key != "patient" and value:
            resources += [e["resource"] for e in value["entry"]]
    resources += [e["resource"] for e in request["context"]["draftOrders"]["entry"]]
    return dict(
        fhir_to_case(resources, dt.date.today(), hook_instance=request["hookInstance"]).case
    )


def test_detail_orders_red_flags_then_findings_with_evidence_then_ranked_questions(
    dev: TestClient,
) -> None:
    request = disc_request()
    card = card_of(dev.post(URL, json=request))
    result = screener().screen(_mapped_case(request))
    detail = card["detail"]
    assert result.next_questions
    assert result.findings
    red = detail.index("**Red flags not yet excluded**")
    findings = detail.index("**Findings**")
    questions = detail.index("**Questions that decide the verdict**")
    disclaimer = detail.index("never an order to operate")
    assert red < findings < questions < disclaimer
    for finding in result.findings:  # each with its CEBM label as the text report shows it
        assert f"`{finding.rule_id}`" in detail
    assert re.search(r"\\\[(RCT|cohort study|case series) · level \d\\\]", detail)
    assert "source: " in detail
    ranked = [detail.index(f"`{name}`", questions) for name in result.deciding_questions]
    assert ranked == sorted(ranked)  # ranked as deciding_questions ranks them
    assert "Author notes" not in detail


@pytest.mark.parametrize(
    ("verdict_bundle", "indicator"),
    [
        ("cauda-equina-l5-s1.json", "critical"),
        ("high-grade-spondylolisthesis-l5-s1.json", "warning"),
    ],
)
def test_indicator_follows_the_verdict(
    dev: TestClient, verdict_bundle: str, indicator: str
) -> None:
    request = request_of(json.loads((ROOT / "cases" / "fhir" / verdict_bundle).read_text()))
    card = card_of(dev.post(URL, json=request))
    assert card["indicator"] == indicator


def test_an_open_red_flag_is_never_an_info_card(dev: TestClient) -> None:
    """insufficient_data with urgent_review still possible: a warning that says a red flag is
    not yet excluded, never a quiet info card."""
    request = disc_request()
    card = card_of(dev.post(URL, json=request))
    result = screener().screen(_mapped_case(request))
    assert result.verdict.value == "insufficient_data"
    assert "urgent_review" in [v.value for v in result.possible_verdicts]
    assert INDICATOR[result.verdict] == "info"  # what the verdict alone would give
    assert card["indicator"] == "warning"
    assert "red flag is not yet excluded" in card["summary"]


def test_no_spine_order_gives_no_cards(dev: TestClient) -> None:
    request = disc_request()
    request["context"]["draftOrders"] = searchset(
        [
            {
                "resourceType": "ServiceRequest",
                "status": "draft",
                "intent": "order",
                "id": "lab",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            }
        ]
    )
    request["context"]["selections"] = ["ServiceRequest/lab"]
    response = dev.post(URL, json=request)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


SNOMED = "http://snomed.info/sct"
LOCAL = "http://miss-screen.example.org/fhir/CodeSystem/spine"


def coded_request(*codings: tuple[str, str], hook: str = "order-select") -> dict[str, Any]:
    """The disc herniation request with its draft order coded only as given: no local code in
    `code` or `bodySite` (the lumbar spine as SNOMED CT), as a real EHR's order would come."""
    request = request_of(json.loads(DISC.read_text()), hook=hook)
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["code"] = {"coding": [{"system": s, "code": c} for s, c in codings]}
    draft["bodySite"] = [{"coding": [{"system": SNOMED, "code": "122496007"}]}]
    return request


def _questions(card: dict[str, Any]) -> str:
    return card["detail"].split("**Questions that decide the verdict**", 1)[-1]


@pytest.mark.parametrize("service_id", sorted(SERVICES))
def test_a_draft_order_coded_only_in_snomed_gets_the_card_of_its_procedure(
    dev: TestClient, service_id: str
) -> None:
    hook = SERVICES[service_id]
    snomed = coded_request((SNOMED, "3418002"), hook=hook)  # Discectomy of spine
    assert _mapped_case(snomed)["planned_procedure"] == "discectomy"
    card = card_of(dev.post(f"/cds-services/{service_id}", json=snomed))
    local = card_of(
        dev.post(
            f"/cds-services/{service_id}",
            json=coded_request((LOCAL, "procedure-discectomy"), hook=hook),
        )
    )
    assert (card["summary"], card["indicator"], card["detail"]) == (
        local["summary"],
        local["indicator"],
        local["detail"],
    )
    assert "`planned_procedure`" not in _questions(card)  # known, so never asked
    result = screener().screen(_mapped_case(snomed))
    assert f"({result.verdict.value})" in card["summary"]


def test_a_generic_snomed_spine_code_gets_a_card_asking_for_the_procedure(dev: TestClient) -> None:
    request = coded_request((SNOMED, "392236004"))  # Operative procedure on spinal structure
    assert "planned_procedure" not in _mapped_case(request)
    card = card_of(dev.post(URL, json=request))
    assert "Planned procedure" in _questions(card)  # asked by its label


@pytest.mark.parametrize(
    "coding",
    [
        (SNOMED, "609588000"),  # Total knee replacement
        (SNOMED, "118442004"),  # Drainage of abscess (no site)
        ("http://www.ama-assn.org/go/cpt", "63030"),  # CPT is not mapped
    ],
)
def test_a_non_spine_snomed_order_gets_no_cards(dev: TestClient, coding: tuple[str, str]) -> None:
    response = dev.post(URL, json=coded_request(coding))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_order_select_screens_only_the_selected_orders(dev: TestClient) -> None:
    request = disc_request()
    request["context"]["selections"] = ["ServiceRequest/not-there"]
    assert dev.post(URL, json=request).json() == {"cards": []}


def test_missing_data_is_a_card_not_an_error(dev: TestClient) -> None:
    request = disc_request()
    for key in request["prefetch"]:
        if key != "patient":
            request["prefetch"][key] = None  # the EHR found nothing
    request["prefetch"]["patient"] = None
    card = card_of(dev.post(URL, json=request))
    assert "(insufficient_data)" in card["summary"]
    optional = disc_request()
    del optional["prefetch"]["bmi"]  # not sent: named on the card, left unknown
    card = card_of(dev.post(URL, json=optional))
    assert "Not sent by the EHR (left unknown): bmi" in card["detail"]


def test_site_fields_come_from_the_site_profile_never_from_the_ehr(dev: TestClient) -> None:
    assert "surgeon_mis_cases" in SETTING_FIELDS
    request = disc_request()
    card = card_of(dev.post(URL, json=request))
    assert "Surgeon's MIS cases of this type: 50 (from the site profile)" in card["detail"]


def test_a_contradictory_record_is_a_warning_card(dev: TestClient) -> None:
    request = disc_request()  # a man, pregnant: the constraints refuse the case
    request["prefetch"]["pregnancy"] = searchset(
        [
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "82810-3"}]},
                "valueCodeableConcept": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "77386006"}]
                },
            }
        ]
    )
    card = card_of(dev.post(URL, json=request))
    assert "contradicts" in card["summary"]
    assert card["indicator"] == "warning"
    assert "`pregnant`" in card["detail"]
    assert "never an order to operate" in card["detail"]


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"null",
        b'"text"',
        b"[" * 100_000,
        b'{"hook": NaN, "hookInstance": Infinity, "context": {}}',
        json.dumps({"hook": "order-select"}).encode(),
        json.dumps({"hook": "patient-view", "hookInstance": "x", "context": {}}).encode(),
        json.dumps({"hook": "order-select", "hookInstance": "x", "context": {}}).encode(),
        json.dumps(
            {"hook": "order-select", "hookInstance": "x", "context": {"draftOrders": []}}
        ).encode(),
    ],
    ids=[
        "truncated",
        "array",
        "null",
        "string",
        "deep",
        "not-json-nan",
        "no-context",
        "other-hook",
        "no-draft-orders",
        "orders-not-a-bundle",
    ],
)
def test_malformed_requests_get_400_operation_outcome(dev: TestClient, body: bytes) -> None:
    assert_operation_outcome(dev.post(URL, content=body), 400)


def test_a_prefetch_of_the_wrong_type_or_patient_is_400(dev: TestClient) -> None:
    request = disc_request()
    request["prefetch"]["patient"] = {"resourceType": "Observation"}
    assert_operation_outcome(dev.post(URL, json=request), 400)
    request = disc_request()
    request["prefetch"]["patient"]["id"] = "someone-else"
    body = assert_operation_outcome(dev.post(URL, json=request), 400)
    assert "someone-else" not in json.dumps(body)
    request = disc_request()
    request["prefetch"]["conditions"]["entry"][0]["resource"]["subject"] = {
        "reference": "Patient/someone-else"
    }
    assert_operation_outcome(dev.post(URL, json=request), 400)


@pytest.mark.parametrize("key", REQUIRED_PREFETCH)
def test_required_prefetch_not_sent_is_412(dev: TestClient, key: str) -> None:
    request = disc_request(fhirServer="https://ehr.example.org/fhir")
    del request["prefetch"][key]
    body = assert_operation_outcome(dev.post(URL, json=request), 412)
    assert key in body["issue"][0]["diagnostics"]


def test_a_large_record_is_screened_like_a_small_one(dev: TestClient) -> None:
    """Over INLINE_BODY the call runs in a thread (off the event loop): the same card."""
    small = disc_request(hookInstance="d0c5a1e2-0000-4000-8000-000000000001")
    large = copy.deepcopy(small)
    filler = {"resource": {"resourceType": "Basic", "code": {"text": "x" * 1000}}}
    large["prefetch"]["conditions"]["entry"] += [filler] * 400
    assert len(json.dumps(large)) > INLINE_BODY
    cards = [card_of(dev.post(URL, json=r)) for r in (small, large)]
    assert cards[0]["summary"] == cards[1]["summary"]
    assert cards[0]["indicator"] == cards[1]["indicator"]


def test_validation_errors_name_fields_never_values(dev: TestClient) -> None:
    body = assert_operation_outcome(
        dev.post(URL, json={"hook": ["Jane Doe"], "hookInstance": "x", "context": {}}), 400
    )
    assert "Jane" not in json.dumps(body)
    assert "hook" in body["issue"][0]["diagnostics"]


def test_unknown_paths_and_methods_are_operation_outcomes(dev: TestClient) -> None:
    assert_operation_outcome(dev.get(URL), 405)
    assert_operation_outcome(dev.post("/cds-services/other", json={}), 404)
    assert_operation_outcome(dev.get("/rules/NOPE-999"), 404)


def test_too_large_a_body_is_413(dev: TestClient) -> None:
    assert_operation_outcome(dev.post(URL, content=b" " * (5 * 2**20 + 1)), 413)


def test_an_internal_error_is_a_500_outcome_without_traceback_or_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.service import cds

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Jane Doe MRN 12345678")

    monkeypatch.setattr(cds, "fhir_to_case", broken)
    test_client = TestClient(
        create_app(ServiceConfig(screener=screener(), dev=True)), raise_server_exceptions=False
    )
    body = assert_operation_outcome(test_client.post(URL, json=disc_request()), 500)
    assert "Jane" not in json.dumps(body)
    assert "RuntimeError" in caplog.text
    assert "Jane" not in caplog.text
    assert "12345678" not in caplog.text


# --- feedback ------------------------------------------------------------------------------


def test_feedback_is_recorded_without_identifiers(tmp_path: Path) -> None:
    log = tmp_path / "feedback.jsonl"
    app = create_app(ServiceConfig(screener=screener(), dev=True, feedback_log=log))
    test_client = TestClient(app)
    card = card_of(test_client.post(URL, json=disc_request()))
    other = card_of(test_client.post(URL, json=disc_request()))
    entries = [
        {
            "card": card["uuid"],
            "outcome": "overridden",
            "overrideReason": {
                "reason": {
                    "system": card["overrideReasons"][0]["system"],
                    "code": card["overrideReasons"][0]["code"],
                },
                "userComment": "Spoke to Jane Doe on 2024-03-01",
            },
            "outcomeTimestamp": "2024-03-01T10:00:00Z",
        },
        {
            "card": other["uuid"],
            "outcome": "accepted",
            "overrideReason": {"reason": {"code": "Jane Doe"}},
        },
    ]
    response = test_client.post(f"{URL}/feedback", json={"feedback": entries})
    assert response.status_code == 200
    assert response.json() == {"recorded": 2}
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert list(app.state.cds.feedback.records) == records
    assert (
        records[0]
        == {
            "service": "miss-screen",
            "card": card["uuid"],
            "outcome": "overridden",
            "reason": card["overrideReasons"][0]["code"],
            "verdict": VERDICT_IN_SUMMARY.search(card["summary"])[1],  # type: ignore[index]
            "ruleset": f"{RULESET.stamp.name} {RULESET.stamp.version} {RULESET.stamp.sha256[:12]}",
        }
    )
    assert records[1]["reason"] == "other"
    text = log.read_text()
    assert "Jane" not in text
    assert "2024" not in text


@pytest.mark.hostile
@pytest.mark.timeout(120)
def test_feedback_is_taken_once_and_only_for_cards_this_service_issued(tmp_path: Path) -> None:
    """Any made-up uuid used to be logged: the feedback log grew without bound (issue 26)."""
    log = tmp_path / "feedback.jsonl"
    app = create_app(ServiceConfig(screener=screener(), dev=True, feedback_log=log))
    test_client = TestClient(app)
    card = card_of(test_client.post(URL, json=disc_request()))

    def feedback(card_uuid: str, url: str = URL) -> Any:
        entry = {"card": card_uuid, "outcome": "accepted"}
        return test_client.post(f"{url}/feedback", json={"feedback": [entry]})

    for _ in range(1000):  # made-up cards: refused, nothing written, nothing kept
        assert_operation_outcome(feedback(str(uuid.uuid4())), 404)
    assert not log.exists()
    assert not app.state.cds.feedback.records
    # a card of the other service, and one mixed with an unknown card in one post: refused whole
    assert_operation_outcome(feedback(card["uuid"], "/cds-services/miss-screen-order-sign"), 404)
    mixed = [
        {"card": card["uuid"], "outcome": "accepted"},
        {"card": str(uuid.uuid4()), "outcome": "accepted"},
    ]
    body = assert_operation_outcome(
        test_client.post(f"{URL}/feedback", json={"feedback": mixed}), 404
    )
    assert body["issue"][0]["diagnostics"].startswith("feedback[1]: ")
    assert feedback(card["uuid"].upper()).json() == {"recorded": 1}  # the uuid in any case
    for _ in range(100):  # once only
        assert_operation_outcome(feedback(card["uuid"]), 409)
    assert len(log.read_text().splitlines()) == 1


@pytest.mark.hostile
@pytest.mark.timeout(60)
def test_feedback_cards_are_remembered_for_a_day_and_ten_thousand_at_most() -> None:
    from engine.service.cds import CARD_TTL, MAX_CARDS, CdsError, FeedbackStore

    now = [0.0]
    store = FeedbackStore(clock=lambda: now[0])
    for number in range(MAX_CARDS + 1):
        store.card_issued(f"card-{number}", "miss-screen", "rules 1")
    assert len(store.issued) == MAX_CARDS
    assert "card-0" not in store.issued  # the oldest forgotten first
    with pytest.raises(CdsError) as refused:
        store.add([{"service": "miss-screen", "card": "card-0", "outcome": "accepted"}])
    assert refused.value.status == 404
    now[0] = CARD_TTL + 1
    with pytest.raises(CdsError) as expired:
        store.add([{"service": "miss-screen", "card": "card-1", "outcome": "accepted"}])
    assert expired.value.status == 404
    store.card_issued("fresh", "miss-screen", "rules 1")
    assert list(store.issued) == ["fresh"]  # the expired ones are let go
    store.add([{"service": "miss-screen", "card": "fresh", "outcome": "accepted"}])
    assert list(store.records) == [
        {"service": "miss-screen", "card": "fresh", "outcome": "accepted", "ruleset": "rules 1"}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"feedback": [{"card": "not-a-uuid", "outcome": "accepted"}]},
        {"feedback": [{"card": str(uuid.uuid4()), "outcome": "maybe"}]},
        {"feedback": "x"},
    ],
)
def test_bad_feedback_is_400(dev: TestClient, body: dict[str, Any]) -> None:
    assert_operation_outcome(dev.post(f"{URL}/feedback", json=body), 400)


# --- CORS ----------------------------------------------------------------------------------


def test_cors_preflight_allows_the_listed_origin_post_and_authorization(dev: TestClient) -> None:
    headers = {
        "Origin": "https://sandbox.cds-hooks.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    response = dev.options(URL, headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    other = dev.options(URL, headers={**headers, "Origin": "https://evil.example"})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    simple = dev.get("/cds-services", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_is_limited_to_the_cds_hooks_paths(dev: TestClient) -> None:
    response = dev.get("/rules/", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


# --- rule docs -----------------------------------------------------------------------------


def test_the_cards_source_link_serves_the_rule_docs(dev: TestClient) -> None:
    card = card_of(dev.post(URL, json=disc_request()))
    path = card["source"]["url"].removeprefix("http://testserver")
    index = dev.get(path)
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    first = re.search(r'href="([A-Z]{3}-\d{3}[^"]*\.md)"', index.text)
    assert first, "the index links the rule pages"
    page = dev.get(path + first[1])
    assert page.status_code == 200
    assert "<h1>" in page.text
    noted = next(r for r in RULESET.rules if r.meta.notes)
    assert "Author notes" not in dev.get(f"/rules/{noted.id}").text
    assert "default-src 'none'" in page.headers["content-security-policy"]


# --- round trip: the card's verdict is `screen --fhir`'s -------------------------------------


@pytest.mark.timeout(300)
def test_card_verdict_equals_screen_fhir_for_every_bundle(dev: TestClient) -> None:
    assert len(BUNDLES) >= 10
    for bundle in BUNDLES:
        cli = subprocess.run(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "screen",
                "--fhir",
                str(bundle),
                "--site",
                str(SITE),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        expected = json.loads(cli.stdout)["verdict"]
        card = card_of(dev.post(URL, json=request_of(json.loads(bundle.read_text()))))
        found = VERDICT_IN_SUMMARY.search(card["summary"])
        assert found, card["summary"]
        assert found[1] == expected, bundle.name


# --- property tests: malformed requests never give a 500 ------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for number, item in enumerate(value):
            found += _paths(item, (*path, number))
    return found


BASE = request_of(json.loads(DISC.read_text()), hook_instance=str(uuid.UUID(int=1)))
BASE_PATHS = _paths(BASE)[1:]


def _check_never_500(response: Any) -> None:
    assert response.status_code != 500, response.text
    assert "Traceback" not in response.text
    if response.status_code == 200:
        body = response.json()
        assert_no_null_or_empty(body)
        for card in body["cards"]:
            assert_card_invariants(card)
    else:
        assert 400 <= response.status_code < 500
        assert response.json()["resourceType"] == "OperationOutcome"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(BASE_PATHS), value=JSON)
def test_a_request_with_any_part_replaced_never_gives_a_500(
    dev: TestClient, path: tuple[Any, ...], value: Any
) -> None:
    request = copy.deepcopy(BASE)
    target: Any = request
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    _check_never_500(dev.post(URL, json=request))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON)
def test_any_json_body_never_gives_a_500(dev: TestClient, body: Any) -> None:
    _check_never_500(dev.post(URL, json=body))
    _check_never_500(dev.post(f"{URL}/feedback", json=body))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.lists(JSON, max_size=4))
def test_any_bundle_entries_never_give_a_500(dev: TestClient, entries: list[Any]) -> None:
    request = copy.deepcopy(BASE)
    request["prefetch"]["conditions"] = {"resourceType": "Bundle", "entry": entries}
    request["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "entry": [*BASE["context"]["draftOrders"]["entry"], *({"resource": e} for e in entries)],
    }
    _check_never_500(dev.post(URL, json=request))


# --- identifiers never come out ------------------------------------------------------------

IDENTIFIERS = (
    "Margaret",
    "Thistlewood",
    "MRN-99887766",
    "99887766",
    "1961-04-23",
    "2024-11-05",
    "17 Larkspur Lane",
    "Springfield",
    "+1-555-867-5309",
    "555-867-5309",
    "margaret.thistlewood@example.org",
    "Dr Okonkwo",
    "987-65-4321",
)


def identifying_request() -> dict[str, Any]:
    """The disc-herniation request with names, MRNs, dates, addresses and phones everywhere."""
    request = disc_request(hookInstance=str(uuid.uuid4()))
    patient = request["prefetch"]["patient"]
    patient.update(
        {
            "name": [{"family": "Thistlewood", "given": ["Margaret"]}],
            "identifier": [
                {"system": "urn:mrn", "value": "MRN-99887766"},
                {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "987-65-4321"},
            ],
            "birthDate": "1961-04-23",
            "address": [{"line": ["17 Larkspur Lane"], "city": "Springfield"}],
            "telecom": [
                {"system": "phone", "value": "+1-555-867-5309"},
                {"system": "email", "value": "margaret.thistlewood@example.org"},
            ],
        }
    )
    note = [{"text": "Margaret Thistlewood, MRN-99887766, call 555-867-5309"}]
    for key, value in request["prefetch"].items():
        if key != "patient" and value:
            for entry in value["entry"]:
                entry["resource"]["note"] = note
                entry["resource"]["recordedDate"] = "2024-11-05"
                entry["resource"]["id"] = "MRN-99887766"
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"].update(
            {"note": note, "authoredOn": "2024-11-05", "requester": {"display": "Dr Okonkwo"}}
        )
    request["context"]["userId"] = "Practitioner/Dr Okonkwo"
    return request


def test_no_identifier_in_any_response_or_the_feedback_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "feedback.jsonl"
    test_client = TestClient(
        create_app(ServiceConfig(screener=screener(), dev=True, feedback_log=log))
    )
    request = identifying_request()
    bodies = [test_client.get("/cds-services").text]
    response = test_client.post(URL, json=request)
    card = card_of(response)
    bodies.append(response.text)
    broken = copy.deepcopy(request)  # errors must not echo either
    broken["prefetch"]["patient"]["id"] = "MRN-99887766"
    bodies.append(test_client.post(URL, json=broken).text)
    bodies.append(test_client.post(URL, json={**request, "hook": "Margaret Thistlewood"}).text)
    bodies.append(test_client.post(URL, content=json.dumps(request)[:-7]).text)
    bodies.append(
        test_client.post(
            f"{URL}/feedback",
            json={
                "feedback": [
                    {
                        "card": card["uuid"],
                        "outcome": "overridden",
                        "outcomeTimestamp": "2024-11-05T10:00:00Z",
                        "overrideReason": {
                            "userComment": "Margaret 555-867-5309",
                            "reason": {"code": "MRN-99887766"},
                        },
                    }
                ]
            },
        ).text
    )
    bodies.append(
        test_client.post(f"{URL}/feedback", json={"feedback": [{"card": "Margaret"}]}).text
    )
    written = "\n".join([*bodies, log.read_text(), caplog.text])
    for identifier in IDENTIFIERS:
        assert identifier not in written, identifier


# --- why a question is asked (issue 28 item 5) ---------------------------------------------


def test_the_card_says_why_each_open_question_is_asked(dev: TestClient) -> None:
    """The card explains an open question with the rule file's `asks_because`, as the form
    does; without reasons (a result alone) a caution falls back to its message."""
    from engine.models import SEVERITY_ORDER
    from engine.report.markdown import md, result_markdown

    result = screener().screen(
        {"case_id": "c", "age_years": 45, "diagnosis": "disc_herniation"}, source="test"
    )
    first = result.deciding_questions[0]
    worst = min(
        (n for n in result.not_evaluable if first in n.missing and n.can_change_verdict),
        key=lambda n: SEVERITY_ORDER[n.severity],
    )
    because = RULESET.by_id[worst.rule_id].meta.asks_because
    assert because
    detail = " ".join(result_markdown(result, reasons=RULESET.asked_because).split())
    assert md(because) in detail
    for caution in result.open_cautions:
        assert md(RULESET.asked_because[caution.rule_id]) in detail
    bare = " ".join(result_markdown(result).split())
    assert md(because) not in bare
    assert all(md(c.message) in bare for c in result.open_cautions)
    # the service passes its rule set's reasons
    said = " ".join(card_of(dev.post(URL, json=disc_request()))["detail"].split())
    assert any(md(r.meta.asks_because) in said for r in RULESET.rules if r.meta.asks_because)
